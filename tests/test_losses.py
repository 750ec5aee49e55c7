"""The per-pixel losses (ccat_tf.losses): what each one minimises, and its pixel-unit size."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from ccat_tf import losses
from ccat_tf.errors import SettingsError
from ccat_tf.settings import TrainSettings


@pytest.mark.parametrize("loss", losses.LOSSES)
@pytest.mark.parametrize("size", [0.0, 1e-5, 0.003, 0.05, 0.4, 2.0])
def test_pixel_units_is_the_size_of_an_error_that_is_the_same_everywhere(loss, size):
    signs = np.where(np.arange(2 * 8 * 8 * 3) % 2, 1.0, -1.0).reshape(2, 8, 8, 3)
    value = float(tf.reduce_mean(losses.pixel_error(loss, tf.constant(size * signs, tf.float32))))
    assert losses.pixel_units(loss, value) == pytest.approx(size, rel=1e-5, abs=1e-9)


def best_constant(loss: str, truth: np.ndarray) -> float:
    """The constant answer that minimises ``loss`` against ``truth`` (gradient descent)."""
    c = tf.Variable(0.3)
    optimizer = tf.keras.optimizers.Adam(0.01)
    t = tf.constant(truth)

    @tf.function  # one graph for the 1500 steps: the three descents take ~1 s of CPU, not eager's tens
    def descend():
        for _ in tf.range(1500):
            with tf.GradientTape() as tape:
                value = tf.reduce_mean(losses.pixel_error(loss, c - t))
            optimizer.apply_gradients([(tape.gradient(value, c), c)])

    descend()
    return float(c.numpy())


def test_the_mixed_loss_answers_an_uncertain_pixel_between_the_median_and_the_mean():
    """A fifth of the truths are +0.5: mse's answer is the mean (0.1), mae's the median (0),
    mse+mae's where 2 (c - 0.1) + w (0.8 - 0.2) = 0: c = 0.1 - 0.3 w."""
    truth = np.zeros(1000, np.float32)
    truth[::5] = 0.5
    assert best_constant("mse", truth) == pytest.approx(0.1, abs=2e-3)
    assert best_constant("mae", truth) == pytest.approx(0.0, abs=5e-3)
    expected = 0.1 - 0.3 * losses.MIXED_MAE_WEIGHT
    assert best_constant("mse+mae", truth) == pytest.approx(expected, abs=2e-3)


def test_an_unknown_loss_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="unknown loss 'huber': one of mse, mae, mse\\+mae"):
        losses.check("huber")
    with pytest.raises(SettingsError, match="loss"):
        TrainSettings.from_mapping(
            {"input": "a.####.png", "ground_truth": "b.####.png"}, loss="l1"
        ).check()
