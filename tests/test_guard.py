"""guard.py: divergence/collapse detection and rollback; the best checkpoint; their resume state."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import tiny_settings

import ccat_tf
from ccat_tf import catfile, guard, runs, state
from ccat_tf.callbacks import RunContext
from ccat_tf.cli import main
from ccat_tf.guard import DivergenceGuard, LossWatch
from ccat_tf.schedule import WarmupCosine

# ---- the detector on synthetic loss curves ---------------------------------------------------


def curve(steps, *, cv=0.5, seed=0, stages=(0, 1000, 2000), levels=(0.5, 0.8, 1.0)):
    """A falling loss with lognormal batch noise; the level jumps at each stage's first step."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps)
    stage = np.searchsorted(np.asarray(stages), t, side="right") - 1
    mean = (0.02 + 0.1 * np.exp(-t / 300)) * np.asarray(levels)[stage]
    s = math.sqrt(math.log(1 + cv * cv))
    return mean * rng.lognormal(-s * s / 2, s, steps), stage


def first_alarm(watch, losses, stages):
    for i, (loss, stage) in enumerate(zip(losses, stages, strict=True)):
        if watch.update(float(loss), int(stage)):
            return i
    return None


@pytest.mark.parametrize("levels", [(0.5, 0.8, 1.0), (3.0, 1.5, 1.0), (1.0, 2.5, 6.0)])
@pytest.mark.parametrize("cv", [0.3, 1.0])
def test_stage_changes_and_noise_do_not_trigger(levels, cv):
    for seed in range(3):
        losses, stages = curve(3000, cv=cv, seed=seed, levels=levels)
        assert first_alarm(LossWatch(20), losses, stages) is None


def test_a_blow_up_triggers_within_a_few_steps():
    losses, stages = curve(3000)
    losses[2500:] *= 50
    assert 2500 <= first_alarm(LossWatch(20), losses, stages) <= 2505


def test_a_slow_collapse_triggers_and_a_small_wobble_does_not():
    losses, stages = curve(3000)
    wobble = losses.copy()
    wobble[2500:] *= 1.4
    assert first_alarm(LossWatch(20), wobble, stages) is None
    losses[2400:] *= np.minimum(1 + np.arange(600) / 100, 4.0)  # x4 over 300 steps
    assert 2400 < first_alarm(LossWatch(20), losses, stages) < 2700


def test_nothing_is_judged_before_the_ema_settles():
    watch = LossWatch(20)
    assert [watch.update(x, 0) for x in [0.01] * 50 + [10.0] * 9] == [False] * 59
    assert watch.state == "warming" and watch.best is None


def test_the_watch_continues_exactly_after_a_round_trip_through_json():
    losses, stages = curve(1200)
    a = LossWatch(20)
    for x, s in zip(losses[:700], stages[:700], strict=True):
        a.update(float(x), int(s))
    b = LossWatch(20)
    b.load(json.loads(json.dumps(a.to_dict())))
    for x, s in zip(losses[700:], stages[700:], strict=True):
        assert a.update(float(x), int(s)) == b.update(float(x), int(s))
    assert a.to_dict() == b.to_dict()
    fresh = LossWatch(20)
    for bad in ({"window": 20, "n": "7"}, {"window": 30}, [], {"window": 20, "stage": 0}):
        fresh.load(bad)
        assert fresh.to_dict() == LossWatch(20).to_dict()


# ---- the callback on a small Keras model -----------------------------------------------------


def fake_context(tmp_path, **kw) -> RunContext:
    runs.start_run(tmp_path, {}, 0, 1000)
    plan = types.SimpleNamespace(stage_of=lambda step: 0)
    fields = dict(
        data_directory=tmp_path,
        run_id=1,
        run_name="run1",
        start_step=0,
        total_steps=1000,
        info=None,
        plan=plan,
        cache=None,
        settings=None,
        saver=None,
    )
    return RunContext(**(fields | kw))


def fake_trainer():
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    schedule = WarmupCosine(1e-3, 1000)
    optimizer = keras.optimizers.Adam(learning_rate=schedule)
    optimizer.build(net.trainable_variables)
    return types.SimpleNamespace(network=net, optimizer=optimizer), schedule


