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
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_pretrained import (  # noqa: E402 - the same task data and protocol
    TRAIN_FRAMES,
    VALIDATION_FRAMES,
    curve,
    find_shot,
    make_task_data,
)


def run(task: str, size: str, steps: int, every: int, work: Path) -> dict:
    import ccat_tf
    from ccat_tf import runs

    inp, gt, out_ch = make_task_data(task, find_shot(), work / f"data_{task}")
    dd = work / f"{task}_{size}"
    t = time.time()
    ccat_tf.train(
        input=inp,
        ground_truth=gt,
        frames=TRAIN_FRAMES,
        validation_frames=VALIDATION_FRAMES,
        input_channels="rgb",
        output_channels=out_ch,
        data_directory=str(dd),
        model_size=size,
        epochs=steps * 4 // 8,
        batch_size=4,
        crop_size=64,
        checkpoint_interval=every,
        contact_sheet_interval=10**6,
        use_multi_resolution_training=False,
        seed=0,
        progress_bar=False,
    )
    points = curve(dd)
    table = runs.load_runs(dd)[-1]
    best = max(p for _, p in points)
    final = points[-1][1]
    return {
        "task": task,
        "model_size": size,
        "steps": steps,
        "seconds": round(time.time() - t, 1),
        "best_psnr": best,
        "best_step": max(points, key=lambda sp: sp[1])[0],
        "final_psnr": final,
        "gap_db": best - final,
        "rollbacks": table.get("rollbacks", []),
        "curve": points,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["small", "medium"])
    parser.add_argument("--task", default="human_matting")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--output", default=str(HERE / "results" / "convergence.json"))
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-convergence-") as tmp:
        for size in args.sizes:
            results.append(run(args.task, size, args.steps, args.every, Path(tmp)))
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
