"""Pretrained initial weights vs training from scratch, on a shot not used in pretraining.

The shot is the bikes footage (``/work/shared/data/bikes`` or ``demo/bikes/plate``: 48 frames,
640x272); no frame of it is in the pretraining corpus (ccat_tf/pretrain/sources.py). For each
task a CopyCat-style data set is made from it:

* deblur: each frame blurred with one fixed kernel drawn by ``degrade.blur_kernel`` (seed per
  task) plus noise -> the clean frame;
* upscale: each frame downscaled 3x (bicubic, antialiased) and upscaled back (bilinear) -> the
  clean frame;
* human_matting: a synthetic figure (``degrade.figure_alpha``, the same body model as in
  pretraining, other seeds) textured and composited over each bikes frame -> its alpha. There is
  no real person with a real matte here: this measures fitting the synthetic-figure task on new
  backgrounds, not real human matting.

Each task trains ``ccat_tf.train`` twice (``initial_weights: none`` and the pretrained task),
with the same seed, frames, crops and steps; validation PSNR on held-out frames is recorded at
every checkpoint. The pretrained start "wins" when it reaches the from-scratch run's final PSNR
within a third of the steps.

Usage: python benchmarks/bench_pretrained.py [--sizes small] [--steps 300] [--every 25]
       [--tasks deblur ...] [--weights candidate.cat]
Writes benchmarks/results/pretrained.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

TRAIN_FRAMES = "1001-1043x6"  # 8 training pairs
VALIDATION_FRAMES = "1004,1022,1046"


def find_shot() -> Path:
    for folder in (Path("/work/shared/data/bikes"), HERE.parent / "demo" / "bikes" / "plate"):
        if (folder / "bikes.1001.png").exists():
            return folder
    raise SystemExit("bikes footage not found (/work/shared/data/bikes or demo/bikes/plate)")


def make_task_data(task: str, shot: Path, out: Path) -> tuple[str, str, str]:
    """Write input/ground-truth sequences for ``task``; return (input, gt, output_channels)."""
    import numpy as np
    import tensorflow as tf

    from ccat_tf import imageio
    from ccat_tf.pretrain import degrade

    out.mkdir(parents=True, exist_ok=True)
    inp, gt = (
        out / "input.####.png",
        out / ("gt.####.exr" if task == "human_matting" else "gt.####.png"),
    )
    kernel = degrade.blur_kernel(tf.constant([4242, 1], tf.int64))
    for frame in range(1001, 1049):
        src = imageio.read_image(shot / f"bikes.{frame}.png", "rgb")
        seed = tf.constant([4242, frame], tf.int64)
        if task == "deblur":
            x = degrade._noise(degrade.apply_kernel(tf.constant(src), kernel), seed, 20, 0.02)
            x, y, names = np.asarray(x), src, ["R", "G", "B"]
        elif task == "upscale":
            h, w = src.shape[:2]
            small = tf.image.resize(src, [h // 3, w // 3], method="bicubic", antialias=True)
            x = np.clip(np.asarray(tf.image.resize(small, [h, w], method="bilinear")), 0, 1)
            y, names = src, ["R", "G", "B"]
        else:
            # A square canvas for the figure, centred on the frame (the frame is 640x272).
            h, w = src.shape[:2]
            alpha, skin = degrade.figure_alpha(h, tf.constant([4242 + frame % 7, 3], tf.int64))
            a = np.zeros((h, w), np.float32)
            s_full = np.zeros((h, w), np.float32)
            x0 = (w - h) // 2 + (frame - 1024) * 4
            a[:, x0 : x0 + h] = np.asarray(alpha)
            s_full[:, x0 : x0 + h] = np.asarray(skin)
            tex = imageio.read_image(shot / f"bikes.{1049 - frame + 1000}.png", "rgb")[:, ::-1]
            fg = tex * np.array([0.5, 0.8, 1.1], np.float32)
            fg = (
                fg * (1 - s_full[..., None])
                + np.array([0.8, 0.6, 0.5], np.float32) * s_full[..., None]
            )
            x = a[..., None] * np.clip(fg, 0, 1) + (1 - a[..., None]) * src
            y, names = a[..., None], ["A"]
        imageio.write_image(
            str(inp).replace("####", str(frame)), np.asarray(x, np.float32), ["R", "G", "B"]
        )
        imageio.write_image(str(gt).replace("####", str(frame)), np.asarray(y, np.float32), names)
    return str(inp), str(gt), "alpha" if task == "human_matting" else "rgb"


def curve(data_dir: Path) -> list[tuple[int, float]]:
    """(step, val_psnr) of every checkpoint of the run in ``data_dir``."""
    from ccat_tf import catfile

    points = []
    for path in sorted(data_dir.glob("*.step*.cat")):
        meta = catfile.read_metadata(path)
        if meta.get("val_psnr") is not None:
            points.append((int(meta["step"]), float(meta["val_psnr"])))
    return sorted(points)


def run_one(task, size, start, data, steps, every, workdir, weights=None, extra=None) -> dict:
    """One run of ``task``; ``extra``: more training settings (a candidate default)."""
    import ccat_tf

    inp, gt, out_ch = data
    dd = workdir / f"{task}_{size}_{start}"
    pairs = 8
    batch = 4
    t = time.time()
    settings = dict(
        input=inp,
        ground_truth=gt,
        frames=TRAIN_FRAMES,
        validation_frames=VALIDATION_FRAMES,
        input_channels="rgb",
        output_channels=out_ch,
        data_directory=str(dd),
        model_size=size,
        # --weights: a candidate file in place of the shipped one, through a checkpoint start.
        initial_weights="checkpoint" if weights and start != "none" else start,
        checkpoint_file=weights if weights and start != "none" else "",
        epochs=steps * batch // pairs,
        batch_size=batch,
        crop_size=64,
        checkpoint_interval=every,
        contact_sheet_interval=10**6,
        use_multi_resolution_training=False,
        seed=0,
        progress_bar=False,
    )
    ccat_tf.train(**{**settings, **(extra or {})})
    return {"start": start, "curve": curve(dd), "seconds": round(time.time() - t, 1)}


def verdict(scratch: list, pretrained: list, steps: int) -> dict:
    target = scratch[-1][1]
    reached = next((s for s, p in pretrained if p >= target), None)
    # Validation PSNR is noisy (a matting run can peak and fall back): also the scratch run's best.
    best = max(p for _, p in scratch)
    reached_best = next((s for s, p in pretrained if p >= best), None)
    return {
        "scratch_best_psnr": best,
        "pretrained_reaches_best_at": reached_best,
        "scratch_final_psnr": target,
        "pretrained_final_psnr": pretrained[-1][1],
        "pretrained_first_psnr": pretrained[0][1],
        "scratch_first_psnr": scratch[0][1],
        "pretrained_reaches_at": reached,
        "within_a_third": reached is not None and reached <= steps / 3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["small"])
    parser.add_argument("--tasks", nargs="+", default=["deblur", "upscale", "human_matting"])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--output", default=str(HERE / "results" / "pretrained.json"))
    parser.add_argument(
        "--reuse-scratch",
        metavar="JSON",
        help="take the from-scratch curves from an earlier result file of the same tasks, sizes, "
        "steps and interval (training is deterministic: the same seed gives the same curve)",
    )
    parser.add_argument(
        "--weights",
        help="a .cat to try instead of the shipped weights (one task and size at a time)",
    )
    args = parser.parse_args()
    shot = find_shot()
    earlier = {}
    if args.reuse_scratch:
        for r in json.loads(Path(args.reuse_scratch).read_text()):
            last_step = r["runs"]["none"]["curve"][-1][0]
            if (
                r["steps"] == args.steps == last_step
                and r["runs"]["none"]["curve"][0][0] == args.every
            ):
                earlier[(r["task"], r["model_size"])] = dict(r["runs"]["none"], reused=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-pretrained-") as tmp:
        work = Path(tmp)
        for task in args.tasks:
            data = make_task_data(task, shot, work / f"data_{task}")
            for size in args.sizes:
                runs = {
                    start: earlier.get((task, size))
                    if start == "none" and earlier.get((task, size))
                    else run_one(
                        task, size, start, data, args.steps, args.every, work, args.weights
                    )
                    for start in ("none", task)
                }
                v = verdict(runs["none"]["curve"], runs[task]["curve"], args.steps)
                results.append(
                    {"task": task, "model_size": size, "steps": args.steps, **v, "runs": runs}
                )
                print(json.dumps({k: v for k, v in results[-1].items() if k != "runs"}), flush=True)
                # After every pair of runs, so an interrupted benchmark keeps what it measured.
                Path(args.output).parent.mkdir(parents=True, exist_ok=True)
                Path(args.output).write_text(json.dumps(results, indent=2))
    print()
    print(
        "| task | size | steps | scratch PSNR at first ckpt / final (best) | pretrained PSNR at "
        "first ckpt / final | pretrained reaches scratch final (best) at step | within 1/3 |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(
            f"| {r['task']} | {r['model_size']} | {r['steps']} | {r['scratch_first_psnr']:.2f} / "
            f"{r['scratch_final_psnr']:.2f} ({r['scratch_best_psnr']:.2f}) | "
            f"{r['pretrained_first_psnr']:.2f} / {r['pretrained_final_psnr']:.2f} | "
            f"{r['pretrained_reaches_at'] or 'never'} "
            f"({r['pretrained_reaches_best_at'] or 'never'}) | "
            f"{'yes' if r['within_a_third'] else 'no'} |"
        )
    print("\nCurves (step: PSNR dB):")
    for r in results:
        for start, run in r["runs"].items():
            pts = ", ".join(f"{s}: {p:.2f}" for s, p in run["curve"])
            print(f"- {r['task']} {r['model_size']} {start} ({run['seconds']} s): {pts}")


if __name__ == "__main__":
    main()
