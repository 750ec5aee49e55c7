"""Planning speed of the workflow: ``snakemake -n`` on a config of many shots.

Writes a config of ``--shots`` copies of the demo shot (8 training pairs, 2 validation frames, a
preview frame, 48 frames of inference in 2 chunks: 11 jobs a shot, then overview and all) into a
temporary working directory and times ``snakemake -n --cores 2`` there with this Python's
Snakemake, ``--repeat`` times, after one untimed warm-up (file caches, bytecode). The machine is
usually shared: the load average before and after is printed with the times, and the best of the
tries is the number that speaks for the workflow; the CPU time of the snakemake process is the
least sensitive to others' load. Nothing under results/ of the checkout is read or written.

Usage::

    python benchmarks/bench_dry_run.py [--shots 50] [--repeat 5]

tests/test_workflow.py checks what the dry run plans; this only measures how long it takes
(the target: under 5 s for 50 shots on a 2-core workstation).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PLATE = str(REPO / "demo" / "bikes" / "plate" / "bikes.####.png")
GROUND_TRUTH = str(REPO / "demo" / "bikes" / "groundtruth" / "bikes.####.png")


def config(shots: int) -> dict:
    shot = {
        "input": PLATE,
        "ground_truth": GROUND_TRUTH,
        "frames": "1001-1043x6",
        "validation_frames": "1016,1034",
        "preview": PLATE,
        "preview_frames": 1048,
        "infer_frames": "1001-1048",
    }
    return {"shots": {f"shot{i:03d}": dict(shot) for i in range(shots)}}


def dry_run(workdir: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the snakemake process) of one dry run."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir)]
    cmd += ["--workflow-profile", "none", "-n", "--cores", "2", "--quiet"]
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    if result.returncode != 0:
        sys.exit(f"snakemake -n failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return elapsed, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shots", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_dry_run.") as tmp:
        workdir = Path(tmp)
        (workdir / "config.yaml").write_text(yaml.safe_dump(config(args.shots)))
        load_before = os.getloadavg()
        dry_run(workdir)  # warm-up
        runs = [dry_run(workdir) for _ in range(args.repeat)]
        load_after = os.getloadavg()
    cpus = os.cpu_count()
    print(f"snakemake -n, {args.shots} shots ({args.shots * 11 + 2} jobs), --cores 2")
    print(f"machine: {platform.machine()}, {cpus} CPUs, Python {platform.python_version()}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in load_before)}")
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in load_after)}")
    walls, cpus_used = [w for w, _ in runs], [c for _, c in runs]
    print(f"wall times (s): {', '.join(f'{t:.2f}' for t in walls)}")
    print(f"CPU times (s):  {', '.join(f'{t:.2f}' for t in cpus_used)}")
    print(f"wall best {min(walls):.2f} s, median {statistics.median(walls):.2f} s")
    print(f"CPU best {min(cpus_used):.2f} s, median {statistics.median(cpus_used):.2f} s")


if __name__ == "__main__":
    main()
