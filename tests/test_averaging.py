"""The moving average of the weights (ccat_tf.averaging): its warm-up, what a run hands out and
what its progress file keeps, a rollback, and progress files from before it."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import tiny_settings

import ccat_tf
from ccat_tf import state
from ccat_tf.averaging import WeightAverage


def test_the_average_warms_up_as_tensorflows_and_the_network_gets_its_weights_back():
    var = keras.Variable(np.zeros(3, np.float32))
    average = WeightAverage([var], 0.9)
    expected = np.zeros(3)
    for n in range(1, 30):
        var.assign(np.full(3, float(n), np.float32))
        average.update()
        d = min(0.9, (1 + n) / (10 + n))  # tf.train.ExponentialMovingAverage's num_updates
        expected = d * expected + (1 - d) * n
    count, (kept,) = average.state()
    assert count == 29 and np.allclose(kept, expected, rtol=1e-6)
    assert 20 < expected[0] < 28  # the last few steps dominate, not the first weights
    with pytest.raises(RuntimeError), average.in_network():
        assert np.allclose(var.numpy(), expected, rtol=1e-6)
        raise RuntimeError  # the trained weights come back even so
    assert np.array_equal(var.numpy(), np.full(3, 29.0, np.float32))
    average.reset()
    assert average.state()[0] == 0 and np.array_equal(average.state()[1][0], var.numpy())
    with pytest.raises(ValueError, match="above 0 and below 1"):
        WeightAverage([var], 1.0)


def _trainable(net) -> list[np.ndarray]:
    return [np.asarray(w.numpy()) for w in net.trainable_weights]


@pytest.mark.parametrize("decay", [0.999, 0.0])
def test_a_run_hands_out_the_average_and_its_progress_keeps_both(tiny_dataset, tmp_path, decay):
    """The .cat holds the averaged weights; the .ost the trained ones (training resumes from
    them) and the averages with their count; with weight_average 0 the .cat is the last step."""
    dd = tmp_path / "dd"
    s = tiny_settings(tiny_dataset, dd, epochs=6, checkpoint_interval=100, weight_average=decay)
    net = ccat_tf.load_model(ccat_tf.train(s, progress_bar=False))
    progress = state.load_latest_progress(dd)
    assert progress.step == progress.total_steps == 12
    trained = [
        w for w, v in zip(progress.weights, net.weights, strict=True) if v.trainable
    ]  # get_weights() order: the trainable ones among all
    if decay:
        assert progress.average_count == 12
        for cat, avg in zip(_trainable(net), progress.average, strict=True):
            assert np.array_equal(cat, avg)
        assert any(not np.allclose(a, t) for a, t in zip(progress.average, trained, strict=True))
    else:
        assert progress.average is None
        for cat, raw in zip(_trainable(net), trained, strict=True):
            assert np.array_equal(cat, raw)


@pytest.mark.parametrize("kept", [True, False])
def test_a_resumed_run_continues_its_average_or_starts_one_at_older_progress(
    tiny_dataset, tmp_path, kept
):
    """An .ost round-trips its averages and a longer run continues them; an .ost without them
    (a run from before averaging) resumes with the average starting at its weights."""
    dd = tmp_path / "dd"
    s = tiny_settings(tiny_dataset, dd, epochs=6, checkpoint_interval=100)
    ccat_tf.train(s, progress_bar=False)
    progress = state.load_latest_progress(dd)
    if not kept:
        progress.average, progress.average_count = None, 0
    again = state.load_progress_file(state.save_progress(dd, progress))
    assert again.average_count == (12 if kept else 0)
    if kept:
        for a, b in zip(again.average, progress.average, strict=True):
            assert np.array_equal(a, b)
    else:
        assert again.average is None
    ccat_tf.train({**s, "epochs": 10}, progress_bar=False)  # epochs: the same run, 8 steps more
    longer = state.load_latest_progress(dd)
    assert longer.step == 20  # resumed at 12 (a new entry of the run table)
    assert longer.average_count == (20 if kept else 8)
