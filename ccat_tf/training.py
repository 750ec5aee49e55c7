"""``ccat_tf.train``: CopyCat's training node.

One call validates the data set, decides whether this is a new run or a resume, builds the model
under a ``tf.distribute`` strategy, and runs the training loop (:mod:`ccat_tf.train_loop`) with
the Keras callbacks that write the Data Directory (.cat checkpoints, .ost progress, contact sheets,
previews, .summary files, the run table).

Resume rules (CopyCat's Resume Training, and what Snakemake reruns rely on):

* same settings, unfinished: continue from the newest .ost at its exact step;
* only compatible settings changed (epochs, intervals, preview, validation, hooks, run name):
  continue from the .ost towards the new total;
* anything else changed (model size, channels, crop size, data set, ...): the old run's progress
  is kept as ``<run>.progress.ost`` and a new run starts from scratch. The old run's files and
  summaries stay, so its curve stays in the graph.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ccat_tf import losses
from ccat_tf import runs as runtable
from ccat_tf import state as ost
from ccat_tf import summary as summaries
from ccat_tf.atomic import LOCK_NAME, DirectoryLock, remove_stale_temps
from ccat_tf.dataset import (
    FINE_DETAIL_BELOW,
    STAGE_SCALES,
    CropPlan,
    DataSetInfo,
    FrameCache,
    make_tf_dataset,
    open_cache,
    stage_bounds,
    stage_shares,
    validate_dataset,
)
from ccat_tf.errors import (
    CcatError,
    DataDirectoryError,
    HookError,
    ModelFileError,
    NonFiniteLoss,
    SettingsError,
    TrainingInterrupted,
)
from ccat_tf.settings import RESUME_COMPATIBLE_KEYS, TrainSettings

if TYPE_CHECKING:
    from ccat_tf.callbacks import RunContext
    from ccat_tf.train_loop import StepLoop

# Settings that may change between a run and its resume (one list: ccat_tf.settings).
COMPATIBLE_KEYS = RESUME_COMPATIBLE_KEYS

PRETRAINED = {
    # initial_weights -> (input channel count, output channel count, what it is for)
    "deblur": (3, 3, "rgb -> rgb"),
    "upscale": (3, 3, "rgb -> rgb"),
    "human_matting": (3, 1, "rgb -> alpha"),
}


def _say(message: str) -> None:
    print(f"ccat-tf: {message}", file=sys.stderr, flush=True)


def signature_of(settings: TrainSettings, info: DataSetInfo) -> dict[str, Any]:
    """What a resumed run must share with the run it resumes."""
    s = settings.to_dict()
    sig = {k: v for k, v in s.items() if k not in COMPATIBLE_KEYS}
    for key in ("temporal_consistency", "weight_average"):
        if not sig.get(key):  # off: a run from before the setting still resumes
            sig.pop(key, None)
    if sig.get("loss") == "mae":  # what runs from before the setting minimised: they resume
        sig.pop("loss")
    if sig.get("augment_rotations") or not sig.get("augment"):  # as runs before the setting
        sig.pop("augment_rotations", None)
    sig["resolved"] = {
        "batch_size": info.batch_size,
        "crop_size": info.crop_size,
        "input_channels": info.input_channels,
        "output_channels": info.output_channels,
        "input_transform": info.input_transform,
        "output_transform": info.output_transform,
        "frames": info.frames,
    }
    if info.neighbours:  # temporal_consistency's unlabelled frames (absent when off, as before)
        sig["resolved"]["neighbours"] = info.neighbours
    # JSON round trip so comparisons with a signature read back from an .ost are exact.
    return json.loads(json.dumps(sig, default=str))


def _describe_change(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new))
    changes = []
    for k in keys:
        if k == "resolved":
            for rk in sorted(set(old.get(k, {})) | set(new.get(k, {}))):
                a, b = old.get(k, {}).get(rk), new.get(k, {}).get(rk)
                if a != b:
                    changes.append(f"{rk} {a} -> {b}")
        elif old.get(k) != new.get(k):
            changes.append(f"{k} {old.get(k)!r} -> {new.get(k)!r}")
    return ", ".join(changes[:4]) + (" ..." if len(changes) > 4 else "")


def _configure_tensorflow(settings: TrainSettings, devices: Sequence[str] | None):
    import tensorflow as tf

    if not settings.use_gpu_if_available:
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:
            pass
    if settings.deterministic:
        tf.config.experimental.enable_op_determinism()
    gpus = tf.config.list_logical_devices("GPU")
    if devices:
        chosen = list(devices)
    elif gpus:
        chosen = [d.name for d in gpus]
    else:
        if settings.use_gpu_if_available:
            _say("no GPU found; training on the CPU")
        chosen = ["/cpu:0"]
    return chosen


def _replicas_for(devices: list[str], batch_size: int) -> list[str]:
    """As CopyCat: use as many devices as the batch allows (batch >= devices, split evenly)."""
    n = min(len(devices), batch_size)
    while n > 1 and batch_size % n:
        n -= 1
    return devices[: max(1, n)]


def _make_trainer(net, loss: str = "mae"):
    """Keras model around ``net`` whose train_step minimises ``loss`` (``mae`` or ``mse``).

    Training runs its steps with :class:`~ccat_tf.train_loop.StepLoop` (the callbacks see this
    model: ``network``, ``optimizer``, ``stop_training``); pretraining runs this train_step with
    Keras ``fit``, on one device."""
    import keras
    import tensorflow as tf

    class CopyCatTrainer(keras.Model):
        """Wraps the saved network; its train_step reports each step's own loss (not a mean)."""

        def __init__(self, network, **kwargs):
            super().__init__(**kwargs)
            self.network = network

        def call(self, inputs, training=False):
            return self.network(inputs, training=training)

        def train_step(self, data):
            x, y = data
            with tf.GradientTape() as tape:
                pred = self.network(x, training=True)
                error = pred - y
                loss = tf.reduce_mean(losses.pixel_error(loss_kind, error))
                # One replica (pretraining): no division by the replica count is needed;
                # train_loop.StepLoop divides for several.
                scaled = self.optimizer.scale_loss(loss)
            variables = self.network.trainable_variables
            grads = tape.gradient(scaled, variables)
            self.optimizer.apply(grads, variables)
            return {"loss": loss}

    loss_kind = losses.check(loss)
    return CopyCatTrainer(net)


