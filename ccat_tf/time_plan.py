"""Training for a time limit: measure the speed, choose the model size, plan the steps.

With ``time_limit`` set, a new run (1) times a few real training steps of each multi-resolution
stage (the same training loop and crops as the run, so the one trace of the step is shared),
then restores the network and optimizer as they were; (2) with ``model_size: auto`` picks the
largest preset that still trains :data:`AUTO_MIN_STEPS` steps in the time left (sizes it did not
time are predicted from the convolutions' FLOPs), since at a fixed CPU time a small network
trained for many steps beats a large one trained for few; (3) plans the total steps so that the
stages (fractions of the steps) and the learning-rate decay end on time; and a
:class:`Deadline` callback ends the run at the limit should the machine slow down, after which
the final .cat is written as for any run.
"""

from __future__ import annotations

import time
from dataclasses import replace

import keras
import numpy as np

#: Steps a preset must be able to train within the limit for ``auto`` to choose it (small is
#: the fallback). At equal CPU time small (1305 steps) beat medium (240 steps) by 0.3-6 dB in
#: issue 12's measurements; medium needs many steps to pay for its 5x cost per step.
AUTO_MIN_STEPS = {"medium": 6000, "large": 12000}
#: Timed steps per stage (after one untimed step, which traces the training step).
TIMED_STEPS = 2
#: Share of the time kept for what a run does besides steps (contact sheets, progress files,
#: checkpoints) in the first plan; :class:`Replanner` then corrects the plan from the speed the
#: run really has (overheads and machine load included).
OVERHEAD_SHARE = 0.05
#: How many times the plan is corrected during the first stage, at evenly spaced steps.
REPLANS = 4
#: A run's crops are made for up to this many times its first plan (a faster machine than
#: measured may plan more steps; the run stops at its total whatever the crops could give).
MAX_GROWTH = 4
MIN_RESERVE_SECONDS = 3.0
MIN_STEPS = 10


def measure(loop, net, optimizer, cache, plan, in_ch: int, out_ch: int) -> tuple[float, ...]:
    """Seconds per step in each stage of ``plan``'s scales, timed with the run's training loop
    (a :class:`~ccat_tf.train_loop.StepLoop`, so the one trace of the step is shared); the
    network's weights, every optimizer variable and the weights' moving average are restored
    afterwards."""
    from ccat_tf.dataset import make_tf_dataset

    steps = 1 + TIMED_STEPS
    stages = len(set(plan.stage_scales))
    bounds = tuple(min(i, stages - 1) * steps for i in range(3))
    probe = replace(plan, stage_bounds=bounds)
    weights = net.get_weights()
    slots = [v.numpy() for v in optimizer.variables]
    average = loop.average.state() if loop.average is not None else None
    stamps = _Stamps()
    ds = make_tf_dataset(cache, probe, 0, steps * stages, in_ch, out_ch)
    try:
        loop.fit(ds, steps * stages, [stamps], plan.batch_size)
    finally:
        net.set_weights(weights)
        for var, value in zip(optimizer.variables, slots, strict=True):
            var.assign(value)
        if average is not None:
            loop.average.load(*average)
    return stage_times(np.diff(np.array(stamps.times)), stages, steps)


def stage_times(times, stages: int, steps: int) -> tuple[float, ...]:
    """Median seconds per step of each stage from the ``steps`` step times of each, leaving
    out each stage's first step (the trace of the training step, a new crop size's setup)."""
    out = []
    for s in range(stages):
        chunk = times[s * steps + 1 : (s + 1) * steps]
        out.append(float(np.median(chunk)) if len(chunk) else float(np.mean(times)))
    return tuple(out)


class _Stamps(keras.callbacks.Callback):
    """Records when training began and when each step ended."""

    def __init__(self):
        super().__init__()
        self.times: list[float] = []

    def on_train_begin(self, logs=None):
        self.times.append(time.perf_counter())

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter())


