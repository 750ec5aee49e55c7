"""The per-pixel error each training step minimises (the ``loss`` setting), in one place.

* ``mse``: the squared error, what PSNR measures. An uncertain pixel's answer is the mean.
* ``mae``: the absolute error. An uncertain pixel's answer is the median, often no change.
* ``mse+mae``: the squared error plus :data:`MIXED_MAE_WEIGHT` x the absolute error. Below an
  error of half that weight (0.025 of the pixel range) the absolute term has the larger
  gradient, so small, noise-like residuals (a deblur's, a beauty smoothing's) keep being pushed
  to zero as with ``mae``, while large ones are weighed as with ``mse`` (the shape of the
  reverse Huber, "berHu", loss). Faint, uncertain detail (an upscale's) is pulled towards no
  change, as with ``mae``: a choice for cleanup fixes, not the default (benchmarks/RESULTS.md,
  "All 14 fixes: `mse+mae` is a choice").

Training (:mod:`ccat_tf.train_loop`), pretraining (:func:`ccat_tf.training._make_trainer`) and
the divergence guard's pixel-unit view of the loss (:func:`pixel_units`) all read it from here.
"""

from __future__ import annotations

import math

#: Every ``loss`` the settings accept (its default and help: ccat_tf.settings).
LOSSES = ("mse", "mae", "mse+mae")
#: ``mse+mae``'s weight of the absolute error (pixels in 0..1).
MIXED_MAE_WEIGHT = 0.05


def check(loss: str) -> str:
    """``loss`` itself, or ValueError naming the choices."""
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}: one of {', '.join(LOSSES)}")
    return loss


def pixel_error(loss: str, error):
    """The per-pixel loss of ``error`` (a tensor: prediction minus truth); average it yourself."""
    import tensorflow as tf

    check(loss)
    if loss == "mae":
        return tf.abs(error)
    if loss == "mse":
        return tf.square(error)
    return tf.square(error) + MIXED_MAE_WEIGHT * tf.abs(error)


def pixel_units(loss: str, value: float) -> float:
    """The mean loss ``value`` as an error size in pixel units: the size ``a`` of an error that
    is ``a`` at every pixel would have this loss (mae: itself; mse: its root; mse+mae: the
    positive root of ``a^2 + w*a = value``)."""
    check(loss)
    value = max(value, 0.0)
    if loss == "mae":
        return value
    if loss == "mse":
        return math.sqrt(value)
    w = MIXED_MAE_WEIGHT
    return 2.0 * value / (math.sqrt(w * w + 4.0 * value) + w)  # the root, without cancellation
