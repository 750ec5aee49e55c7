"""The learning-rate schedule: a short linear warm-up, the peak rate held, then a cosine decay to
the planned end.

A constant rate (CopyCat's, and this project's before) keeps kicking the weights late: long
mattes trained at 1e-3 collapsed to a constant after ~2500 steps. A decay over the whole run
(tried first) halves the mean rate, and in short runs (a time limit on a slow machine: ~100
steps) that costs 0.7 dB against the constant rate (bench_quality, equal steps): so the peak is
held for :data:`HOLD_SHARE` of the run after the warm-up, and only the rest decays. The warm-up
keeps the first Adam steps (whose moment estimates are still noisy) from wrecking the initial
weights (pretrained, or the colour fit the network starts from). The rate is a pure function of
the optimizer's step count, the run's total, its stage starts and a *gentleness* factor, so a
resumed run continues on exactly the same curve; the total, the stage starts and the factor are
variables, so a time-limited run can re-plan its end and a rollback (:mod:`ccat_tf.guard`) can
continue more gently without retracing the training step.

Each multi-resolution stage after the first warms up again, as the run did at its start. A new
resolution's first crops give gradients the network has not seen, while Adam's step sizes still
follow the last stage's: at the peak rate one such step can kick the weights out of their basin.
Measured (bench_quality, bikes stylisation, 2400 steps, ``learning_rate`` 0.0015): without the
stage warm-up the loss jumped from 0.034 to 0.22 (RMS) three steps into the full-size stage and
the network never recovered (19.27 dB, under the colour fit it started from); with it the run
went on learning. The divergence guard cannot see such a collapse: it forgets its best at a
stage change, since each stage has its own loss level.

Adam's epsilon starts large and falls to Keras' own over the first steps (:class:`WarmAdam`). A
network starts at its colour fit with a zero head, so its deep layers' first gradients are tiny,
and Adam divides each weight's step by its own gradient scale: those weights still move by about
the full rate, and the ReLUs they feed die. A 3000-step matte at ``learning_rate`` 0.002 (or with
a 5% warm-up) stayed at its colour fit (20.78 dB) for that reason; with epsilon 1e-5 falling to
1e-7 over 500 steps it learned (30.87). A constant 1e-5 freed it too but slowed the fixes whose
errors stay small for the whole run (coffee_pan jpeg -0.59 dB at equal steps): see RESULTS.md,
"Adam's epsilon".
"""

from __future__ import annotations

import math

import keras

#: Fraction of the run spent warming up, and its bounds in steps.
WARMUP_SHARE = 0.02
WARMUP_MIN, WARMUP_MAX = 3, 500
#: Fraction of the steps after the warm-up that train at the peak rate before the decay starts.
HOLD_SHARE = 0.7
#: The rate at the planned end, as a fraction of the base rate.
FINAL_SHARE = 0.05
#: The rate a warm-up starts from, as a fraction of the base rate.
WARMUP_START = 0.1
#: Adam's epsilon falls linearly from EPSILON_START at step 0 to Keras' EPSILON_END over the first
#: EPSILON_STEPS steps (at most a quarter of the run), then stays there.
EPSILON_START, EPSILON_END = 1e-5, 1e-7
EPSILON_STEPS = 500


def warmup_steps(total: int) -> int:
    return int(min(WARMUP_MAX, max(WARMUP_MIN, round(total * WARMUP_SHARE)), max(1, total // 4)))


def epsilon_steps(total: int) -> int:
    return int(min(EPSILON_STEPS, max(1, total // 4)))


class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """``base`` x ``scale`` x (linear warm-up over :func:`warmup_steps`, the peak held for
    :data:`HOLD_SHARE` of the rest, then cosine to :data:`FINAL_SHARE` at ``total``); constant at
    the final rate past ``total``; the warm-up runs again from each later stage's start."""

    def __init__(self, base: float, total: int, scale: float = 1.0):
        import tensorflow as tf

        self.base = float(base)
        self.total = tf.Variable(1, trainable=False, dtype=tf.int64, name="lr_total")
        self.warmup = tf.Variable(1, trainable=False, dtype=tf.int64, name="lr_warmup")
        self.eps_steps = tf.Variable(1, trainable=False, dtype=tf.int64, name="eps_steps")
        self.scale = tf.Variable(float(scale), trainable=False, dtype=tf.float32, name="lr_scale")
        # First step of each stage (a crop plan's stage_bounds; one resolution: all 0).
        self.stages = tf.Variable([0, 0, 0], trainable=False, dtype=tf.int64, name="lr_stages")
        self.set_total(total)

    def set_stages(self, bounds) -> None:
        """The multi-resolution stages' first steps (a crop plan's ``stage_bounds``): the warm-up
        runs again from each stage's start."""
        self.stages.assign([int(b) for b in bounds])

    def set_total(self, total: int) -> None:
        self.total.assign(int(total))
        self.warmup.assign(warmup_steps(int(total)))
        self.eps_steps.assign(epsilon_steps(int(total)))

    def epsilon(self, step):
        """Adam's epsilon at ``step``: :data:`EPSILON_START` falling linearly to
        :data:`EPSILON_END` at :func:`epsilon_steps`, constant after."""
        import tensorflow as tf

        left = tf.maximum(
            0.0, 1.0 - tf.cast(step, tf.float32) / tf.cast(self.eps_steps, tf.float32)
        )
        return EPSILON_END + (EPSILON_START - EPSILON_END) * left

    def __call__(self, step):
        import tensorflow as tf

        step = tf.cast(step, tf.float32)
        total = tf.cast(self.total, tf.float32)
        warm = tf.cast(self.warmup, tf.float32)
        stages = tf.cast(self.stages, tf.float32)
        start = tf.reduce_max(tf.where(stages <= step, stages, 0.0))  # this stage's first step
        warm_f = tf.minimum(1.0, WARMUP_START + (1.0 - WARMUP_START) * (step - start) / warm)
        hold = warm + HOLD_SHARE * (total - warm)
        t = tf.clip_by_value((step - hold) / tf.maximum(1.0, total - hold), 0.0, 1.0)
        cos_f = FINAL_SHARE + (1.0 - FINAL_SHARE) * 0.5 * (1.0 + tf.cos(math.pi * t))
        return self.base * self.scale * warm_f * cos_f

    def get_config(self) -> dict:
        return {
            "base": self.base,
            "total": int(self.total.numpy()),
            "scale": float(self.scale.numpy()),
        }


class WarmAdam(keras.optimizers.Adam):
    """Keras' Adam (its update, copied from keras/src/optimizers/adam.py without amsgrad) whose
    epsilon follows ``schedule.epsilon`` (:class:`WarmupCosine`): a large epsilon for the first
    steps, Keras' own after. The slots and the step counter are Adam's, so checkpoints, resume and
    rollbacks are unchanged."""

    def __init__(self, schedule: WarmupCosine):
        super().__init__(learning_rate=schedule, epsilon=EPSILON_END, name="adam")
        self._epsilon_at = schedule.epsilon

    def update_step(self, gradient, variable, learning_rate):
        from keras import ops

        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        local_step = ops.cast(self.iterations + 1, dtype)
        beta_1_power = ops.power(ops.cast(self.beta_1, dtype), local_step)
        beta_2_power = ops.power(ops.cast(self.beta_2, dtype), local_step)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        alpha = lr * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - self.beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - self.beta_2))
        eps = ops.cast(self._epsilon_at(self.iterations), dtype)
        self.assign_sub(variable, ops.divide(ops.multiply(m, alpha), ops.add(ops.sqrt(v), eps)))