def set_state(trainer, value: float, iterations: int, average=None) -> None:
    for w in trainer.network.weights:
        w.assign(np.full(w.shape, value, np.float32))
    for v in trainer.optimizer.variables[1:]:
        v.assign(np.full(v.shape, value, np.float32))
    trainer.optimizer.iterations.assign(iterations)
    if average is not None:  # the weights' moving average, its count the value too
        average.load(int(value), [np.full(a.shape, -value, np.float32) for a in average.shadow])


def started_guard(tmp_path, window: int, averaged: bool = False):
    """(trainer, schedule, ctx, guard): a DivergenceGuard on a fake trainer, training begun
    (with a moving average of the weights if ``averaged``)."""
    from ccat_tf.averaging import WeightAverage

    trainer, schedule = fake_trainer()
    average = WeightAverage(trainer.network.trainable_variables, 0.9) if averaged else None
    ctx = fake_context(tmp_path, schedule=schedule, average=average)
    cb = DivergenceGuard(ctx, window=window)
    cb.set_model(trainer)
    cb.on_train_begin()
    return trainer, schedule, ctx, cb


def feed(cb, first_step, losses, on_step=None):
    for i, loss in enumerate(losses):
        if on_step:
            on_step(first_step + i)
        cb.on_train_batch_end(first_step + i - 1, {"loss": loss})


def test_rollback_restores_weights_and_slots_keeps_the_step_and_halves_the_rate(tmp_path, capsys):
    trainer, schedule, ctx, cb = started_guard(tmp_path, window=10, averaged=True)
    average = ctx.average
    warm = cb._warm_end
    rng = np.random.default_rng(0)
    # Steady training: the weights "are" the step number, so the restored state names its step.
    feed(
        cb,
        1,
        0.01 * (1 + 0.2 * rng.random(warm + 80)),
        lambda s: set_state(trainer, s, s, average),
    )
    good = cb.good.step
    assert warm < good <= warm + 80 and cb.pending.step > good
    set_state(trainer, 999.0, 5000, average)  # a blow-up: the loss jumps
    feed(cb, warm + 81, [5.0, 5.0, 5.0])
    assert ctx.rollbacks == 1 and ctx.lr_scale == 0.5
    assert float(schedule.scale.numpy()) == 0.5
    assert all(np.all(w == good) for w in trainer.network.get_weights())
    assert all(np.all(v.numpy() == good) for v in trainer.optimizer.variables[1:])
    count, kept = average.state()  # the average goes back with them
    assert count == good and all(np.all(a == -good) for a in kept)
    assert int(trainer.optimizer.iterations.numpy()) == 5000  # the step count runs on
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x]
    assert line.startswith(f"ccat-tf: step {warm + 81}: smoothed loss rose to ")
    assert line.endswith(f"rolled back to step {good}, learning rate now x0.5")
    (record,) = runs.load_runs(tmp_path)[0]["rollbacks"]
    assert (record["step"], record["to_step"], record["lr_scale"]) == (warm + 81, good, 0.5)


