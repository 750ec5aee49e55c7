"""Weight averaging: the network a run hands out is an exponential moving average of its weights.

Training moves the weights with every batch of crops; on a few pairs the network at any one step
is a noisy sample around where training is heading, and a validation PSNR taken every few hundred
steps swings by 1-3 dB between checkpoints (a 3000-step matte: 29.5, 28.0, 30.4, 27.8, 32.0,
33.2 dB at its last six; averaged, 27.3, 27.5, 28.0, 29.6, 32.4, 33.0). The average of the
recent weights (Polyak averaging) is steady, so a checkpoint, a best checkpoint, a stopped run
and the guard's check of validation all see the trend rather than one step's luck:
training keeps stepping the raw weights, and everything that uses the network (validation, the
guard's check of it, every .cat, the best checkpoint, previews, contact sheets) sees the average.

The decay follows TensorFlow's ``tf.train.ExponentialMovingAverage`` with ``num_updates``:
``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so a short run averages over its last
few steps rather than dragging its first (random or least-squares) weights along. The averages
and ``n`` are variables updated inside the compiled training step (on the devices, in
cross-replica context after every replica's update: all replicas hold the same weights, so every
copy of an average gets the same value), kept in the progress file and in the guard's snapshots,
so a resume or a rollback continues exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

#: The warm-up: the decay after n updates is min(decay, (1 + n) / (WARMUP_OFFSET + n)).
WARMUP_OFFSET = 10.0


class WeightAverage:
    """Moving averages of ``variables`` (a network's trainable Keras variables); create it
    under the run's distribution strategy scope, after the weights are loaded."""

    def __init__(self, variables, decay: float):
        import tensorflow as tf

        if not 0.0 < decay < 1.0:
            raise ValueError(f"weight_average must be above 0 and below 1, not {decay}")
        self.variables = list(variables)
        self.decay = float(decay)
        self.shadow = [
            tf.Variable(v.numpy(), trainable=False, name=f"average_{i}")
            for i, v in enumerate(self.variables)
        ]
        self.count = tf.Variable(0, trainable=False, dtype=tf.int64, name="average_count")

    def update(self) -> None:
        """One step of the average (inside the training step, after the optimizer's update)."""
        import tensorflow as tf

        self.count.assign_add(1)
        n = tf.cast(self.count, tf.float32)
        d = tf.minimum(self.decay, (1.0 + n) / (WARMUP_OFFSET + n))
        for avg, var in zip(self.shadow, self.variables, strict=True):
            avg.assign(d * avg + (1.0 - d) * tf.convert_to_tensor(var.value))

    # ---- state: progress files and the guard's snapshots -----------------------------------
    def state(self) -> tuple[int, list[np.ndarray]]:
        return int(self.count.numpy()), [np.array(a.numpy(), copy=True) for a in self.shadow]

    def load(self, count: int, arrays: list[np.ndarray]) -> None:
        if len(arrays) != len(self.shadow):
            raise ValueError(f"{len(arrays)} averages for {len(self.shadow)} weights")
        for avg, value in zip(self.shadow, arrays, strict=True):
            avg.assign(value)
        self.count.assign(int(count))

    def reset(self) -> None:
        """Start again from the current weights (a new run's loaded weights, an old progress
        file without averages)."""
        self.load(0, [v.numpy() for v in self.variables])

    # ---- using it --------------------------------------------------------------------------
    @contextlib.contextmanager
    def in_network(self) -> Iterator[None]:
        """The averages in the network for the block; the trained weights back after it."""
        raw = [np.array(v.numpy(), copy=True) for v in self.variables]
        for var, avg in zip(self.variables, self.shadow, strict=True):
            var.assign(avg.numpy())
        try:
            yield
        finally:
            for var, value in zip(self.variables, raw, strict=True):
                var.assign(value)


def in_network(average: WeightAverage | None):
    """:meth:`WeightAverage.in_network`, or nothing to do without averaging."""
    return average.in_network() if average is not None else contextlib.nullcontext()
