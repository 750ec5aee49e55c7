"""The training loop: one loop for one device, several local devices and several processes.

Keras 3's ``fit`` does not run under ``tf.distribute.MultiWorkerMirroredStrategy``
(keras-team/keras#20585), so the step is ours: ``strategy.run`` of the replica step inside a
``tf.function``, driven by a Python loop that calls the Keras callbacks as ``fit`` does
(``on_train_begin``, ``on_epoch_begin``, ``on_train_batch_begin/end(batch, logs)``, ...,
``model.stop_training``). Every existing callback (checkpoints, summaries, guard, time limit,
progress) keeps working unchanged.

Gradients: each replica's loss is the mean over its share of the global batch, divided by the
number of replicas in sync; Keras 3's TensorFlow optimizer (``_all_reduce_sum_gradients`` in
keras/src/backend/tensorflow/optimizer.py) then SUMS the gradients over all replicas of all
processes once, inside ``optimizer.apply``: the sum of the replicas' scaled gradients is the
gradient of the global batch's mean loss. The reported loss is the global batch mean (the
replicas' means averaged), the same number on every process.

Temporal consistency (``temporal`` > 0): a batch then also holds, for each crop, the same window
of its pair's neighbouring input frame warped into the pair's geometry, W(x_n), and the warp's
valid mask (:mod:`ccat_tf.dataset`). One sample in :data:`~ccat_tf.dataset.TEMPORAL_EVERY`
carries a mask (the others an empty one; so the same crops whatever the replicas): those crops
(the ones whose mask is not empty) also run their W(x_n) through the network, in the same call
as the batch, and the loss adds ``temporal * mean(mask * err(f(W(x_n)) - stop_gradient(f(x_t))))``
with the run's error (``|.|`` for mae, ``^2`` for mse), the mean over the pixels of those crops
(1/TEMPORAL_EVERY of a batch): where the motion explains the neighbour, the output must not
change. The reported loss stays the supervised one; ``logs["temporal"]`` is the new term.

Stopping together: a process may want to stop (SIGTERM, the time limit) at a step where another
does not. Each step all-reduces a "stop" flag (summed over replicas) with the loss, so every
process sees ``logs["stop"]`` at the same step and they stop together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ccat_tf import losses


class StepLoop:
    """Runs training steps of ``trainer`` (a Keras model with ``network`` and a compiled
    ``optimizer``) under ``strategy``; ``workers`` processes each feed ``local`` replicas."""

    def __init__(
        self,
        strategy,
        trainer,
        *,
        loss: str = "mae",
        workers: int = 1,
        worker: int = 0,
        temporal: float = 0.0,
    ):
        losses.check(loss)
        self.strategy, self.trainer, self.loss = strategy, trainer, loss
        self.temporal = float(temporal)  #: temporal_consistency's weight (batches of 4 tensors)
        self.workers, self.worker = workers, worker
        self.stop_wanted: Callable[[], bool] = lambda: False  #: this process wants to stop
        #: averaging.WeightAverage updated after every step (set before the first step), or None
        self.average = None
        self._step = None
        #: the data pipelines fit has iterated, kept until :meth:`release`
        self.parked: list = []

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    # ---- data --------------------------------------------------------------------------------
    def distribute(self, dataset, global_batch: int):
        """``dataset`` yields the GLOBAL batch of each step, a tuple of tensors batched alike
        ((x, y), or (x, y, warped, valid) with temporal consistency; every process makes the same
        one: crops are a pure function of (seed, sample)); each process keeps its slice of every
        tensor and each of its replicas its share, in replica order (process 0's first)."""
        local = self.replicas // self.workers
        per_process = global_batch // self.workers
        per_replica = per_process // local
        lo, hi = self.worker * per_process, (self.worker + 1) * per_process

        def make(_context):
            ds = dataset
            if self.workers > 1:
                ds = ds.map(lambda *tensors: tuple(t[lo:hi] for t in tensors))
            if local > 1:  # consecutive elements go to consecutive local replicas
                ds = ds.unbatch().batch(per_replica, drop_remainder=True)
            return ds

        return self.strategy.distribute_datasets_from_function(make, self._input_options(local))

    def _input_options(self, local: int):
        """One CPU replica in one process iterates the pipeline itself: the default (PER_WORKER)
        goes through a MultiDeviceIterator whose per-device pipeline TensorFlow autotunes, and
        deleting it waited 20-126 s for the autotuner's thread (a run's end, after its .cat).
        Several replicas or processes, and GPUs (whose batches it prefetches to the device),
        keep it; :meth:`release` defers that wait to after the final .cat."""
        import tensorflow as tf

        devices = self.strategy.extended.worker_devices
        if self.workers > 1 or local > 1 or "GPU" in devices[0].upper():
            return None
        return tf.distribute.InputOptions(
            experimental_replication_mode=tf.distribute.InputReplicationMode.PER_REPLICA,
            experimental_fetch_to_device=False,
        )

    # ---- the step ----------------------------------------------------------------------------
    def _make_step(self):
        import tensorflow as tf

        from ccat_tf.dataset import TEMPORAL_EVERY

        net, optimizer, strategy = self.trainer.network, self.trainer.optimizer, self.strategy
        n, kind, weight, average = self.replicas, self.loss, self.temporal, self.average

        def err(e):
            return losses.pixel_error(kind, e)

        @tf.autograph.experimental.do_not_convert
        def replica_step(batch, stop):
            x, y = batch[0], batch[1]
            with tf.GradientTape() as tape:
                if weight > 0 and len(batch) == 4:
                    # the crops whose neighbour counts: a non-empty mask (dynamic count)
                    pick = tf.where(tf.reduce_max(batch[3], axis=[1, 2, 3]) > 0)[:, 0]
                    out = net(tf.concat([x, tf.gather(batch[2], pick)], 0), training=True)
                    b = tf.shape(x)[0]
                    pred = out[:b]
                    change = out[b:] - tf.stop_gradient(tf.gather(pred, pick))
                    # mean over 1/TEMPORAL_EVERY of the batch's pixels, so replicas' terms
                    # average to the global batch's whatever each one picked
                    pixels = tf.cast(tf.size(pred), tf.float32) / TEMPORAL_EVERY
                    term = tf.reduce_sum(tf.gather(batch[3], pick) * err(change)) / pixels
                else:
                    pred, term = net(x, training=True), tf.constant(0.0)
                loss = tf.reduce_mean(err(pred - y))
                total = loss + weight * term if weight > 0 else loss
                scaled = total / n if n > 1 else total  # the all-reduced SUM is the global mean
            variables = net.trainable_variables
            optimizer.apply(tape.gradient(scaled, variables), variables)
            return loss, term, tf.identity(stop)

        # As Keras's fit: no autograph (no tensor-dependent Python control flow here). One trace
        # per crop size (multi-resolution stage), never a shape-generic one: a run resumed in a
        # later stage traces that stage's shape first, and a generic graph computes the forward
        # pass with other rounding than a shape-specialised one, which the squared-error loss
        # carries into the weights (absolute error's sign hid it): resumes would not be exact.
        @tf.function(reduce_retracing=False)
        @tf.autograph.experimental.do_not_convert
        def step(batch, stop):
            loss, term, flag = strategy.run(replica_step, args=(tuple(batch), stop))
            if average is not None:  # cross-replica: every replica's weights are the same
                average.update()
            mean = strategy.reduce(tf.distribute.ReduceOp.MEAN, loss, axis=None)
            if weight > 0:  # a plain step all-reduces nothing more than it did
                term = strategy.reduce(tf.distribute.ReduceOp.MEAN, term, axis=None)
            else:
                term = tf.constant(0.0)
            anyone = strategy.reduce(tf.distribute.ReduceOp.SUM, flag, axis=None)
            return mean, term, anyone

        return step

    def run_step(self, batch) -> dict[str, Any]:
        import tensorflow as tf

        if self._step is None:
            self._step = self._make_step()
        wanted = 1.0 if self.stop_wanted() else 0.0
        stop = self.strategy.experimental_distribute_values_from_function(
            lambda _context: tf.constant(wanted)
        )
        loss, term, anyone = self._step(batch, stop)
        logs = {"loss": float(loss), "stop": bool(float(anyone) > 0)}
        if self.temporal > 0:
            logs["temporal"] = float(term)
        return logs

    def release(self) -> None:
        """End the data pipelines of every fit so far. A run calls this after its final .cat,
        not when a fit ends: deleting an autotuned tf.data iterator can wait up to minutes (see
        ``dataset.PIPELINE_PARALLEL_CALLS`` and :meth:`_input_options`)."""
        self.parked.clear()

    # ---- the loop ----------------------------------------------------------------------------
    def fit(self, dataset, steps: int, callbacks: Sequence[Any], global_batch: int) -> None:
        """``steps`` steps over ``dataset`` (global batches) with Keras ``callbacks``, stopping
        early when one sets ``model.stop_training`` (on every process at the same step: the
        callbacks see the same global loss and the same ``logs["stop"]``)."""
        import keras

        trainer = self.trainer
        cbs = keras.callbacks.CallbackList(
            list(callbacks), add_history=False, add_progbar=False, model=trainer, epochs=1
        )
        cbs.set_params({"epochs": 1, "steps": steps, "verbose": 0})
        trainer.stop_training = False
        iterator = iter(self.distribute(dataset, global_batch))
        self.parked.append(iterator)  # ended by release(), once the run's files are written
        cbs.on_train_begin()
        cbs.on_epoch_begin(0)
        logs: dict[str, Any] = {}
        for batch in range(steps):
            cbs.on_train_batch_begin(batch)
            logs = self.run_step(next(iterator))
            cbs.on_train_batch_end(batch, logs)
            if trainer.stop_training:
                break
        cbs.on_epoch_end(0, logs)
        cbs.on_train_end(logs)
