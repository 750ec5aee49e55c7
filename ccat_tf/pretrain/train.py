"""``pretrain(...)``: make one shipped initial-weights file.

Builds the same network as ``ccat_tf.train`` (``models.build_model`` with the same residual rule),
trains it with the same ``train_step`` (mean absolute error, Adam) on pairs generated on the fly
from the tensorflow-datasets corpus, and saves it with ``catfile.save_cat`` and the same metadata
keys as a training checkpoint, plus a ``pretrained`` block saying what it was trained on.

The corpus is either clean images (``corpus``: degradations made by :mod:`.degrade`) or a
studio's own (input, ground truth) pairs (``pairs``), which are cropped together and used as they
are.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from ccat_tf.pretrain.degrade import TASKS


def _say(message: str) -> None:
    print(f"ccat-tf pretrain: {message}", file=sys.stderr, flush=True)


def _stack(arrays: list[np.ndarray]):
    """Zero-padded [N, Hmax, Wmax, C] float16 stack and the real sizes [N, 2]."""
    h = max(a.shape[0] for a in arrays)
    w = max(a.shape[1] for a in arrays)
    c = arrays[0].shape[2]
    out = np.zeros((len(arrays), h, w, c), np.float16)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0], : a.shape[1]] = np.clip(a, 0.0, None)
    sizes = np.array([a.shape[:2] for a in arrays], np.int32)
    return out, sizes


def pair_dataset(
    task: str,
    images,
    sizes,
    crop: int,
    batch: int,
    seed: int,
    start: int = 0,
    count: int | None = None,
):
    """tf.data of (input, target) batches; sample ``i`` is a pure function of (seed, i)."""
    import tensorflow as tf

    from ccat_tf.pretrain import degrade

    _, n_crops, make = TASKS[task]
    images = tf.constant(images)
    sizes = tf.constant(sizes)

    def sample(i):
        s = tf.stack([tf.constant(seed, tf.int64), i])
        crops = [
            degrade.random_crop(images, sizes, crop, degrade._seed(s, 100 + k))
            for k in range(n_crops)
        ]
        return make(*crops, degrade._seed(s, 200))

    stop = None if count is None else start + count
    ds = tf.data.Dataset.range(start, stop if stop is not None else 2**62)
    ds = ds.map(sample, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def paired_dataset(
    inputs, truths, crop: int, batch: int, seed: int, start: int = 0, count: int | None = None
):
    """tf.data of same-place crops of a studio's (input, ground truth) pairs."""
    import tensorflow as tf

    from ccat_tf.pretrain import degrade

    n_in = inputs[0].shape[2]
    both, sizes = _stack(
        [np.concatenate([x, y], axis=2) for x, y in zip(inputs, truths, strict=True)]
    )
    both, sizes = tf.constant(both), tf.constant(sizes)
    channels = both.shape[-1]

    def sample(i):
        s = tf.stack([tf.constant(seed, tf.int64), i])
        c = degrade.random_crop(both, sizes, crop, degrade._seed(s, 100), channels=channels)
        return c[..., :n_in], c[..., n_in:]

    stop = None if count is None else start + count
    ds = tf.data.Dataset.range(start, stop if stop is not None else 2**62)
    ds = ds.map(sample, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def _make_pretrainer(net, loss: str):
    """``training``'s CopyCatTrainer for ``mae``; the same step with squared error for ``mse``.

    Matting pretraining uses ``mse``: with mean absolute error, predicting 0 everywhere (the
    median of a mostly empty matte) is a flat trap that 900 steps did not leave (9 dB on the
    synthetic validation crops); squared error pulls towards the mean coverage from the start.
    Fine-tuning with ``ccat_tf.train`` uses mean absolute error as usual.
    """
    from ccat_tf.training import _make_trainer

    return _make_trainer(net, loss=loss)


def psnr(pred, target) -> float:
    mse = float(np.mean((np.clip(pred, 0.0, 1.0) - target) ** 2))
    return 10.0 * math.log10(1.0 / max(mse, 1e-12))


def pretrain(
    task: str,
    model_size: str,
    *,
    output: str | Path,
    data_dir: str | Path,
    corpus: str | Path | None = None,
    pairs: str | Path | None = None,
    steps: int = 2000,
    crop_size: int = 96,
    batch_size: int = 8,
    learning_rate: float = 2e-3,
    seed: int = 0,
    weights_dtype: str = "float16",
    threads: int = 0,
    log_every: int = 100,
    loss: str | None = None,
) -> Path:
    """Train ``task``'s network of ``model_size`` for ``steps`` steps and save it at ``output``.

    ``corpus``: folder of clean images (pairs are generated); ``pairs``: folder with ``input/``
    and ``ground_truth/`` (used as they are). ``data_dir`` caches the tensorflow-datasets build.
    ``loss``: ``mae`` (training's loss; default for deblur and upscale) or ``mse`` (default for
    human_matting, see :func:`_make_pretrainer`).
    """
    import keras
    import tensorflow as tf

    from ccat_tf import catfile
    from ccat_tf.models import build_model, divisor
    from ccat_tf.pretrain import builders
    from ccat_tf.settings import TrainSettings

    if task not in TASKS:
        raise ValueError(f"task {task!r} is unknown; use one of {', '.join(TASKS)}")
    if (corpus is None) == (pairs is None):
        raise ValueError("give exactly one of corpus (clean images) or pairs (input/ground_truth)")
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    out_names, _, _ = TASKS[task]
    gt_channels = "alpha" if out_names == ["A"] else "rgb"
    t0 = time.time()
    if corpus is not None:
        ds, builder = builders.load_images(corpus, data_dir)
        examples = list(ds.as_numpy_iterator())
        images, sizes = _stack([e["image"] for e in examples])
        names = [e["name"].decode() for e in examples]
        train_ds = pair_dataset(task, images, sizes, crop_size, batch_size, seed)
        val_ds = pair_dataset(task, images, sizes, crop_size, 32, seed + 7919, count=32)
        source = str(corpus)
    else:
        ds, builder = builders.load_pairs(pairs, data_dir, gt_channels)
        examples = list(ds.as_numpy_iterator())
        ins = [e["input"] for e in examples]
        gts = [e["ground_truth"] for e in examples]
        names = [e["name"].decode() for e in examples]
        train_ds = paired_dataset(ins, gts, crop_size, batch_size, seed)
        val_ds = paired_dataset(
            ins, gts, crop_size, min(32, len(ins)), seed + 7919, count=min(32, len(ins))
        )
        source = str(pairs)
    _say(
        f"{task} {model_size}: {len(names)} images from {source} "
        f"(tfds {builder.name}/{builder.builder_config.name}/{builder.version}), "
        f"{steps} steps of {batch_size} x {crop_size}px crops"
    )
    val_x, val_y = next(iter(val_ds))
    val_x, val_y = val_x.numpy(), val_y.numpy()

    keras.utils.set_random_seed(seed)
    residual = out_names != ["A"]
    net = build_model(3, len(out_names), model_size, residual=residual)
    loss = loss or ("mse" if task == "human_matting" else "mae")
    trainer = _make_pretrainer(net, loss)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps, alpha=0.05)
    trainer.compile(optimizer=keras.optimizers.Adam(learning_rate=schedule), jit_compile=False)

    losses: list[float] = []

    class Log(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            losses.append(float(logs["loss"]))
            if (batch + 1) % log_every == 0 or batch + 1 == steps:
                rate = (batch + 1) / (time.time() - t_fit)
                _say(
                    f"step {batch + 1}/{steps} loss {np.mean(losses[-log_every:]):.4f} ({rate:.1f} steps/s)"
                )

    t_fit = time.time()
    trainer.fit(
        train_ds, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[Log()], shuffle=False
    )
    train_seconds = time.time() - t_fit
    pred = np.asarray(net(val_x, training=False))
    val_psnr = psnr(pred, val_y)
    baseline = psnr(val_x, val_y) if residual else psnr(np.zeros_like(val_y), val_y)
    _say(f"validation PSNR {val_psnr:.2f} dB (input as output / zero alpha: {baseline:.2f} dB)")

    settings = TrainSettings(
        model_size=model_size,
        input_channels="rgb",
        output_channels=gt_channels,
        crop_size=crop_size,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        epochs=steps,
        use_multi_resolution_training=False,
        augment=True,
        run_name=f"pretrain_{task}_{model_size}",
    )
    meta = {
        "model_size": model_size,
        "input_channels": ["R", "G", "B"],
        "output_channels": out_names,
        "input_transform": ["linear"] * 3,
        "output_transform": ["linear"] * len(out_names),
        "residual": residual,
        "divisor": divisor(model_size),
        "step": steps,
        "total_steps": steps,
        "epochs": steps,
        "batch_size": batch_size,
        "crop_size": crop_size,
        "stage": 2,
        "run_name": f"pretrain_{task}_{model_size}",
        "dataset": {
            "input": f"{source} ({'generated ' + task + ' inputs' if corpus else 'input/'})",
            "ground_truth": f"{source} ({'clean images' if corpus else 'ground_truth/'})",
            "frames": "",
            "width": crop_size,
            "height": crop_size,
            "hdr": False,
        },
        "last_loss": float(np.mean(losses[-50:])) if losses else None,
        "val_psnr": val_psnr,
        "settings": settings.to_dict(),
        "pretrained": {
            "task": task,
            "corpus": "generated" if corpus else "pairs",
            "images": names,
            "tfds": f"{builder.name}/{builder.builder_config.name}/{builder.version}",
            "steps": steps,
            "crop_size": crop_size,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "loss": loss,
            "seed": seed,
            "train_seconds": round(train_seconds, 1),
            "val_psnr_synthetic": val_psnr,
            "val_psnr_baseline": baseline,
        },
    }
    path = catfile.save_cat(output, net, meta, weights_dtype=weights_dtype)
    _say(f"wrote {path} ({Path(path).stat().st_size / 1e6:.2f} MB) in {time.time() - t0:.0f} s")
    return Path(path)


def describe(path: str | Path) -> str:
    """One JSON line saying what a shipped weight file was trained on."""
    from ccat_tf import catfile

    meta = catfile.read_metadata(path)
    return json.dumps({"file": Path(path).name, **meta.get("pretrained", {})}, default=str)