def test_rollbacks_are_capped(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(guard, "MAX_ROLLBACKS", 2)
    trainer, schedule, ctx, cb = started_guard(tmp_path, window=5)
    step = 1
    for _ in range(4):  # each round: settle, then blow up
        feed(cb, step, [0.01] * 40 + [10.0])
        step += 41
    assert ctx.rollbacks == 2 and ctx.lr_scale == 0.25
    assert len(runs.load_runs(tmp_path)[0]["rollbacks"]) == 2
    err = capsys.readouterr().err
    assert err.count("rolled back to step") == 2
    assert err.count("2 rollbacks already, continuing as is") == 1


def test_a_validation_collapse_rolls_back_to_the_last_good_checkpoint(tmp_path, capsys):
    trainer, schedule, ctx, cb = started_guard(tmp_path, window=5)
    set_state(trainer, 1.0, 100)
    ctx.val_psnr = 30.0
    assert not cb.check_validation(100)  # the first checkpoint: a validated snapshot
    ctx.best_val_psnr, ctx.best_step = 30.0, 100
    set_state(trainer, 2.0, 200)
    ctx.val_psnr = 28.5  # within 3 dB: fine, but not kept (more than 1 dB below the best)
    assert not cb.check_validation(200)
    set_state(trainer, 3.0, 300)
    ctx.val_psnr = 24.0
    assert cb.check_validation(300)
    assert all(np.all(w == 1.0) for w in trainer.network.get_weights())
    err = capsys.readouterr().err
    assert (
        "validation PSNR fell to 24.00 dB (best 30.00 dB at step 100): rolled back to step 100"
        in err
    )
    assert ctx.rollbacks == 1 and ctx.lr_scale == 0.5


def test_nan_losses_are_left_to_the_non_finite_guard(tmp_path):
    trainer, schedule, ctx, cb = started_guard(tmp_path, window=5)
    feed(cb, 1, [0.01] * 40 + [math.nan, math.inf] * 10)
    assert ctx.rollbacks == 0 and cb.watch.n > 0


def test_persistent_state_round_trips_and_refuses_garbage(tmp_path):
    trainer, schedule, ctx, cb = started_guard(tmp_path, window=5)
    feed(cb, 1, [0.01] * 40)
    ctx.lr_scale, ctx.rollbacks, ctx.best_val_psnr, ctx.best_step = 0.25, 2, 31.5, 40
    saved = json.loads(json.dumps(ctx.persistent_state()))
    assert saved["loss_watch"]["n"] == cb.watch.n
    _, schedule2 = fake_trainer()
    again = fake_context(tmp_path / "b", schedule=schedule2)
    again.restore_persistent_state(saved)
    assert (again.lr_scale, again.rollbacks, again.best_val_psnr, again.best_step) == (
        0.25,
        2,
        31.5,
        40,
    )
    assert float(schedule2.scale.numpy()) == 0.25
    assert DivergenceGuard(again, window=5).watch.to_dict() == cb.watch.to_dict()
    bad = fake_context(tmp_path / "c")
    bad.restore_persistent_state(
        {"lr_scale": 7, "rollbacks": -1, "best_val_psnr": "x", "best_step": 3, "loss_watch": 5}
    )
    assert (bad.lr_scale, bad.rollbacks, bad.best_val_psnr, bad.loss_watch) == (1.0, 0, None, {})
    bad.restore_persistent_state(None)
    assert bad.persistent_state()["lr_scale"] == 1.0


# ---- end to end -------------------------------------------------------------------------------


class BlowUp(keras.callbacks.Callback):
    """At step ``at``, multiply every kernel of the network by ``factor``."""

    def __init__(self, at: int, factor: float):
        super().__init__()
        self.at, self.factor, self.losses = at, factor, []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))
        if batch + 1 == self.at:
            for w in self.model.network.weights:
                if "kernel" in w.path:
                    w.assign(w.numpy() * self.factor)


def summary_scalars(folder: Path, tag: str) -> dict[int, float]:
    """``{step: value}`` of ``tag`` in a run's event files (read_summaries keeps its own tags)."""
    import tensorflow as tf

    from ccat_tf import summary

    found = {}
    for path in folder.glob("events.out.tfevents.*"):
        for event in summary._events(path, None, tf):
            for v in event.summary.value:
                if v.tag == tag:
                    found[int(event.step)] = summary._tensor_scalar(v.tensor, tf)
    return found


