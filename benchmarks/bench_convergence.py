"""Long trainings that must hold: final vs best validation PSNR over many steps (issue 12).

Before issue 12, small networks trained on the matting task (rgb -> alpha, the synthetic-figure
data set of ``bench_pretrained.py`` composited over the bikes footage) with a constant learning
rate of 1e-3 collapsed to a constant output after 2400-2900 steps. This trains that task from
scratch (``initial_weights: none``) for ``--steps`` steps per model size with every setting at
its default but the ones ``bench_pretrained.py`` fixes (8 pairs, batch 4, crop 64, one
resolution, validation on 3 held-out frames every ``--every`` steps), and reports the best and
the final validation PSNR, their gap (goal: at most 0.5 dB), and the rollbacks the divergence
guard made (from the run table).

Usage: python benchmarks/bench_convergence.py [--sizes small medium] [--steps 3000]
       [--every 250] [--task human_matting] [--output benchmarks/results/convergence.json]
       [--set colour_branch=false ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_pretrained import curve, find_shot, make_task_data, run_one  # noqa: E402


def run(task: str, size: str, steps: int, every: int, work: Path, extra: dict) -> dict:
    """``bench_pretrained``'s from-scratch run (same data, crops and settings) and its summary."""
    from ccat_tf import runs

    data = make_task_data(task, find_shot(), work / f"data_{task}")
    trained = run_one(task, size, "none", data, steps, every, work, extra=extra)
    dd = work / f"{task}_{size}_none"  # run_one's Data Directory
    points = curve(dd)
    best_step, best = max(points, key=lambda sp: sp[1])
    return {
        "task": task,
        "model_size": size,
        "steps": steps,
        "seconds": trained["seconds"],
        "best_psnr": best,
        "best_step": best_step,
        "final_psnr": points[-1][1],
        "gap_db": best - points[-1][1],
        "rollbacks": runs.load_runs(dd)[-1].get("rollbacks", []),
        "settings": extra,
        "curve": points,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["small", "medium"])
    parser.add_argument("--task", default="human_matting")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--output", default=str(HERE / "results" / "convergence.json"))
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a training setting (repeatable), to measure a candidate default",
    )
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.set)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-convergence-") as tmp:
        for size in args.sizes:
            results.append(run(args.task, size, args.steps, args.every, Path(tmp), extra))
            r = results[-1]
            print(json.dumps({k: v for k, v in r.items() if k != "curve"}), flush=True)
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            Path(args.output).write_text(json.dumps(results, indent=2))
    print("\n| task | size | steps | best val PSNR (step) | final | gap dB | rollbacks | s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(
            f"| {r['task']} | {r['model_size']} | {r['steps']} | {r['best_psnr']:.2f} "
            f"({r['best_step']}) | {r['final_psnr']:.2f} | {r['gap_db']:.2f} | "
            f"{len(r['rollbacks'])} | {r['seconds']} |"
        )
    print("\nCurves (step: PSNR dB):")
    for r in results:
        print(f"- {r['model_size']}: " + ", ".join(f"{s}: {p:.2f}" for s, p in r["curve"]))


if __name__ == "__main__":
    main()