def _pretrained_path(kind: str, model_size: str) -> Path:
    ref = resources.files("ccat_tf") / "weights" / f"{kind}_{model_size}.cat"
    return Path(str(ref))


def _initial_weights(settings: TrainSettings, info: DataSetInfo, arch) -> tuple[Path, dict] | None:
    from ccat_tf import catfile

    kind = settings.initial_weights
    n_in, n_out = len(info.input_channels), len(info.output_channels)
    if kind == "none":
        return None
    if kind == "checkpoint":
        path = Path(settings.checkpoint_file)
        meta = catfile.read_metadata(path)
        catfile.check_compatible(
            meta, path=path, model_size=arch.model_size, in_channels=n_in, out_channels=n_out
        )
        return path, meta
    want_in, want_out, what = PRETRAINED[kind]
    if (n_in, n_out) != (want_in, want_out):
        raise SettingsError(
            f"initial_weights {kind} fits {what} models, but this run maps {n_in} -> {n_out} "
            f"channels; use input_channels/output_channels {what.replace(' -> ', ' / ')} or "
            "initial_weights none"
        )
    path = _pretrained_path(kind, arch.model_size)
    if not path.exists():
        raise ModelFileError(
            f"pretrained weights {kind} ({arch.model_size}) are not installed at {path}; "
            "build them with `snakemake --cores all pretrained` or use initial_weights none"
        )
    return path, catfile.read_metadata(path)


def train(
    settings: TrainSettings | dict | None = None,
    *,
    output: str | os.PathLike | None = None,
    callbacks: Sequence[Any] = (),
    devices: Sequence[str] | None = None,
    progress_bar: bool = True,
    **kw,
) -> Path:
    """Train a network as CopyCat does and return the path of the final .cat.

    ``settings`` is a :class:`TrainSettings`, a mapping, or keyword arguments with the same names
    (``input``, ``ground_truth``, ``frames``, ``data_directory``, ``epochs``, ``model_size``, ...).
    ``output`` additionally receives a copy of the final model (the Snakemake target).
    ``callbacks`` are extra Keras callbacks (CopyCat's Python tab, for Python users); the hook
    settings take ``module:function`` strings or callables. ``devices`` overrides the devices
    the MirroredStrategy replicates over (e.g. two logical CPUs in tests).

    With the launch settings (``main_addr``, ``main_port``, ``rank``, ``world_size``, or
    CopyCat's COPYCAT_* variables, SLURM's or TF_CONFIG: :mod:`ccat_tf.distributed`) this process
    is one rank of a training shared by several processes; rank 0 alone writes the Data Directory
    and returns the final .cat, other ranks return the Data Directory.

    Raises CcatError subclasses for every user-fixable problem; TrainingInterrupted (exit 75)
    after SIGTERM/SIGINT once progress is saved.
    """
    settings = _checked_settings(settings, kw, output)
    from ccat_tf.hooks import resolve_hooks

    cluster = _cluster_of(settings)

    run = TrainingRun(
        settings=settings,
        data_dir=Path(settings.data_directory),
        output=Path(output) if output is not None else None,
        user_callbacks=list(callbacks),
        devices=devices,
        progress_bar=progress_bar,
        hooks={name: resolve_hooks(getattr(settings, name)) for name in HOOK_NAMES},
        cluster=cluster,
    )
    if not run.writes:  # rank 0 holds the lock and tidies the Data Directory
        return run.execute()
    created = _first_missing(run.data_dir)
    try:
        with DirectoryLock(run.data_dir, purpose="training"):
            for leftover in remove_stale_temps(run.data_dir):
                _say(f"removed {leftover.name}, a partial file left by an interrupted write")
            return run.execute()
    except BaseException:
        if created is not None:
            _remove_if_only_the_lock(run.data_dir, created)
        raise


HOOK_NAMES = ("on_training_start", "on_checkpoint", "on_training_end")
#: The phases of a training whose wall time the run table's ``seconds`` and the closing
#: ``seconds:`` line give: validating the data set, loading the frames, building the network
#: (strategy, initial weights, colour fit), a time-limited run's speed measurement, opening the
#: run (run table, validation frames, summaries), the training steps (and their callbacks:
#: contact sheets, checkpoints), the final checkpoint, and ending the data pipelines
#: (:meth:`ccat_tf.train_loop.StepLoop.release`).
PHASES = (
    "data set",
    "frames",
    "network",
    "speed measurement",
    "start",
    "training",
    "final model",
    "data pipeline end",
)


def _cluster_of(settings: TrainSettings):
    """This process's :class:`~ccat_tf.distributed.Cluster` (None: training alone)."""
    from ccat_tf import distributed

    cluster, notices = distributed.resolve(settings, os.environ)
    for notice in notices:
        _say(notice)
    distributed.sync_interval(settings, os.environ)
    if cluster is None or cluster.world == 1:
        return None
    if settings.time_limit:
        raise SettingsError(
            "time_limit is not supported when several ranks train together (each would plan "
            "from its own clock); use epochs, or train on one machine"
        )
    return cluster


def _checked_settings(settings, overrides: dict, output) -> TrainSettings:
    """The settings as a checked TrainSettings; the Data Directory and output are usable."""
    if not isinstance(settings, TrainSettings):
        settings = TrainSettings.from_mapping(settings, **overrides)
    elif overrides:
        settings = TrainSettings.from_mapping({**settings.to_dict(), **overrides})
    settings.check()
    if not settings.data_directory:
        raise SettingsError(
            "data_directory is not set; give the folder where checkpoints and progress go"
        )
    if output is not None:
        from ccat_tf.outputs import check_output, dataset_inputs

        check_output(output, "cat", dataset_inputs(settings))
    data_dir = Path(settings.data_directory)
    if data_dir.exists() and not data_dir.is_dir():
        raise DataDirectoryError(f"data_directory {data_dir} is a file; give a folder")
    return settings


def _first_missing(folder: Path) -> Path | None:
    """The outermost folder of ``folder``'s path that does not exist yet (None if it exists)."""
    missing = None
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            break
        missing = candidate
    return missing


def _remove_if_only_the_lock(data_dir: Path, created: Path) -> None:
    """A training that stopped before writing anything (a bad data set) leaves no empty Data
    Directory behind: remove the folders it created if they hold nothing but the lock file."""
    with contextlib.suppress(OSError):
        if {p.name for p in data_dir.iterdir()} <= {LOCK_NAME}:
            (data_dir / LOCK_NAME).unlink(missing_ok=True)
            for folder in (data_dir, *data_dir.parents):
                folder.rmdir()  # only empty folders go; stops at the first one that is not
                if folder == created:
                    break