@pytest.mark.parametrize("loss", ["mse", "mse+mae"])
def test_a_forced_divergence_is_rolled_back_and_recorded(
    tiny_dataset, tmp_path, capfd, monkeypatch, loss
):
    monkeypatch.setattr(guard, "window_for", lambda total: 8)
    dd = tmp_path / "dd"
    # Learning-rate warm-up 10 steps, then 3 windows to settle: the first snapshot is at step
    # 35, the rollback target from step 43 on.
    blow = BlowUp(at=48, factor=3.0)
    settings = tiny_settings(
        tiny_dataset,
        dd,
        epochs=30,
        checkpoint_interval=100,
        contact_sheet_interval=100,
        use_multi_resolution_training=False,
        loss=loss,
    )
    ccat_tf.train(settings, callbacks=[blow], progress_bar=False)
    losses = np.asarray(blow.losses)
    before = losses[38:48].mean()
    assert len(losses) == 60 and losses[48] > 20 * before  # it did blow up
    (run,) = ccat_tf.list_runs(dd)
    (record,) = run["rollbacks"]
    assert 49 <= record["step"] <= 51 and record["to_step"] < 48
    assert "smoothed loss rose to" in record["reason"]
    # Back near the pre-blow-up level, and it stays there.
    assert losses[-8:].mean() < 2 * before
    err = capfd.readouterr().err
    assert f"ccat-tf: step {record['step']}: smoothed loss rose to" in err
    assert f"rolled back to step {record['to_step']}" in err
    assert summary_scalars(dd / "run1", "rollback") == {record["step"]: 1.0}
    scale = summary_scalars(dd / "run1", "lr_scale")[record["step"]]
    assert scale == record["lr_scale"]
    assert main(["runs", str(dd)]) == 0
    header, _, row = capfd.readouterr().out.splitlines()
    cells = dict(zip(re.split(r"\s{2,}", header), re.split(r"\s{2,}", row), strict=True))
    assert (cells["name"], cells["rollbacks"], cells["best val PSNR"]) == ("run1", "1", "-")
    extra = progress_extra(dd)
    if extra is not None:
        assert (extra["rollbacks"], extra["lr_scale"]) == (1, record["lr_scale"])
        # A resume (more epochs) continues at the gentler rate, the rollback still counted.
        probe = ScaleProbe()
        ccat_tf.train(settings | {"epochs": 35}, callbacks=[probe], progress_bar=False)
        assert probe.scale == record["lr_scale"]
        assert progress_extra(dd)["rollbacks"] == 1


class ScaleProbe(keras.callbacks.Callback):
    """The learning-rate schedule's scale when fit() starts."""

    def on_train_begin(self, logs=None):
        schedule = self.model.optimizer._learning_rate
        self.scale = float(schedule.scale.numpy()) if hasattr(schedule, "scale") else None


def progress_extra(dd: Path) -> dict | None:
    """What the progress file keeps of RunContext.persistent_state (None until training.py
    stores it)."""
    if "extra" not in {f.name for f in dataclasses.fields(state.Progress)}:
        return None
    return state.load_latest_progress(dd).extra or None


def test_the_best_checkpoint_is_the_highest_validation_psnr(tiny_dataset, tmp_path, capsys):
    dd = tmp_path / "dd"
    settings = tiny_settings(
        tiny_dataset, dd, epochs=20, checkpoint_interval=10, validation_frames="5"
    )
    ccat_tf.train(settings, progress_bar=False)
    psnr = {}
    for cat in dd.glob("run1.step*.cat"):
        meta = catfile.read_metadata(cat)
        psnr[meta["step"]] = meta["val_psnr"]
    assert sorted(psnr) == [10, 20, 30, 40]
    best_step = min(psnr, key=lambda s: (-psnr[s], s))  # the first of equals
    best = catfile.read_metadata(dd / "run1.best.cat")
    assert (best["step"], best["val_psnr"]) == (best_step, psnr[best_step])
    (run,) = ccat_tf.list_runs(dd)
    assert (run["best_step"], run["best_val_psnr"]) == (best_step, psnr[best_step])
    assert run.get("rollbacks") in (None, [])  # the stage changes did not trigger anything
    # The step checkpoints stay what a Data Directory loads.
    assert catfile.latest_good_checkpoint(dd).name == "run1.step0000040.cat"
    assert main(["runs", str(dd)]) == 0
    assert f"{psnr[best_step]:.2f} dB @ {best_step}" in capsys.readouterr().out
    assert main(["info", str(dd / "run1.best.cat")]) == 0
    out = capsys.readouterr().out
    assert f"best checkpoint (highest validation PSNR) at step {best_step}" in out
    assert main(["info", str(dd)]) == 0
    out = capsys.readouterr().out
    assert f"run1.best.cat: best checkpoint (highest validation PSNR) at step {best_step}" in out
    assert "step 40 of 40" in out
    # A resume (more epochs) continues from the best so far: a run2.best.cat only if it beats it.
    ccat_tf.train(settings | {"epochs": 25}, progress_bar=False)
    psnr[50] = catfile.read_metadata(dd / "run2.step0000050.cat")["val_psnr"]
    extra = progress_extra(dd)
    if extra is not None:
        overall = min(psnr, key=lambda s: (-psnr[s], s))
        assert (extra["best_step"], extra["best_val_psnr"]) == (overall, psnr[overall])
        assert (dd / "run2.best.cat").exists() == (overall == 50)
