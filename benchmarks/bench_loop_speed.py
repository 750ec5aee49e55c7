"""Seconds per training step of one process (small, batch 4, crop 192, one resolution), to
compare the training loop across checkouts: ``PYTHONPATH=<checkout> python
benchmarks/bench_loop_speed.py`` (the median of the steps after the 5th); ``--set KEY=VALUE``
changes a training setting (e.g. ``--set precision=float32``)."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import keras
import numpy as np

import ccat_tf

PLATE = Path(__file__).resolve().parent.parent / "demo" / "bikes" / "plate" / "bikes.####.png"


class StepTimes(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times: list[float] = []

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    extra = {}
    for item in parser.parse_args().set:
        key, _, value = item.partition("=")
        try:
            extra[key] = json.loads(value)
        except json.JSONDecodeError:
            extra[key] = value
    timer = StepTimes()
    settings = dict(
        input=str(PLATE),
        ground_truth=str(PLATE),
        frames="1001-1006",
        data_directory=tempfile.mkdtemp(),
        model_size="small",
        batch_size=4,
        crop_size=192,
        epochs=60,
        use_multi_resolution_training=False,
        checkpoint_interval=1000,
        contact_sheet_interval=1000,
        validation_frames="",
    )
    settings.update(extra)
    ccat_tf.train(settings, callbacks=[timer], progress_bar=False)
    steps = np.diff(timer.times)[5:]
    print(
        f"{ccat_tf.__file__} {extra or ''}: median {np.median(steps):.3f} s/step, mean {steps.mean():.3f}, "
        f"{len(steps)} steps"
    )


if __name__ == "__main__":
    main()