def crop_plan(
    settings: TrainSettings, info: DataSetInfo, total: int, arch, fine_detail: bool = False
) -> CropPlan:
    """The crops a run sees: one construction for a run and for rebuilding its final .cat
    (``fine_detail``: from :meth:`TrainingRun.load_frames`; it moves the stage bounds, but the
    final step is in the last stage either way, so a final .cat rebuilt without it states the
    same stage)."""
    from ccat_tf.models import divisor

    multi = settings.use_multi_resolution_training
    return CropPlan(
        seed=settings.seed,
        pairs=info.pairs,
        batch_size=info.batch_size,
        crop_size=info.crop_size,
        divisor=divisor(arch.model_size),
        stage_bounds=tuple(stage_bounds(total, multi, fine_detail)),
        stage_scales=STAGE_SCALES if multi else (1.0, 1.0, 1.0),
        frame_hw=(info.height, info.width),
        augment=settings.augment,
        rotations=settings.augment_rotations,
        position=arch.position,
        temporal=settings.temporal_consistency > 0 and bool(info.neighbours),
        fine_detail=multi and fine_detail,
    )


def new_architecture(settings: TrainSettings, model_size: str):
    """The network a new run builds (``model_size`` resolved, never auto)."""
    from ccat_tf.models import Architecture

    return Architecture(
        model_size,
        position=settings.position_aware,
        colour=settings.colour_branch,
        colour_input=settings.colour_branch,
        position_fit_only=settings.position_aware and settings.colour_branch,
    )


def architecture_of(progress: ost.Progress):
    """The network a progress file's arrays belong to."""
    from ccat_tf.models import Architecture

    a = progress.architecture or {"model_size": progress.signature.get("model_size")}
    return Architecture(
        a["model_size"],
        bool(a.get("position")),
        bool(a.get("colour")),
        bool(a.get("colour_input")),
        bool(a.get("position_fit_only")),
    )