def steps_for(
    seconds: float, step_seconds: tuple[float, ...], shares: tuple[float, ...], done: int = 0
) -> int:
    """Total steps T such that the steps from ``done`` (still in the first stage) to T fit in
    ``seconds``, stage ``i`` taking ``shares[i]`` of the T steps at ``step_seconds[i]`` each:
    ``T * sum(share * t) - done * t0 = seconds``."""
    per_step = sum(s * t for s, t in zip(shares, step_seconds, strict=False))
    total = (seconds + done * step_seconds[0]) / max(per_step, 1e-6)
    return max(MIN_STEPS, done + 1, int(total))


def choose_size(
    measured_size: str,
    step_seconds: tuple[float, ...],
    seconds: float,
    shares: tuple[float, ...],
    channels: tuple[int, int],
) -> tuple[str, str]:
    """``(size, why)`` for ``model_size: auto`` from the speed measured with ``measured_size``;
    other sizes' steps are that speed scaled by their FLOPs (per pixel, so at any crop)."""
    best, why = (
        measured_size,
        f"{measured_size} would train {steps_for(seconds, step_seconds, shares)} steps",
    )
    for size in ("medium", "large"):
        ratio = flops(size, channels) / flops(measured_size, channels)
        n = steps_for(seconds, tuple(t * ratio for t in step_seconds), shares)
        if n < AUTO_MIN_STEPS[size]:
            why += f"; {size} only ~{n} (< {AUTO_MIN_STEPS[size]})"
            break
        best, why = size, f"{size} would train {n} steps (>= {AUTO_MIN_STEPS[size]})"
    return best, why


def flops(size: str, channels: tuple[int, int], crop: int = 64) -> float:
    from ccat_tf.models import build_model, forward_flops

    return float(forward_flops(build_model(channels[0], channels[1], size), crop, crop))


class Replanner(keras.callbacks.Callback):
    """Corrects a time-limited run's plan while it runs: in its first stage ``REPLANS`` times,
    then as often in its last stage, it passes the seconds per step the run really takes in that
    stage so far (overheads and load included; each stage's first step, a new crop size's
    setup, left out) to ``replan(step, seconds_per_step, stage)``; at every step it stops
    training once ``total()`` steps are done (the data set is made longer than the plan).

    The first stage's corrections move the stages with the total; the last stage's change only
    its own length, the one stage whose speed the start could not yet see (two timed steps of a
    full-size crop were 10-15% off in either direction: runs ended 12-27 s early or met the
    deadline before their learning rate had decayed)."""

    def __init__(self, first_step: int, total, stage_of, last_stage: int, replan):
        super().__init__()
        self.first_step, self.total = first_step, total
        self.stage_of, self.last_stage, self.replan = stage_of, last_stage, replan
        self.every = max(5, (total() - first_step) // (4 * (REPLANS + 1)))
        self.stage = self.t0 = self.s0 = None

    def on_train_batch_end(self, batch, logs=None):
        step = self.first_step + batch + 1
        now = time.monotonic()
        stage = self.stage_of(step - 1)
        if stage != self.stage:  # the run's or a stage's first step: timed from its end
            self.stage, self.t0, self.s0 = stage, now, step
        elif stage in (0, self.last_stage) and (step - self.s0) % self.every == 0:
            self.replan(step, (now - self.t0) / (step - self.s0), stage)
        if step >= self.total():
            self.model.stop_training = True


class Deadline(keras.callbacks.Callback):
    """Stops training once ``deadline`` (time.monotonic) has passed, recording
    ``stop_reason = "time"`` in the run's context."""

    def __init__(self, ctx, deadline: float):
        super().__init__()
        self.ctx, self.deadline = ctx, deadline

    def on_train_batch_end(self, batch, logs=None):
        if time.monotonic() >= self.deadline and self.ctx.stop_reason is None:
            self.ctx.stop_reason = "time"
            self.ctx.stop_detail = "the time limit was reached"
            self.model.stop_training = True


def reserve_seconds(limit_seconds: float) -> float:
    """Seconds kept at the end of the limit for the final checkpoint."""
    return max(MIN_RESERVE_SECONDS, 0.02 * limit_seconds)
