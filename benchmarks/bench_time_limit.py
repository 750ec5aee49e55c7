"""Does a time-limited training end on time, and where does its time go? (issue 12)

Trains the quality benchmark's fixes (``bench_quality.py``: real footage, 6 training pairs,
batch 4, no validation frames, every other setting at its default) one after the other in ONE
process, each with ``time_limit`` = ``--seconds`` / 60, as the quality benchmark does, and
records for each the wall time of the ``ccat_tf.train`` call against the limit, when the final
``.cat`` was complete (its modification time, ``cat_seconds``), the steps
planned and reached, and the run table's ``seconds`` (where the time went, phase by phase:
``ccat_tf.training.PHASES``).

``--stacks FILE`` also samples the main thread's Python stack every ``--every`` seconds and
appends it, with the seconds since the run's ``train`` call, to FILE: what a late run was
doing once the deadline had passed.

    .venv/bin/python benchmarks/bench_time_limit.py --seconds 60 --footage bikes \\
        --output /tmp/time_limit.json --stacks /tmp/stacks.txt
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_quality as bq  # noqa: E402


class StackSampler(threading.Thread):
    """Appends the main thread's stack to ``path`` every ``every`` seconds, stamped with the
    seconds since :meth:`mark` (the current run's start)."""

    def __init__(self, path: Path, every: float):
        super().__init__(daemon=True)
        self.path, self.every, self.label, self.t0 = path, every, "", time.monotonic()
        self.main = threading.main_thread().ident

    def mark(self, label: str) -> None:
        self.label, self.t0 = label, time.monotonic()

    def run(self) -> None:
        while True:
            time.sleep(self.every)
            # what and when first: formatting reads source files and lets the main thread on
            label, when = self.label, time.monotonic() - self.t0
            frame = sys._current_frames().get(self.main)
            if frame is None:
                continue
            stack = traceback.format_list(traceback.extract_stack(frame)[-12:])
            with open(self.path, "a") as f:
                f.write(f"--- {label} +{when:.1f}s\n{''.join(stack)}")


def one_run(seqs, seconds: float, work: Path) -> dict:
    import ccat_tf
    from ccat_tf import runs
    from ccat_tf.model import read_info

    data_dir = work / "dd"
    t0, started = time.perf_counter(), time.time()
    cat = ccat_tf.train(
        input=seqs.input,
        ground_truth=seqs.ground_truth,
        frames=seqs.frames,
        output_channels=seqs.output_channels,
        data_directory=str(data_dir),
        time_limit=seconds / 60,
        batch_size=bq.BATCH,
        validation_frames="",
        progress_bar=False,
    )
    wall = time.perf_counter() - t0
    meta, run = read_info(cat), runs.list_runs(data_dir)[-1]
    return {
        "wall_seconds": round(wall, 2),
        "cat_seconds": round(os.stat(cat).st_mtime - started, 2),  # the final .cat complete
        "late_seconds": round(wall - seconds, 2),
        "steps": meta.step,
        "model_size": meta.model_size,
        "seconds": run.get("seconds"),
        "loadavg": list(os.getloadavg()),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60, help="time limit of each run")
    parser.add_argument("--footage", nargs="+", default=["bikes"])
    parser.add_argument("--fixes", nargs="+", default=list(bq.ALL_FIXES), choices=bq.ALL_FIXES)
    parser.add_argument("--output", type=Path, required=True, help="the result file (JSON)")
    parser.add_argument("--stacks", type=Path, help="sample the main thread's stack into FILE")
    parser.add_argument("--every", type=float, default=2.0, help="seconds between stack samples")
    args = parser.parse_args(argv)
    sampler = None
    if args.stacks:
        sampler = StackSampler(args.stacks, args.every)
        sampler.start()
    result = {"seconds": args.seconds, "machine": bq.machine(), "runs": []}
    with tempfile.TemporaryDirectory(prefix="bench-time-limit-") as tmp:
        for name in args.footage:
            plate, where = bq.footage_entry(name, 1.0, 48)
            for fix in args.fixes:
                inputs, truths, out_ch, _ = bq.make_fix(fix, plate)
                inputs, truths = bq.quantise16(inputs), bq.quantise16(truths)
                work = Path(tmp) / name / fix
                seqs = bq.write_sequences(work, inputs, truths, out_ch, where["train_indices"])
                if sampler is not None:
                    sampler.mark(f"{name}/{fix}")
                row = {"footage": name, "fix": fix, **one_run(seqs, args.seconds, work)}
                print(json.dumps(row), flush=True)
                result["runs"].append(row)
                args.output.write_text(json.dumps(result, indent=1))
    late = [r["late_seconds"] for r in result["runs"]]
    print(f"{len(late)} runs: late by {min(late):.1f} to {max(late):.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