@dataclass
class TrainingRun:
    """One training, in the stages a reader follows: :meth:`prepare` (data set, resume or new
    run), :meth:`load_frames` (the frame cache), :meth:`build` (devices, strategy, network,
    optimizer; a time-limited new run measures its speed and plans its steps here),
    :meth:`open` (run table, crops, the callbacks' context), :meth:`fit` (the training loop),
    :meth:`finish` (final checkpoint, hooks, output) and :meth:`close` (run table, files). It is
    also what the callbacks save through (:meth:`save_model`, :meth:`save_progress`)."""

    settings: TrainSettings
    data_dir: Path
    output: Path | None
    user_callbacks: list
    devices: Sequence[str] | None
    progress_bar: bool
    hooks: dict[str, list]
    started: float = field(default_factory=time.monotonic)  #: when train() was called
    # ---- set by prepare() ----
    info: DataSetInfo | None = None
    signature: dict = field(default_factory=dict)
    progress: ost.Progress | None = None  #: the progress this run resumes (None: a new run)
    replaced: ost.Progress | None = None  #: an incompatible run's progress, set aside in open()
    total: int = 0  #: planned steps (0 until a time-limited new run has measured its speed)
    start_step: int = 0
    arch: Any = None  #: models.Architecture (set by prepare() on a resume, else by build())
    # ---- set by load_frames(), build() and open() ----
    cache: FrameCache | None = None
    #: the fix lives in fine detail: low stages crop the full-size frames (load_frames)
    fine_detail: bool = False
    net: Any = None  #: the Keras network (what a .cat holds)
    optimizer: Any = None
    schedule: Any = None  #: schedule.WarmupCosine, the optimizer's learning rate
    trainer: Any = None  #: the Keras model the callbacks see (network, optimizer, stop_training)
    average: Any = None  #: averaging.WeightAverage of the network's weights, or None (off)
    loop: StepLoop | None = None  #: runs the training steps (train_loop)
    strategy: Any = None  #: the tf.distribute strategy the network lives in
    precision: str = "float32"  #: the training step's number format (ccat_tf.precision)
    run: dict = field(default_factory=dict)  #: this run's entry in the run table
    plan: CropPlan | None = None
    ctx: RunContext | None = None
    # ---- a time-limited new run's measurements (time_plan) ----
    step_seconds: tuple[float, ...] = ()  #: measured seconds per step of each stage
    max_total: int = 0  #: the most steps re-planning may reach (the crops made for it)
    deadline: float = 0.0  #: time.monotonic() at which a time-limited run stops
    # ---- distributed training (ccat_tf.distributed) ----
    cluster: Any = None  #: distributed.Cluster of this process (None: training alone)
    workers: list = field(default_factory=list)  #: every rank's TensorFlow host:port
    watchdog: Any = None  #: distributed.Watchdog until the first step has run
    scratch: Path | None = None  #: a rank other than 0's own folder (its HDF5 frame cache)
    # ---- where the wall time went (PHASES), for the run table and the closing line ----
    seconds: dict = field(default_factory=dict)

    @property
    def writes(self) -> bool:
        """This process writes the Data Directory (rank 0, or a process training alone)."""
        return self.cluster is None or self.cluster.is_main

    def execute(self) -> Path:
        with self.phase("data set"):
            finished = self.prepare()
        if finished is not None:
            return finished
        self.meet()
        try:
            with self.phase("frames"):
                self.load_frames()
            return self._train()
        finally:
            if self.watchdog is not None:  # a distributed rank that stopped before a step
                self.watchdog.stop()
            if self.scratch is not None:
                import shutil

                shutil.rmtree(self.scratch, ignore_errors=True)

    def _train(self) -> Path:
        try:
            self.build()
        except BaseException:
            self.cache.close()
            raise
        with self.phase("start"):
            self.open()
        status = "failed"
        try:
            with self.phase("training"):
                self.fit()
            self.raise_if_stopped()
            with self.phase("final model"):
                path = self.finish()
            status = "finished"
            return path
        except TrainingInterrupted:
            status = "interrupted"
            raise
        except HookError:
            if (
                self.writes
                and self.ctx.step > self.start_step
                and self.ctx.last_progress_step != self.ctx.step
            ):
                self.save_progress(self.ctx.step)
            raise
        finally:
            self.close(status)

    @contextlib.contextmanager
    def phase(self, name: str):
        """Adds the wall time of the ``with`` block to ``seconds[name]`` (one of PHASES)."""
        t = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.monotonic() - t

    def timing(self) -> dict[str, float]:
        """Seconds by phase in PHASES order, "other" (the rest: the lock, leftovers, closing)
        and "in all" (since train() was called)."""
        total = time.monotonic() - self.started
        out = {k: round(self.seconds[k], 2) for k in PHASES if k in self.seconds}
        out["other"] = round(max(0.0, total - sum(self.seconds.values())), 2)
        out["in all"] = round(total, 2)
        return out

    # ---- stages ----------------------------------------------------------------------------
    def prepare(self) -> Path | None:
        """Validate the data set and decide: resume, start a new run, or nothing left to do
        (then the finished run's final .cat, copied to ``output``, is returned)."""
        info = self.info = validate_dataset(self.settings)
        for notice in info.notices:
            _say(notice)
        _say(info.channels_line(time_limit=self.settings.time_limit))
        self.signature = signature_of(self.settings, info)
        progress = ost.load_latest_progress(self.data_dir)
        if self.writes:
            _close_stale_runs(self.data_dir, progress)
        # An incompatible change starts a new run, but the old run's progress.ost is set aside
        # only once the new run has passed every check (initial weights, cache): a bad setting
        # must leave the Data Directory as it was, still resumable.
        if progress is not None and progress.signature != self.signature:
            self.replaced, progress = progress, None
        self.total = self._planned_total(progress)
        if progress is not None and progress.step >= self.total:
            done = f"{progress.run_name} already trained {progress.step} of {self.total} steps"
            _say(f"{done}; nothing to do")
            if not self.writes:
                return self.data_dir
            final = _final_cat_from_progress(
                self.data_dir, progress, self.settings, info, self.total
            )
            return self._deliver(final)
        if progress is not None:
            _say(f"resuming {progress.run_name} at step {progress.step} of {self.total}")
            self.arch = architecture_of(progress)
        self.progress = progress
        self.start_step = progress.step if progress else 0
        return None

    def _planned_total(self, progress: ost.Progress | None) -> int:
        """Total steps: from epochs; with a time limit, a resume keeps its run's plan and a new
        run plans in build() (0 until then)."""
        if not self.settings.time_limit:
            return self.info.total_steps
        return progress.total_steps if progress is not None else 0

    def meet(self) -> None:
        """A distributed training's ranks meet (:func:`ccat_tf.distributed.meet`): same world
        size, settings, data set and starting step, or a one-line error on every rank."""
        from ccat_tf import distributed

        cluster = self.cluster
        if cluster is None:
            return
        _say(f"distributed training: {cluster.describe()}")
        if cluster.workers:  # TF_CONFIG: TensorFlow's own addresses, no rendezvous
            self.workers = list(cluster.workers)
            return
        timeout = self.settings.rank_timeout
        self.workers = distributed.meet(cluster, self._digest(), timeout)

    def _digest(self) -> dict[str, str]:
        """What every rank must share, one short hash per item (so a mismatch names it)."""
        import hashlib

        items = dict(self.signature)
        items.pop("resolved", None)
        items.update(self.signature.get("resolved", {}))
        for key in ("epochs", "checkpoint_interval", "validation_frames"):
            items[key] = getattr(self.settings, key)
        items["start_step (the shared Data Directory's progress)"] = self.start_step
        items["total_steps"] = self.total
        return {
            k: hashlib.sha256(json.dumps(v, sort_keys=True, default=str).encode()).hexdigest()[:16]
            for k, v in items.items()
        }

    def load_frames(self) -> None:
        """The frame cache the crops are cut from (memory or HDF5; a rank other than 0 keeps
        an HDF5 cache it must build out of the Data Directory)."""
        notices: list[str] = []
        if not self.writes:
            self.scratch = _scratch_folder()
        folder = self.scratch or self.data_dir
        self.cache = open_cache(self.info, self.settings, folder, notices)
        for n in notices:
            _say(n)
        self._choose_stages()

    def _choose_stages(self) -> None:
        """A fix that lives in fine detail trains its low stages on small crops of the
        full-size frames (``dataset.FINE_DETAIL_BELOW``); said on one line."""
        share = self.cache.detail_share() if self.settings.use_multi_resolution_training else None
        self.fine_detail = share is not None and share < FINE_DETAIL_BELOW
        if share is None:
            return
        if self.fine_detail:
            how = "a fine-detail fix: the 1/4 and 1/2 stages cut small crops from the full-size frames"
        else:
            how = "the 1/4 and 1/2 stages train on downsized frames"
        _say(f"multi-resolution: {share:.2f} of the pairs' difference is left at 1/4 size; {how}")

    def build(self) -> None:
        """Devices, the MirroredStrategy, and the network and optimizer in its scope (restored
        from the progress file, or from the initial weights and the colour fit). A new
        time-limited run then measures its speed and plans its length (:mod:`ccat_tf.time_plan`)."""
        info, settings = self.info, self.settings
        if self.cluster is not None:
            self._multi_worker_strategy()
        else:
            import tensorflow as tf

            replicas = _replicas_for(_configure_tensorflow(settings, self.devices), info.batch_size)
            self.strategy = tf.distribute.MirroredStrategy(devices=replicas)
            if len(replicas) > 1:
                _say(f"training on {len(replicas)} replicas: {', '.join(replicas)}")
        self._choose_precision()
        if self.arch is None:
            size = settings.model_size
            if size == "auto":
                size = "small" if settings.time_limit else "medium"
            self.arch = new_architecture(settings, size)
        with self.phase("network"):
            self._build_network()
        if self.progress is None and settings.time_limit:
            with self.phase("speed measurement"):
                self._plan_for_time_limit()

    def _choose_precision(self) -> None:
        """The training step's number format (:mod:`ccat_tf.precision`), said once."""
        from ccat_tf import precision

        devices = self.strategy.extended.worker_devices
        on_gpu = any("GPU" in d.upper() for d in devices)
        self.precision, why = precision.resolve(self.settings.precision, on_gpu)
        _say(why)

    def _multi_worker_strategy(self) -> None:
        """MultiWorkerMirroredStrategy over every rank's devices (before any other TensorFlow
        op: collectives are configured at the runtime's start); the global batch must split
        evenly over all replicas."""
        from ccat_tf import distributed

        s, rank = self.settings, self.cluster.rank
        # Until the first step is done (TrainingRun.fit), nothing else bounds the wait for
        # the other ranks' TensorFlow.
        self.watchdog = distributed.Watchdog(
            s.rank_timeout,
            f"rank {rank}: the other ranks did not start training within rank_timeout "
            f"{s.rank_timeout:g} s (one died or is still loading its frames); start every rank "
            "again, or raise rank_timeout",
        )
        self.strategy = distributed.make_strategy(
            self.workers,
            rank,
            s.rank_timeout,
            use_gpu=s.use_gpu_if_available,
            deterministic=s.deterministic,
        )
        if self.cluster.workers:  # launched by TF_CONFIG: no rendezvous compared the digests
            distributed.check_digests(self.strategy, self._digest(), rank)
        replicas, world = self.strategy.num_replicas_in_sync, self.cluster.world
        if self.info.batch_size % replicas:
            raise SettingsError(
                f"batch_size {self.info.batch_size} does not split over {replicas} replicas "
                f"({world} ranks); use a multiple of {replicas}"
            )
        _say(
            f"rank {rank}: {replicas} replicas in {world} ranks, global batch {self.info.batch_size}"
        )

    def _build_network(self) -> None:
        import keras

        from ccat_tf.models import build_model
        from ccat_tf.precision import policy
        from ccat_tf.schedule import WarmAdam, WarmupCosine
        from ccat_tf.train_loop import StepLoop

        info, settings = self.info, self.settings
        initial = None if self.progress else _initial_weights(settings, info, self.arch)
        keras.utils.set_random_seed(settings.seed)
        n_in, n_out = len(info.input_channels), len(info.output_channels)
        with self.strategy.scope():
            self.net = build_model(
                n_in, n_out, self.arch, residual=info.residual, dtype_policy=policy(self.precision)
            )
            self.trainer = _make_trainer(self.net, settings.loss)
            self.schedule = WarmupCosine(settings.learning_rate, max(1, self.total))
            self.optimizer = WarmAdam(self.schedule)
            self.trainer.compile(optimizer=self.optimizer, jit_compile=False)
            self.optimizer.build(self.net.trainable_variables)
            world = self.cluster.world if self.cluster is not None else 1
            rank = self.cluster.rank if self.cluster is not None else 0
            parked = self.loop.parked if self.loop is not None else []  # a size auto rebuilt
            self.loop = StepLoop(
                self.strategy,
                self.trainer,
                workers=world,
                worker=rank,
                temporal=settings.temporal_consistency,
                loss=settings.loss,
            )
            self.loop.parked = parked
            if self.progress is not None:
                _restore(self.net, self.optimizer, self.progress)
            else:
                loaded = _load_initial(self.net, initial) if initial is not None else set()
                if self.arch.colour and "colour" not in loaded:
                    self._fit_colour(pretrained=bool(loaded))
            self.average = self._weight_average()
            self.loop.average = self.average

    def _weight_average(self):
        """The moving average of the weights (None when weight_average is 0), starting at the
        loaded weights, or where the resumed run's progress file left it."""
        from ccat_tf.averaging import WeightAverage

        if not self.settings.weight_average:
            return None
        average = WeightAverage(self.net.trainable_variables, self.settings.weight_average)
        kept = self.progress.average if self.progress is not None else None
        if kept is not None:  # the loader checked its arrays against the network's weights
            average.load(self.progress.average_count, kept)
        else:  # a new run, or a progress file from before averaging: start at the weights
            average.reset()
        return average

    def _fit_colour(self, pretrained: bool) -> None:
        """Start the colour branch at the least-squares fit of the training pairs (of what the
        pretrained network leaves, when there is one: its colour branch is still zero)."""
        from ccat_tf import colour_fit
        from ccat_tf.model import Model

        xs, ys = self.cache.level(1.0)
        base = None
        if pretrained:
            plan = crop_plan(self.settings, self.info, 1, self.arch, self.fine_detail)
            meta = model_info(
                self.settings,
                self.info,
                plan,
                self.arch,
                run_name="",
                step=0,
                total=1,
                last_loss=None,
                val_psnr=None,
            )
            model = Model(self.net, meta).as_saved()

            def base(i):
                x = np.asarray(xs[i], np.float32)
                out = model.network_output(model.network_input(x)[None])[0]
                return out[: x.shape[0], : x.shape[1]]

        rms = colour_fit.initialise(
            self.net,
            xs,
            ys,
            position=self.arch.position,
            residual=self.info.residual,
            seed=self.settings.seed,
            base=base,
        )
        _say(f"colour branch starts at the least-squares fit of the training pairs (RMS {rms:.4f})")

    def _plan_for_time_limit(self) -> None:
        """Measure seconds per step of each stage, resolve model_size auto, plan the total."""
        from ccat_tf import time_plan

        s = self.settings
        shares = stage_shares(s.use_multi_resolution_training, self.fine_detail)
        timed = self._measure()
        left = self._seconds_left()
        why = ""
        if s.model_size == "auto":
            channels = self._network_channels()
            size, why = time_plan.choose_size(self.arch.model_size, timed, left, shares, channels)
            if size != self.arch.model_size:
                self.arch = new_architecture(s, size)
                self._build_network()
                timed = self._measure()
                left = self._seconds_left()
            why = f"model_size auto: {self.arch.model_size} ({why}); "
        self.total = time_plan.steps_for(left * (1 - time_plan.OVERHEAD_SHARE), timed, shares)
        self.schedule.set_total(self.total)
        self.step_seconds, self.max_total = timed, self.total * time_plan.MAX_GROWTH
        speed = ", ".join(f"{t:.3f}" for t in timed)
        _say(
            f"{why}time_limit {s.time_limit:g} min: measured {speed} s/step by stage, "
            f"{left:.0f} s left: planned {self.total} steps"
        )

    def _network_channels(self) -> tuple[int, int]:
        """The network's input channels (the image's, then any coordinates) and outputs."""
        return int(self.net.inputs[0].shape[-1]), len(self.info.output_channels)

    def _measure(self) -> tuple[float, ...]:
        from ccat_tf import time_plan

        probe = crop_plan(self.settings, self.info, 1000, self.arch, self.fine_detail)
        return time_plan.measure(
            self.loop, self.net, self.optimizer, self.cache, probe, *self._network_channels()
        )

    def _seconds_left(self) -> float:
        """Seconds of the time limit left for training steps (the final .cat's share kept)."""
        from ccat_tf import time_plan

        limit = self.settings.time_limit * 60.0
        return limit - (time.monotonic() - self.started) - time_plan.reserve_seconds(limit)

    def open(self) -> None:
        """This run's entry in the run table, the crop plan and the context the callbacks
        share (validation pairs, preview frames, the summary writer)."""
        if not self.writes:  # rank 0 keeps the run table; this rank writes nothing
            self.run = {"id": -1, "name": f"rank{self.cluster.rank}"}
            plan = crop_plan(self.settings, self.info, self.total, self.arch, self.fine_detail)
            self._set_plan(self._resumed_stages(plan))
            self.ctx = self._context()
            return
        if self.replaced is not None:
            kept = ost.set_aside(self.data_dir, self.replaced.run_name)
            change = _describe_change(self.replaced.signature, self.signature)
            _say(
                f"settings changed ({change}): starting a new run; {self.replaced.run_name}'s "
                f"progress is kept as {kept.name if kept else '-'}"
            )
        resolved = {"batch_size_resolved": self.info.batch_size}
        resolved["crop_size_resolved"] = self.info.crop_size
        resolved["model_size_resolved"] = self.arch.model_size
        self.run = runtable.start_run(
            self.data_dir,
            settings=self.settings.to_dict() | resolved,
            first_step=self.start_step,
            total_steps=self.total,
            name=self.settings.run_name,
        )
        plan = crop_plan(self.settings, self.info, self.total, self.arch, self.fine_detail)
        self._set_plan(self._resumed_stages(plan))
        self.ctx = self._context()

    def _set_plan(self, plan) -> None:
        """Train by ``plan``; the learning rate warms up again at each of its stages' starts."""
        self.plan = plan
        self.schedule.set_stages(plan.stage_bounds)

    def _resumed_stages(self, plan):
        """For a resumed time-limited run, ``plan`` with the stage bounds its progress file kept
        (its last stage may have re-planned the total, not the stages), where they fit its
        total. Other runs' stages follow their total (a resume with more epochs stretches them)."""
        if not (self.progress and self.settings.time_limit):
            return plan
        bounds = (self.progress.extra or {}).get("stage_bounds")
        if (
            isinstance(bounds, list)
            and len(bounds) == 3
            and all(type(b) is int for b in bounds)
            and 0 == bounds[0] <= bounds[1] <= bounds[2] <= self.total
        ):
            return replace(plan, stage_bounds=tuple(bounds))
        return plan

    def _context(self) -> RunContext:
        from ccat_tf.callbacks import RunContext
        from ccat_tf.model import Model

        info = self.info
        ctx = RunContext(
            data_directory=self.data_dir,
            run_id=self.run["id"],
            run_name=self.run["name"],
            start_step=self.start_step,
            total_steps=self.total,
            info=info,
            plan=self.plan,
            cache=self.cache,
            settings=self.settings,
            saver=self,
            hooks=self.hooks,
            step=self.start_step,
            last_loss=self.progress.last_loss if self.progress else None,
            writes=self.writes,
            rank=self.cluster.rank if self.cluster is not None else 0,
        )
        ctx.schedule = self.schedule
        ctx.average = self.average
        if self.progress is not None and hasattr(ctx, "restore_persistent_state"):
            ctx.restore_persistent_state(self.progress.extra)
        if info.validation_frames:
            frames = info.validation_frames
            ctx.validation_cache = FrameCache.build_in_memory(info, [1.0], frames=frames)
        ctx.model = Model(self.net, self.metadata(self.start_step))
        if not self.writes:
            return ctx
        if info.preview and info.preview_frames:
            ctx.preview_frames = _load_previews(info)
        ctx.writer = summaries.open_writer(ctx.summary_folder)
        return ctx

    def fit(self) -> None:
        """The on_training_start hook, then the training loop over the remaining steps (stopped
        early by a NaN loss, a signal, a hook or the time limit: see :meth:`raise_if_stopped`)."""
        from ccat_tf.callbacks import FirstStep, standard_callbacks

        n_in, n_out = self._network_channels()
        last = max(self.total, self.max_total)
        ds = make_tf_dataset(
            self.cache, self.plan, self.start_step, last, n_in, n_out, lambda: self.plan
        )
        # Other ranks print at most a line per checkpoint: no progress bar there.
        bar = self.progress_bar and self.writes
        cbs, stopper = standard_callbacks(self.ctx, progress_bar=bar)
        if self.settings.time_limit:
            cbs[:0] = self._time_limit_callbacks()
        cbs.extend(self.user_callbacks)
        if self.writes:
            self._start_hooks()
        if self.watchdog is not None:
            cbs.insert(0, FirstStep(self.watchdog.stop))
        stopper.install()
        self.loop.stop_wanted = lambda: stopper.received is not None
        try:
            self.loop.fit(ds, last - self.start_step, cbs, self.info.batch_size)
        except Exception as err:
            self._raise_if_rank_lost(err)
            raise
        finally:
            stopper.uninstall()

    def _start_hooks(self) -> None:
        from ccat_tf.hooks import call_hooks

        call_hooks(
            "on_training_start",
            self.hooks["on_training_start"],
            settings=self.settings.to_dict(),
            data_directory=str(self.data_dir),
            run_name=self.run["name"],
            start_step=self.start_step,
            total_steps=self.total,
        )

    def _raise_if_rank_lost(self, err: Exception) -> None:
        """A collective that failed because another rank died or stopped answering: a
        RankError naming it (the last saved progress stays; training again resumes)."""
        if self.cluster is None:
            return
        from ccat_tf import distributed

        lost = distributed.lost_rank_error(err, self.cluster, self.settings.rank_timeout)
        if lost is not None:
            raise lost from None

    def _time_limit_callbacks(self) -> list:
        """The deadline, and for a new run the re-planner (see :mod:`ccat_tf.time_plan`)."""
        from ccat_tf import time_plan

        limit = self.settings.time_limit * 60.0
        self.deadline = self.started + limit - time_plan.reserve_seconds(limit)
        cbs = [time_plan.Deadline(self.ctx, self.deadline)]
        if self.step_seconds:
            cbs.append(
                time_plan.Replanner(
                    self.start_step,
                    lambda: self.total,
                    lambda step: self.plan.stage_of(step),
                    len(STAGE_SCALES) - 1,
                    self._replan,
                )
            )
        return cbs

    def _replan(self, step: int, seconds_per_step: float, stage: int) -> None:
        """Re-plan the total from the speed the run really has (``seconds_per_step`` so far in
        ``stage``, overheads included): in the first stage the stages move with the total; in
        the last its length alone changes (the stages before it are done). The learning-rate
        decay and the run table follow."""
        from ccat_tf import time_plan

        left = (self.deadline - time.monotonic()) * (1 - time_plan.OVERHEAD_SHARE / 2)
        if stage == 0:
            # What a step really costs beyond the measured one (contact sheets, progress files,
            # summaries, a busier machine) is added to every stage's measured time.
            extra = seconds_per_step - self.step_seconds[0]
            predicted = tuple(max(t + extra, 0.2 * t) for t in self.step_seconds)
            shares = stage_shares(self.settings.use_multi_resolution_training, self.fine_detail)
            total = time_plan.steps_for(left, predicted, shares, done=step)
        else:
            total = step + max(1, int(left / seconds_per_step))
        total = min(self.max_total, total)
        if abs(total - self.total) <= 0.02 * self.total:
            return
        self.total = self.ctx.total_steps = total
        self.schedule.set_total(total)
        if stage == 0:  # later, the stages before the last are done: the plan stays
            self._set_plan(crop_plan(self.settings, self.info, total, self.arch, self.fine_detail))
            self.ctx.plan = self.plan
        with contextlib.suppress(CcatError):
            runtable.update_run(self.data_dir, self.run["id"], total_steps=total)

    def raise_if_stopped(self) -> None:
        """Raise for a run that stopped early: a NaN loss, or a signal once progress is saved.
        A run stopped by its time limit ends at the step it reached (its new total)."""
        ctx = self.ctx
        if ctx.stop_reason == "time" and ctx.step < self.total:
            _say(f"time limit reached at step {ctx.step} of the {self.total} planned; ending there")
            self.total = ctx.total_steps = ctx.step
            ctx.last_progress_step = -1  # the .ost saved at the stop names the old total
            with contextlib.suppress(CcatError):
                runtable.update_run(self.data_dir, self.run["id"], total_steps=self.total)
            return
        if ctx.stop_reason == "nan":
            raise NonFiniteLoss(
                f"training stopped: {ctx.stop_detail}; the last good checkpoint and progress in "
                f"{self.data_dir} were kept. Check the data set for extreme values or lower "
                "learning_rate"
            )
        if ctx.stop_reason and ctx.stop_reason.startswith("signal:"):
            if not self.writes:
                raise TrainingInterrupted(
                    f"rank {ctx.rank}: stopped at step {ctx.step} of {self.total} with every "
                    "rank (a rank got SIGTERM/SIGINT); rank 0 saved the progress; train again "
                    "with the same settings to resume"
                )
            # The writer already saved this step when it saw the stop; saving it again would
            # rotate the older progress file (the fallback if this one is damaged) away.
            if ctx.last_progress_step != ctx.step:
                self.save_progress(ctx.step)
            err = TrainingInterrupted(
                f"{ctx.stop_reason[7:]} received: progress saved at step {ctx.step} of "
                f"{self.total} in {self.data_dir / ost.CURRENT}; train again with the same "
                "settings to resume"
            )
            if ctx.stop_reason == "signal:SIGINT":
                err.exit_code = 130
            raise err

    def finish(self) -> Path:
        """The final checkpoint (with validation, preview and the on_checkpoint hook), the last
        contact sheet if the interval skipped it, the on_training_end hook, the output copy."""
        from ccat_tf.callbacks import DataDirectoryWriter
        from ccat_tf.hooks import call_hooks

        if not self.writes:
            _say(f"rank {self.cluster.rank}: trained {self.total} steps; rank 0 writes the model")
            return self.data_dir
        writer = DataDirectoryWriter(self.ctx)
        final = writer.checkpoint(self.total)
        if self.total % self.settings.contact_sheet_interval:
            writer.contact_sheet(self.total)
        call_hooks(
            "on_training_end",
            self.hooks["on_training_end"],
            path=str(final),
            step=self.total,
            loss=self.ctx.last_loss,
            data_directory=str(self.data_dir),
            run_name=self.run["name"],
        )
        return self._deliver(final)

    def close(self, status: str) -> None:
        """Close the summary writer, the data pipelines and the cache; record how the run ended
        (and where its time went) in the run table."""
        ctx = self.ctx
        if ctx.writer is not None:
            summaries.close_writer_quietly(ctx.writer)
        with self.phase("data pipeline end"):
            self.loop.release()
        self.cache.close()
        if not self.writes:
            return
        timing = self.timing()
        _say("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in timing.items()))
        with contextlib.suppress(CcatError):
            runtable.update_run(
                self.data_dir,
                self.run["id"],
                status=status,
                last_step=ctx.step,
                last_loss=ctx.last_loss,
                ended=_now(),
                seconds=timing,
            )

    def _deliver(self, final: Path) -> Path:
        if self.output is None:
            return final
        _copy_model(final, self.output)
        return self.output

    # ---- what the callbacks save through ---------------------------------------------------
    def save_model(self, path: Path, step: int) -> Path:
        """A .cat of the network at ``step``."""
        from ccat_tf.model import Model

        return Model(self.net, self.metadata(step)).save(path)

    def metadata(self, step: int):
        """The :class:`~ccat_tf.model_info.ModelInfo` of this run's network at ``step``."""
        return model_info(
            self.settings,
            self.info,
            self.plan,
            self.arch,
            run_name=self.run["name"],
            step=step,
            total=self.total,
            last_loss=self.ctx.last_loss if self.ctx else None,
            val_psnr=self.ctx.val_psnr if self.ctx else None,
        )

    def save_progress(self, step: int) -> Path:
        """The .ost: weights, every optimizer variable, the weights' moving average, the step
        and what the run must match."""
        count, average = self.average.state() if self.average is not None else (0, None)
        return ost.save_progress(
            self.data_dir,
            ost.Progress(
                step=step,
                total_steps=self.total,
                stage=self.plan.stage_of(max(step - 1, 0)),
                run_id=self.run["id"],
                run_name=self.run["name"],
                signature=self.signature,
                settings=self.settings.to_dict(),
                dataset=self.info.to_dict(),
                weights=self.net.get_weights(),
                optimizer=[v.numpy() for v in self.optimizer.variables],
                last_loss=self.ctx.last_loss,
                architecture={**asdict(self.arch), "residual": self.info.residual},
                extra=self.ctx.persistent_state() if hasattr(self.ctx, "persistent_state") else {},
                average=average,
                average_count=count,
            ),
        )


def _scratch_folder() -> Path:
    """A folder of this process's own (an HDF5 frame cache of a rank other than 0)."""
    import tempfile

    return Path(tempfile.mkdtemp(prefix="ccat_tf_rank_"))


def _close_stale_runs(data_dir: Path, progress) -> None:
    """Runs still marked running belong to a process that died (we hold the lock): say so."""
    for run in runtable.load_runs(data_dir):
        if run.get("status") == "running":
            fields = {"status": "interrupted"}
            if progress is not None and progress.run_id == run["id"]:
                fields.update(last_step=progress.step, last_loss=progress.last_loss)
            runtable.update_run(data_dir, run["id"], **fields)


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _restore(net, optimizer, progress: ost.Progress) -> None:
    problem = len(progress.weights) != len(net.get_weights()) or len(progress.optimizer) != len(
        optimizer.variables
    )
    if not problem:
        try:
            net.set_weights(progress.weights)
            for var, value in zip(optimizer.variables, progress.optimizer, strict=True):
                var.assign(value)
        except ValueError:
            problem = True
    if problem:
        raise ModelFileError(
            f"progress file {progress.path} does not match this model; move it away to start a new run"
        )


def _load_initial(net, initial: tuple[Path, dict]) -> set[str]:
    """Copy the initial weights into ``net`` layer by layer (by name); return the names loaded.

    A network trained without position awareness or colour branch (the shipped pretrained
    weights) fits today's: its first convolution's kernel gets zero weights for the coordinate
    and colour-fit channels, so it starts computing exactly what it computed; layers the source
    lacks (the colour branch) keep their own start.
    """
    from ccat_tf.model import open_model

    path, _ = initial
    source = {layer.name: layer for layer in open_model(path).net.layers if layer.weights}
    loaded = set()
    for layer in net.layers:
        if not layer.weights or not layer.trainable:
            continue
        src = source.pop(layer.name, None)
        if src is None:
            continue
        weights = _fitted(src.get_weights(), layer.get_weights())
        if weights is None:
            raise ModelFileError(
                f"initial weights {path} do not fit this model's layer {layer.name}; use a .cat "
                "trained with the same model_size and channels"
            )
        layer.set_weights(weights)
        loaded.add(layer.name)
    unused = [name for name, layer in source.items() if layer.trainable]
    if unused or not loaded:
        raise ModelFileError(
            f"initial weights {path} do not fit this model's layers ({', '.join(unused[:3]) or 'none shared'}); "
            "use a .cat trained with the same model_size and channels"
        )
    _say(f"initial weights from {path}")
    return loaded


def _fitted(src: list, dst: list) -> list | None:
    """``src`` weights shaped as ``dst``: equal, or a kernel with fewer input channels padded
    with zeros (new input channels start unused). None if they cannot fit."""
    out = []
    for a, b in zip(src, dst, strict=False):
        if a.shape == b.shape:
            out.append(a)
        elif (
            a.ndim == 4
            and a.shape[:2] == b.shape[:2]
            and a.shape[3] == b.shape[3]
            and (a.shape[2] < b.shape[2])
        ):
            padded = np.zeros(b.shape, a.dtype)
            padded[:, :, : a.shape[2], :] = a
            out.append(padded)
        else:
            return None
    return out if len(src) == len(dst) else None


def _load_previews(info: DataSetInfo):
    """(frame, pixels) of the preview frames; the model's recipe encodes them."""
    from ccat_tf import frames as framespec
    from ccat_tf import imageio

    out = []
    for frame in info.preview_frames:
        x = imageio.read_image(framespec.frame_path(info.preview, frame), info.input_channels)
        out.append((frame, x))
    return out


def model_info(
    settings: TrainSettings,
    info: DataSetInfo,
    plan: CropPlan,
    arch,
    *,
    run_name: str,
    step: int,
    total: int,
    last_loss: float | None,
    val_psnr: float | None,
):
    """The :class:`~ccat_tf.model_info.ModelInfo` of a run's network at ``step``."""
    from ccat_tf.model_info import ModelInfo

    return ModelInfo(
        input_channels=tuple(info.input_channels),
        output_channels=tuple(info.output_channels),
        input_transform=tuple(info.input_transform),
        output_transform=tuple(info.output_transform),
        divisor=plan.divisor,
        residual=info.residual,
        model_size=arch.model_size,
        position=arch.position,
        colour=arch.colour,
        colour_input=arch.colour_input,
        position_fit_only=arch.position_fit_only,
        step=step,
        total_steps=total,
        epochs=settings.epochs,
        batch_size=info.batch_size,
        crop_size=info.crop_size,
        stage=plan.stage_of(max(step - 1, 0)),
        run_name=run_name,
        dataset={
            "input": info.input,
            "ground_truth": info.ground_truth,
            "frames": info.frames,
            "width": info.width,
            "height": info.height,
            "hdr": info.hdr,
        },
        last_loss=last_loss,
        val_psnr=val_psnr,
        settings={k: v for k, v in settings.to_dict().items() if not callable(v)},
    )


def _final_cat_from_progress(
    data_dir: Path, progress: ost.Progress, settings: TrainSettings, info: DataSetInfo, total: int
) -> Path:
    """The finished run's final .cat; rebuilt from the .ost if it was deleted or is damaged."""
    from ccat_tf.model import Model, read_info
    from ccat_tf.models import build_model

    path = data_dir / f"{progress.run_name}.step{total:07d}.cat"
    if path.exists():
        try:
            read_info(path)  # never hand out (or copy to --output) a damaged file
            return path
        except ModelFileError as err:
            import warnings

            warnings.warn(f"{err}; rebuilding it from {progress.path}", stacklevel=2)
    arch = architecture_of(progress)
    n_in, n_out = len(info.input_channels), len(info.output_channels)
    net = build_model(n_in, n_out, arch, residual=info.residual)
    net.set_weights(progress.weights)
    if progress.average is not None:  # what the run's .cat holds: the moving average
        for var, value in zip(net.trainable_variables, progress.average, strict=True):
            var.assign(value)
    plan = crop_plan(settings, info, total, arch)
    meta = model_info(
        settings,
        info,
        plan,
        arch,
        run_name=progress.run_name,
        step=total,
        total=total,
        last_loss=progress.last_loss,
        val_psnr=None,
    )
    return Model(net, meta).save(path)


def _copy_model(src: Path, dst) -> None:
    from ccat_tf.atomic import atomic_path

    dst = Path(dst)
    with atomic_path(dst) as tmp:
        tmp.write_bytes(Path(src).read_bytes())
