"""``pretrain(settings)``: make one shipped initial-weights file.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ccat_tf.dataset import batched_pipeline
from ccat_tf.pretrain.degrade import TASKS
from ccat_tf.settings import PretrainSettings


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
    return batched_pipeline(ds, sample, batch)


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
    return batched_pipeline(ds, sample, batch)


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


@dataclass
class _Corpus:
    """What a pretraining trains on: batches, a fixed validation batch, and where they came from."""

    train: Any  #: tf.data of (input, target) batches
    val_x: np.ndarray
    val_y: np.ndarray
    names: list[str]
    source: str
    tfds: str  #: builder/config/version of the tensorflow-datasets build


def pretrain(settings: PretrainSettings, *, log_every: int = 100, loss: str | None = None) -> Path:
    """Train ``settings.task``'s network of ``settings.model_size`` and save it at
    ``settings.output``: load the corpus, fit, write the .cat. ``loss``: ``mae`` (training's
    loss; default for deblur and upscale) or ``mse`` (default for human_matting, see
    :func:`_make_pretrainer`).
    """
    import tensorflow as tf

    s = settings.check()
    if s.threads:
        tf.config.threading.set_intra_op_parallelism_threads(s.threads)
        tf.config.threading.set_inter_op_parallelism_threads(s.threads)
    t0 = time.time()
    corpus = _load_corpus(s)
    _say(
        f"{s.task} {s.model_size}: {len(corpus.names)} images from {corpus.source} "
        f"(tfds {corpus.tfds}), {s.steps} steps of {s.batch_size} x {s.crop_size}px crops"
    )
    loss = loss or ("mse" if s.task == "human_matting" else "mae")
    net, losses, train_seconds = _fit(s, corpus, loss, log_every)
    residual = TASKS[s.task][0] != ["A"]
    pred = np.asarray(net(corpus.val_x, training=False))
    val_psnr = psnr(pred, corpus.val_y)
    zero = corpus.val_x if residual else np.zeros_like(corpus.val_y)
    baseline = psnr(zero, corpus.val_y)
    _say(f"validation PSNR {val_psnr:.2f} dB (input as output / zero alpha: {baseline:.2f} dB)")
    trained = {"loss": loss, "train_seconds": round(train_seconds, 1), "val_psnr": val_psnr}
    info = _metadata(s, corpus, losses, {**trained, "baseline": baseline})
    from ccat_tf.model import Model

    path = Model(net, info).save(s.output, weights_dtype=s.weights_dtype)
    _say(f"wrote {path} ({Path(path).stat().st_size / 1e6:.2f} MB) in {time.time() - t0:.0f} s")
    return Path(path)


def _load_corpus(s: PretrainSettings) -> _Corpus:
    """Clean images with degradations made on the fly, or a studio's (input, truth) pairs."""
    from ccat_tf.pretrain import builders

    if s.corpus:
        ds, builder = builders.load_images(s.corpus, s.data_dir)
        examples = list(ds.as_numpy_iterator())
        images, sizes = _stack([e["image"] for e in examples])
        train = pair_dataset(s.task, images, sizes, s.crop_size, s.batch_size, s.seed)
        val = pair_dataset(s.task, images, sizes, s.crop_size, 32, s.seed + 7919, count=32)
    else:
        gt_channels = "alpha" if TASKS[s.task][0] == ["A"] else "rgb"
        ds, builder = builders.load_pairs(s.pairs, s.data_dir, gt_channels)
        examples = list(ds.as_numpy_iterator())
        ins = [e["input"] for e in examples]
        gts = [e["ground_truth"] for e in examples]
        train = paired_dataset(ins, gts, s.crop_size, s.batch_size, s.seed)
        n_val = min(32, len(ins))
        val = paired_dataset(ins, gts, s.crop_size, n_val, s.seed + 7919, count=n_val)
    val_x, val_y = next(iter(val))
    return _Corpus(
        train=train,
        val_x=val_x.numpy(),
        val_y=val_y.numpy(),
        names=[e["name"].decode() for e in examples],
        source=str(s.corpus or s.pairs),
        tfds=f"{builder.name}/{builder.builder_config.name}/{builder.version}",
    )


