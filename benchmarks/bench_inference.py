"""Inference throughput: frames per second at 1080p and 4K for each model size, tiled and untiled.

Each configuration runs in a fresh subprocess (so its peak memory is its own) and times
``ccat_tf.Model.predict``, inference's per-frame path, on an in-memory frame: encode the input transform,
reflect-pad to the divisor, run the network (whole frame, or tiles blended as in a render),
crop and decode. Reading and writing files is left out: in a render it runs in background threads
beside the network. Weights are random (speed does not depend on them).

Modes:

* ``untiled``: the whole frame in one pass; run only where its estimated memory fits the same
  budget ``tile_size: auto`` uses (otherwise the row says so);
* ``tiled``: ``--tile-size`` tiles (default 512) with the automatic, receptive-field overlap,
  ``--batch-tiles`` per batch (default 4, the InferSettings default);
* ``auto``: whatever ``tile_size: auto`` chooses on this machine (whole frame when it fits).

Usage::

    python benchmarks/bench_inference.py [--sizes small medium large] [--resolutions 1080p 4k]
        [--modes untiled tiled] [--frames 2] [--tile-size 512] [--batch-tiles 4]
        [--precision float32|mixed_float16] [--append]

Where ``untiled`` is skipped, an ``auto`` row is added. Prints a Markdown table and writes ``benchmarks/results/inference.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

RESOLUTIONS = {"720p": (720, 1280), "1080p": (1080, 1920), "2k": (1080, 2048), "4k": (2160, 3840)}


def run_one(
    size: str,
    resolution: str,
    mode: str,
    frames: int,
    tile_size: int,
    batch_tiles: int,
    precision: str,
) -> dict:
    """Time one configuration in this process; returns a result row."""
    import numpy as np

    from ccat_tf import tiling
    from ccat_tf.model import Model, TileSettings
    from ccat_tf.model_info import ModelInfo
    from ccat_tf.models import build_model

    h, w = RESOLUTIONS[resolution]
    model = build_model(3, 3, size, dtype_policy=None if precision == "float32" else precision)
    profile = tiling.profile_model(model)
    blend = tiling.default_blend(profile)
    d = profile.divisor
    ph, pw = h + (-h) % d, w + (-w) % d
    budget, source = tiling.free_memory_bytes(use_gpu=False)
    dtype_bytes = 4 if precision == "float32" else 3
    estimate = ph * pw * profile.bytes_per_pixel(dtype_bytes)
    row = {
        "model_size": size,
        "parameters": int(model.count_params()),
        "resolution": resolution,
        "width": w,
        "height": h,
        "mode": mode,
        "precision": precision,
        "receptive_field_radius": profile.radius,
        "overlap": blend.overlap,
        "untiled_estimate_gib": estimate / 2**30,
        "budget_gib": budget / 2**30,
    }
    if mode == "untiled":
        if estimate > budget:
            row["skipped"] = (
                f"untiled needs ~{estimate / 2**30:.1f} GiB, budget {budget / 2**30:.1f} GiB"
            )
            return row
        size_px = (ph, pw)
    elif mode == "tiled":
        size_px = tile_size
    else:
        size_px = tiling.auto_tile_shape(
            profile,
            ph,
            pw,
            blend,
            batch_tiles=batch_tiles,
            budget_bytes=budget,
            dtype_bytes=dtype_bytes,
        )
    rgb, kinds = ("R", "G", "B"), ("log",) * 3
    info = ModelInfo(rgb, rgb, kinds, kinds, divisor=d, residual=True, model_size=size)
    runner = Model(
        model,
        info,
        device="/CPU:0",
        tiles=TileSettings(size_px, "auto", batch_tiles),
        precision=precision,
    )
    plan = runner.plan_for(h, w)
    runner.network_output(np.zeros((1, 64, 64, 3), np.float32))  # trace once, outside the timing
    rng = np.random.default_rng(0)
    frame = rng.random((h, w, 3), dtype=np.float32)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times = []
    for _ in range(frames):
        t = time.perf_counter()
        runner.predict(frame)
        times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # The first frame of a new shape pays oneDNN's kernel set-up: report the best frame, and
    # the mean over all as a pessimistic figure.
    row.update(
        tiles=plan.count,
        tile=[plan.tile_width, plan.tile_height],
        batch_tiles=batch_tiles if plan.tiled else 1,
        pixel_overhead=plan.overhead(),
        frames_timed=frames,
        seconds_per_frame=min(times),
        mean_seconds_per_frame=sum(times) / len(times),
        fps=1.0 / min(times),
        peak_rss_gib=peak / 2**30,
        rss_growth_gib=(peak - base_rss) / 2**30,
    )
    return row


def _subprocess_row(args, size, resolution, mode, frames) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--one",
        size,
        resolution,
        mode,
        str(frames),
        "--tile-size",
        str(args.tile_size),
        "--batch-tiles",
        str(args.batch_tiles),
        "--precision",
        args.precision,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"model_size": size, "resolution": resolution, "mode": mode, "error": tail}
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model | resolution | mode | tiles (size) | fps | s/frame | pixels computed | peak RSS GiB |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        precision = r.get("precision", "float32")
        mode = r["mode"] if precision == "float32" else f"{r['mode']}, {precision}"
        head = f"| {r['model_size']} | {r['resolution']} | {mode} |"
        if "error" in r:
            lines.append(f"{head} error: {r['error']} | | | | |")
        elif "skipped" in r:
            lines.append(f"{head} skipped: {r['skipped']} | | | | |")
        else:
            tiles = (
                f"{r['tiles']} ({r['tile'][0]}x{r['tile'][1]})"
                if r["tiles"] > 1
                else "1 (whole frame)"
            )
            lines.append(
                f"{head} {tiles} | {r['fps']:.3f} | {r['seconds_per_frame']:.1f} | "
                f"{r['pixel_overhead']:.2f}x | {r['peak_rss_gib']:.1f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["small", "medium", "large"])
    parser.add_argument(
        "--resolutions", nargs="+", default=["1080p", "4k"], choices=list(RESOLUTIONS)
    )
    parser.add_argument(
        "--modes", nargs="+", default=["untiled", "tiled"], choices=["untiled", "tiled", "auto"]
    )
    parser.add_argument("--frames", type=int, default=2, help="frames timed per configuration")
    parser.add_argument(
        "--frames-4k-large", type=int, default=1, help="frames for large at 4K (slow)"
    )
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--batch-tiles", type=int, default=4)
    parser.add_argument("--precision", default="float32", choices=["float32", "mixed_float16"])
    parser.add_argument("--output", default=str(HERE / "results" / "inference.json"))
    parser.add_argument(
        "--append", action="store_true", help="merge these rows into an existing --output"
    )
    parser.add_argument(
        "--one", nargs=4, metavar=("SIZE", "RES", "MODE", "FRAMES"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)

    if args.one:
        size, resolution, mode, frames = args.one
        row = run_one(
            size, resolution, mode, int(frames), args.tile_size, args.batch_tiles, args.precision
        )
        print(json.dumps(row))
        return 0

    rows = []
    t0 = time.perf_counter()
    for size in args.sizes:
        for resolution in args.resolutions:
            for mode in args.modes:
                frames = (
                    args.frames_4k_large
                    if (size == "large" and resolution == "4k")
                    else args.frames
                )
                todo = [mode]
                while todo:
                    mode_now = todo.pop(0)
                    row = _subprocess_row(args, size, resolution, mode_now, frames)
                    rows.append(row)
                    # Where the whole frame does not fit, show what tile_size auto does instead.
                    if "skipped" in row and "auto" not in args.modes:
                        todo.append("auto")
                    shown = row.get("fps")
                    status = f"{shown:.3f} fps" if shown else row.get("skipped") or row.get("error")
                    print(f"{size:>6} {resolution:>5} {mode_now:>7}: {status}", file=sys.stderr)
    import tensorflow as tf

    result = {
        "benchmark": "inference",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "tensorflow": tf.__version__,
        },
        "seconds": time.perf_counter() - t0,
        "rows": rows,
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.append and out.exists():
        # Re-measure some configurations without re-running the others.
        def key(r):
            return (r["model_size"], r["resolution"], r["mode"], r.get("precision", "float32"))

        fresh = {key(r) for r in rows}
        rows = [r for r in json.loads(out.read_text())["rows"] if key(r) not in fresh] + rows
        order = {n: i for i, n in enumerate(["small", "medium", "large"])}
        modes = {m: i for i, m in enumerate(["untiled", "auto", "tiled"])}
        rows.sort(
            key=lambda r: (
                order.get(r["model_size"], 9),
                r["resolution"] != "1080p",
                r.get("precision", "float32") != "float32",
                modes.get(r["mode"], 9),
            )
        )
        result["rows"] = rows
        result["command"] += " (merged into earlier results)"
    from ccat_tf.atomic import atomic_write_json

    atomic_write_json(out, result)
    print(markdown(rows))
    print(f"\nwritten to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
