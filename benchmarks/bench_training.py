"""Training throughput: steps/s and model FLOP/s for each model size, against the matmul peak.

For each model size at crop 256 it measures

* ``ccat_tf``: a real ``ccat_tf.train`` run (frame cache, tf.data crop pipeline, custom
  train_step, every callback writing the Data Directory at CopyCat's default intervals), with
  steps/s taken from the run's own ``.summary`` (median of the steps after warm-up);
* ``plain fit``: the same network under a plain ``keras.Model.fit`` on in-memory tensors with the
  built-in MAE loss, i.e. what the hardware gives a bare Keras U-Net;

and reports model FLOP/s (3x the forward FLOPs of a crop, times batch, times steps/s) as a share
of this machine's float32 matmul peak, measured first.

Usage: python benchmarks/bench_training.py [--sizes small medium large] [--steps 30] [--batch 4]
Writes benchmarks/results/training.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def matmul_peak_gflops(n: int = 4096, repeats: int = 10) -> float:
    import tensorflow as tf

    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))

    @tf.function
    def mm(a, b):
        return tf.linalg.matmul(a, b)

    mm(a, b).numpy()
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        mm(a, b).numpy()
        dt = time.perf_counter() - t
        best = max(best, 2 * n**3 / dt / 1e9)
    return best


def make_frames(folder: Path, n: int, size: tuple[int, int]) -> dict:
    import numpy as np
    import OpenImageIO as oiio

    rng = np.random.default_rng(0)
    h, w = size
    for side in ("in", "gt"):
        (folder / side).mkdir(parents=True, exist_ok=True)
    for f in range(1, n + 1):
        x = rng.random((h, w, 3), dtype=np.float32)
        for side, arr in (("in", x), ("gt", np.clip(x * 1.1, 0, 1) ** 0.8)):
            out = oiio.ImageOutput.create("x.png")
            path = str(folder / side / f"b.{f:04d}.png")
            out.open(path, oiio.ImageSpec(w, h, 3, "uint8"))
            out.write_image(arr)
            out.close()
    return {
        "input": str(folder / "in/b.####.png"),
        "ground_truth": str(folder / "gt/b.####.png"),
        "frames": f"1-{n}",
    }


def bench_ccat(size: str, steps: int, batch: int, frames: dict, tmp: Path) -> float:
    import ccat_tf
    from ccat_tf.summary import read_summaries

    dd = tmp / f"dd_{size}"
    pairs = 8
    epochs = max(1, -(-steps * batch // pairs))
    ccat_tf.train(
        dict(
            frames,
            data_directory=str(dd),
            model_size=size,
            crop_size=256,
            batch_size=batch,
            epochs=epochs,
            use_multi_resolution_training=False,
            use_gpu_if_available=False,
            checkpoint_interval=1000,
            contact_sheet_interval=100,
        ),
        progress_bar=False,
    )
    sps = read_summaries(dd)["steps_per_second"].to_numpy()
    return float(statistics.median(sps[3:]))


def bench_plain_fit(size: str, steps: int, batch: int) -> float:
    import keras
    import numpy as np
    import tensorflow as tf

    from ccat_tf.models import build_model

    net = build_model(3, 3, size)
    net.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mae", jit_compile=False)
    x = np.random.rand(batch * 4, 256, 256, 3).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, x)).repeat().batch(batch).prefetch(2)

    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.t = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])  # the same host sync ccat_tf's per-step logging does
            times.append(time.perf_counter() - self.t)

    times: list[float] = []
    net.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[Timer()])
    return 1.0 / statistics.median(times[3:])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["small", "medium", "large"])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=4)
    args = ap.parse_args()

    import tensorflow as tf

    from ccat_tf.models import describe

    peak = matmul_peak_gflops()
    rows = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        frames = make_frames(tmp / "frames", 8, (512, 768))
        for size in args.sizes:
            d = describe(size, crop=256)
            per_step = d["training_gflops_per_crop"] * args.batch
            plain = bench_plain_fit(size, args.steps, args.batch)
            ours = bench_ccat(size, args.steps, args.batch, frames, tmp)
            rows.append(
                {
                    "model_size": size,
                    "parameters": d["parameters"],
                    "train_gflop_per_step": per_step,
                    "plain_fit_steps_per_s": plain,
                    "plain_fit_gflops": plain * per_step,
                    "ccat_steps_per_s": ours,
                    "ccat_gflops": ours * per_step,
                    "ccat_share_of_peak": ours * per_step / peak,
                    "plain_share_of_peak": plain * per_step / peak,
                    "ccat_vs_plain": ours / plain,
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"TensorFlow {tf.__version__}",
        "matmul_peak_gflops": peak,
        "crop": 256,
        "batch": args.batch,
        "rows": rows,
    }
    out = HERE / "results" / "training.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"matmul peak: {peak:.0f} GFLOP/s ({result['machine']}); crop 256, batch {args.batch}\n")
    print(
        "| model_size | params | GFLOP/step | plain fit steps/s | ccat_tf steps/s | ccat_tf GFLOP/s | share of peak | ccat_tf / plain |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model_size']} | {r['parameters']:,} | {r['train_gflop_per_step']:.0f} | "
            f"{r['plain_fit_steps_per_s']:.2f} | {r['ccat_steps_per_s']:.2f} | {r['ccat_gflops']:.0f} | "
            f"{100 * r['ccat_share_of_peak']:.0f}% | {100 * r['ccat_vs_plain']:.0f}% |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