def _loss_logger(steps: int, every: int):
    """A Keras callback that keeps every step's loss and logs their mean every ``every`` steps
    (Keras is imported here, not at module import, so the CLI starts fast)."""
    import keras

    class LossLogger(keras.callbacks.Callback):
        def __init__(self, steps: int, every: int):
            super().__init__()
            self.steps, self.every = steps, every
            self.losses: list[float] = []
            self.start = time.time()

        def on_train_batch_end(self, batch, logs=None):
            self.losses.append(float(logs["loss"]))
            done = batch + 1
            if done % self.every == 0 or done == self.steps:
                rate = done / (time.time() - self.start)
                mean = np.mean(self.losses[-self.every :])
                _say(f"step {done}/{self.steps} loss {mean:.4f} ({rate:.1f} steps/s)")

    return LossLogger(steps, every)


def _fit(s: PretrainSettings, corpus: _Corpus, loss: str, log_every: int):
    """The network trained for ``s.steps`` (cosine-decayed Adam); its losses and seconds."""
    import keras

    from ccat_tf.models import build_model

    out_names = TASKS[s.task][0]
    keras.utils.set_random_seed(s.seed)
    net = build_model(3, len(out_names), s.model_size, residual=out_names != ["A"])
    trainer = _make_pretrainer(net, loss)
    schedule = keras.optimizers.schedules.CosineDecay(s.learning_rate, s.steps, alpha=0.05)
    trainer.compile(optimizer=keras.optimizers.Adam(learning_rate=schedule), jit_compile=False)
    log = _loss_logger(s.steps, log_every)
    trainer.fit(
        corpus.train, epochs=1, steps_per_epoch=s.steps, verbose=0, callbacks=[log], shuffle=False
    )
    return net, log.losses, time.time() - log.start


def _metadata(s: PretrainSettings, corpus: _Corpus, losses: list[float], trained: dict):
    """The :class:`~ccat_tf.model_info.ModelInfo` of a training checkpoint, plus a
    ``pretrained`` block saying what the weights were trained on."""
    from ccat_tf.model_info import ModelInfo
    from ccat_tf.models import divisor
    from ccat_tf.settings import TrainSettings

    out_names = tuple(TASKS[s.task][0])
    generated = bool(s.corpus)
    run_name = f"pretrain_{s.task}_{s.model_size}"
    as_training = TrainSettings(
        model_size=s.model_size,
        input_channels="rgb",
        output_channels="alpha" if out_names == ("A",) else "rgb",
        crop_size=s.crop_size,
        batch_size=s.batch_size,
        learning_rate=s.learning_rate,
        seed=s.seed,
        epochs=s.steps,
        use_multi_resolution_training=False,
        augment=True,
        augment_rotations=True,  # degrade.py turns its crops by quarter turns too
        run_name=run_name,
    )
    what = f"generated {s.task} inputs" if generated else "input/"
    truth = "clean images" if generated else "ground_truth/"
    return ModelInfo(
        input_channels=("R", "G", "B"),
        output_channels=out_names,
        input_transform=("linear",) * 3,
        output_transform=("linear",) * len(out_names),
        divisor=divisor(s.model_size),
        residual=out_names != ("A",),
        model_size=s.model_size,
        step=s.steps,
        total_steps=s.steps,
        epochs=s.steps,
        batch_size=s.batch_size,
        crop_size=s.crop_size,
        stage=2,
        run_name=run_name,
        dataset={
            "input": f"{corpus.source} ({what})",
            "ground_truth": f"{corpus.source} ({truth})",
            "frames": "",
            "width": s.crop_size,
            "height": s.crop_size,
            "hdr": False,
        },
        last_loss=float(np.mean(losses[-50:])) if losses else None,
        val_psnr=trained["val_psnr"],
        settings=as_training.to_dict(),
        extra={"pretrained": _pretrained_block(s, corpus, trained)},
    )


def _pretrained_block(s: PretrainSettings, corpus: _Corpus, trained: dict) -> dict:
    return {
        "task": s.task,
        "corpus": "generated" if s.corpus else "pairs",
        "images": corpus.names,
        "tfds": corpus.tfds,
        "steps": s.steps,
        "crop_size": s.crop_size,
        "batch_size": s.batch_size,
        "learning_rate": s.learning_rate,
        "loss": trained["loss"],
        "seed": s.seed,
        "train_seconds": trained["train_seconds"],
        "val_psnr_synthetic": trained["val_psnr"],
        "val_psnr_baseline": trained["baseline"],
    }


def describe(path: str | Path) -> str:
    """One JSON line saying what a shipped weight file was trained on."""
    from ccat_tf import catfile

    meta = catfile.read_metadata(path)
    return json.dumps({"file": Path(path).name, **meta.get("pretrained", {})}, default=str)
