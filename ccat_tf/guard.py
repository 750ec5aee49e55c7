"""Training that converges and holds: detect a divergence or collapse, roll back, go gentler.

A run can go bad without a NaN: a learning rate too high for a late, flat part of the loss
kicks the weights out of their basin (long matte trainings fell to a constant output after ~2500
steps). :class:`LossWatch` follows each step's loss with exponential moving averages (EMA) and
calls it a divergence when the smoothed loss rises far above its best; :class:`DivergenceGuard`
(a Keras callback) keeps in memory the last good state (the network's weights and Adam's moments,
never the step counter) and, on a divergence or a validation PSNR that fell well below its best,
restores it and halves the learning-rate schedule's ``scale``. NaN and Inf losses are not its
business: :class:`~ccat_tf.callbacks.NonFiniteGuard` stops the run.

The loss watched is in pixel units (:func:`ccat_tf.losses.pixel_units`: the mean absolute
error, the root of the mean squared error, or the error size of ``mse+mae``'s mixed loss), so
the thresholds below mean the same for every ``loss``. The EMA is of the *log*
loss: a batch's loss is skewed (a few detailed crops cost many times a flat one), and in log
space that noise is near symmetric, so the EMA's spread is measurable and "doubled" is one fixed
distance. All of these must hold (measured on simulated loss curves of
10 000 and 2 000 steps with lognormal, gamma and flat-crop-mixture noise up to a 150%
coefficient of variation, stage changes of x0.5 to x2: no false alarm; a x2.5 jump found in
~10-40 steps, x100 in 2-4):

* the smoothed loss is :data:`REL_RISE` (2) x its best: a doubled error is visible, and normal
  noise of an EMA over :func:`window_for` (20-50) steps stays well inside it;
* the smoothed log loss is :data:`NOISE_RISE` (8) of its standard deviations above its best (a
  shot whose crops differ wildly, as mattes' do, has a noisy loss: only a larger rise counts);
* the smoothed loss is :data:`ABS_RISE` above its best (a near-perfect fit's wobble is no
  collapse);
* :data:`WARMUP_WINDOWS` (3) windows of steps have passed since the learning rate's warm-up
  ended, the multi-resolution stage began or the last rollback: a new resolution's crops have
  another loss level (and a well-started network's loss may rise while the rate warms up), so
  the best is forgotten at a stage change and taken again once the EMA has settled.

A snapshot is taken every window of steps while the smoothed loss is near its best (within half
the threshold); it becomes the rollback target only at the next such point, so a snapshot taken
as the weights went bad is never restored. Validation keeps one more: the state at the last
checkpoint whose PSNR was within :data:`PSNR_KEEP_DB` of the best, the target when the PSNR falls
:data:`PSNR_DROP_DB` (3 dB, a clearly visible loss; checkpoint-to-checkpoint noise is tenths of a
dB) below its best.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field

import numpy as np

from ccat_tf import losses, summary
from ccat_tf.callbacks import RunContext, StepCallback

#: The smoothed loss must reach this multiple of its best ...
REL_RISE = 2.0
#: ... be this much above it (training-space units: 0..1 pixels, log-encoded HDR) ...
ABS_RISE = 0.002
#: ... and this many standard deviations of the smoothed log loss above it.
NOISE_RISE = 8.0
#: Losses below this count as this (a perfect fit's log loss would be all noise).
LOSS_FLOOR = 1e-4
#: The loss's noise is measured over this many EMA windows (steadier than the EMA itself).
NOISE_WINDOWS = 4
#: A validation PSNR this far below the best checkpoint's is a collapse too (dB).
PSNR_DROP_DB = 3.0
#: A validated snapshot is taken at checkpoints within this of the best PSNR (dB).
PSNR_KEEP_DB = 1.0
#: The learning-rate schedule's scale is multiplied by this at each rollback.
LR_FACTOR = 0.5
#: After this many rollbacks the run just continues.
MAX_ROLLBACKS = 5
#: Steps the EMA needs after a start, stage change or rollback, in windows.
WARMUP_WINDOWS = 3


def window_for(total_steps: int) -> int:
    """The EMA's window (steps): 0.5% of the run, 20 to 50 steps."""
    return int(min(50, max(20, total_steps // 200)))


_STATS = ("n", "m", "v", "lm", "best", "best_sd", "best_lin")


class LossWatch:
    """The detector (pure Python): EMAs of the log loss and of the loss, the log loss's noise,
    and the best smoothed loss of the current stage."""

    def __init__(self, window: int):
        self.window = int(window)
        self.alpha = 2.0 / (self.window + 1)
        self.beta = self.alpha / NOISE_WINDOWS
        self.warmup = WARMUP_WINDOWS * self.window
        self.stage: int | None = None
        self.forget_best()
        self.restart()

    def restart(self) -> None:
        """Forget the averages, not the best (after a rollback; a new stage forgets both)."""
        self.n = 0  # steps since the restart
        self.m = 0.0  # EW sum of log(loss), debiased by 1 - (1 - alpha) ** n
        self.v = 0.0  # EW sum (rate beta) of the squared step of log(loss) from its EMA
        self.lm = 0.0  # EW sum of the loss itself (for the absolute rise and messages)

    def forget_best(self) -> None:
        self.best: float | None = None  # the best smoothed log loss
        self.best_sd = 0.0  # the smoothed log loss's standard deviation then
        self.best_lin = 0.0  # the smoothed loss then

    # --- the statistics -----------------------------------------------------------------
    def _mean(self, total: float, rate: float, n: int) -> float:
        return total / (1.0 - (1.0 - rate) ** n)

    @property
    def ema(self) -> float | None:
        return self._mean(self.m, self.alpha, self.n) if self.n else None

    @property
    def ema_lin(self) -> float | None:
        return self._mean(self.lm, self.alpha, self.n) if self.n else None

    @property
    def sd(self) -> float:
        """The EMA's standard deviation: the log loss's x sqrt(alpha / (2 - alpha))."""
        if self.n < 2:
            return 0.0
        var = self._mean(self.v, self.beta, self.n - 1)
        return math.sqrt(var * self.alpha / (2.0 - self.alpha))

    @property
    def armed(self) -> bool:
        return self.n >= self.warmup and self.best is not None

    @property
    def threshold(self) -> float:
        """How far above its best the smoothed log loss may go before it is a divergence."""
        return max(math.log(REL_RISE), NOISE_RISE * self.best_sd)

    @property
    def state(self) -> str:
        """``warming`` (too early to judge), ``healthy`` (near the best), ``rising`` (above half
        the threshold) or ``diverged``."""
        if not self.armed:
            return "warming"
        rise = self.ema - self.best
        if rise > self.threshold and self.ema_lin - self.best_lin > ABS_RISE:
            return "diverged"
        return "rising" if rise > self.threshold / 2 else "healthy"

    # --- each step ------------------------------------------------------------------------
    def update(self, loss: float, stage: int) -> bool:
        """Feed one step's (finite) loss; True if the run has diverged."""
        if stage != self.stage:  # the loss level moves with the crops' resolution
            self.stage = stage
            self.restart()
            self.forget_best()
        y = math.log(max(loss, LOSS_FLOOR))
        before = self.ema
        a = self.alpha
        self.n += 1
        self.m = (1.0 - a) * self.m + a * y
        self.lm = (1.0 - a) * self.lm + a * loss
        if before is not None:
            self.v = (1.0 - self.beta) * self.v + self.beta * (y - before) ** 2
        if self.n < self.warmup:
            return False
        if self.best is None or self.ema < self.best:
            self.best, self.best_sd, self.best_lin = self.ema, self.sd, self.ema_lin
            return False
        return self.state == "diverged"

    def why(self) -> str:
        return f"smoothed loss rose to {self.ema_lin:.4g} (best {self.best_lin:.4g})"

    # --- across a resume ------------------------------------------------------------------
    def to_dict(self) -> dict:
        state = {"window": self.window, "stage": self.stage}
        for key in _STATS:
            value = getattr(self, key)
            state[key] = value if value is None or math.isfinite(value) else None
        return state

    def load(self, state: dict) -> None:
        """Continue from :meth:`to_dict`'s dict (read from a progress file: anything malformed,
        or saved with another window, starts the watch afresh)."""
        if not isinstance(state, dict) or state.get("window") != self.window:
            return
        stage, values = state.get("stage"), [state.get(k) for k in _STATS]
        if not (stage is None or type(stage) is int) or type(values[0]) is not int:
            return
        if values[0] < 0 or not all(type(v) in (int, float) for v in values[1:4] + values[5:]):
            return
        if values[4] is not None and type(values[4]) not in (int, float):
            return
        self.stage = stage
        for key, value in zip(_STATS, values, strict=True):
            setattr(self, key, value if key == "n" or value is None else float(value))


@dataclass
class Snapshot:
    """The network's weights, the optimizer's slots (not its step counter) and the weights'
    moving average (if kept: ``(count, arrays)``) at ``step``."""

    step: int
    weights: list[np.ndarray] = field(repr=False)
    slots: list[np.ndarray] = field(repr=False)
    average: tuple | None = field(default=None, repr=False)


class DivergenceGuard(StepCallback):
    """Roll back to the last good state when the loss diverges or validation collapses.

    Runs right after :class:`~ccat_tf.callbacks.NonFiniteGuard`; the Data Directory writer asks
    :meth:`check_validation` after each checkpoint's validation. Its state that must survive a
    resume lives in the :class:`~ccat_tf.callbacks.RunContext` (``lr_scale``, ``rollbacks``,
    ``loss_watch``).
    """

    def __init__(self, ctx: RunContext, window: int | None = None):
        super().__init__(ctx)
        self.watch = LossWatch(window or window_for(ctx.total_steps))
        self.watch.load(ctx.loss_watch)
        self.good: Snapshot | None = None  # the rollback target
        self.pending: Snapshot | None = None  # becomes good at the next healthy point
        self.validated: Snapshot | None = None  # the last checkpoint with a good PSNR
        self._last_rollback: int | None = None
        self._gave_up = False
        self._warm_end = 0  # the learning rate's warm-up (on_train_begin)
        ctx.guard = self

    # --- Keras hooks ----------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        schedule = self.ctx.schedule
        self._warm_end = 0
        if schedule is not None:
            schedule.scale.assign(self.ctx.lr_scale)
            self._warm_end = int(schedule.warmup.numpy())
        if self.watch.state == "healthy":  # a resume from a good state: the first candidate
            self.pending = self.snapshot(self.ctx.start_step)

    def phase(self, step: int) -> int:
        """The multi-resolution stage of ``step``; -1 while the learning rate warms up (a
        well-started network's loss may rise as the rate grows: not the level to hold)."""
        return -1 if step <= self._warm_end else self.ctx.plan.stage_of(step - 1)

    def on_train_batch_end(self, batch, logs=None):
        ctx = self.ctx
        loss = float((logs or {}).get("loss", math.nan))
        if ctx.stop_reason == "nan" or not math.isfinite(loss):
            return  # NonFiniteGuard's
        if ctx.settings is not None:  # the watch's thresholds are in pixel units
            loss = losses.pixel_units(ctx.settings.loss, loss)
        step = self.global_step(batch)
        if self.watch.update(loss, self.phase(step)):
            self.diverged(step, self.watch.why(), self.good)
        elif step % self.watch.window == 0:  # steps, not time: the same after a resume
            self.keep(step)

    # --- snapshots ------------------------------------------------------------------------
    def _network(self):
        return getattr(self.model, "network", self.model)

    def snapshot(self, step: int) -> Snapshot:
        slots = self.model.optimizer.variables[1:]  # [0] is the step counter: it runs on
        average = self.ctx.average
        return Snapshot(
            step,
            [np.array(w, copy=True) for w in self._network().get_weights()],
            [np.array(v.numpy(), copy=True) for v in slots],
            average.state() if average is not None else None,
        )

    def restore(self, snap: Snapshot) -> None:
        self._network().set_weights(snap.weights)
        for var, value in zip(self.model.optimizer.variables[1:], snap.slots, strict=True):
            var.assign(value)
        if snap.average is not None and self.ctx.average is not None:
            self.ctx.average.load(*snap.average)

    def keep(self, step: int) -> None:
        """Every window of steps: confirm the pending snapshot and take a new one while the
        loss is healthy; drop it while the loss rises (it may hold weights going bad)."""
        state = self.watch.state
        if state == "warming":
            return
        if state != "healthy":
            self.pending = None
            return
        if self.pending is not None:
            self.good = self.pending
        self.pending = self.snapshot(step)

    # --- validation (called by the Data Directory writer at checkpoints) -----------------
    def check_validation(self, step: int) -> bool:
        """After ``ctx.val_psnr`` was computed at checkpoint ``step``: roll back if it fell
        :data:`PSNR_DROP_DB` below the best; True if it did (the caller validates again)."""
        ctx = self.ctx
        val, best = ctx.val_psnr, ctx.best_val_psnr
        if val is None or math.isnan(val) or self._last_rollback == step:
            return False
        if best is not None and math.isfinite(best) and best - val > PSNR_DROP_DB:
            why = (
                f"validation PSNR fell to {val:.2f} dB (best {best:.2f} dB at step {ctx.best_step})"
            )
            return self.diverged(step, why, self.validated or self.good)
        near = best is None or val >= best - PSNR_KEEP_DB
        if near and self.watch.state in ("healthy", "warming"):
            self.validated = self.snapshot(step)
        return False

    # --- rolling back ---------------------------------------------------------------------
    def diverged(self, step: int, why: str, target: Snapshot | None) -> bool:
        """Roll back to ``target`` (if any) and go gentler; False once the cap is reached."""
        ctx = self.ctx
        if ctx.rollbacks >= MAX_ROLLBACKS:
            if not self._gave_up:
                self._gave_up = True
                _say(f"step {step}: {why}: {ctx.rollbacks} rollbacks already, continuing as is")
            return False
        if target is not None:
            self.restore(target)
        ctx.rollbacks += 1
        if ctx.schedule is not None:
            ctx.lr_scale *= LR_FACTOR
            ctx.schedule.scale.assign(ctx.lr_scale)
        self.pending = None
        self.watch.restart()
        self._last_rollback = step
        self.record(step, why, target.step if target is not None else None)
        return True

    def record(self, step: int, why: str, to_step: int | None) -> None:
        """One line on stderr, the run's summaries and its run-table entry."""
        from ccat_tf import runs

        ctx = self.ctx
        done = f"rolled back to step {to_step}" if to_step is not None else "no good state kept yet"
        gentler = f", learning rate now x{ctx.lr_scale:g}" if ctx.schedule is not None else ""
        _say(f"step {step}: {why}: {done}{gentler}")
        if ctx.writer is not None:
            values = {"rollback": 1.0, "lr_scale": ctx.lr_scale}
            summary.write_scalars(ctx.writer, ctx.summary_folder, step, values)
        entry = {"step": step, "to_step": to_step, "reason": why, "lr_scale": ctx.lr_scale}
        if ctx.writes:  # rank 0 alone writes the run table (every rank rolls back alike)
            runs.add_rollback(ctx.data_directory, ctx.run_id, entry)


def _say(message: str) -> None:
    print(f"ccat-tf: {message}", file=sys.stderr, flush=True)


__all__ = ["LossWatch", "DivergenceGuard", "Snapshot", "window_for"]
