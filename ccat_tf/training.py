"""``ccat_tf.train``: CopyCat's training node.

One call validates the data set, decides whether this is a new run or a resume, builds the model
under a ``tf.distribute.MirroredStrategy``, and runs Keras ``fit`` with a custom ``train_step``
and the callbacks that write the Data Directory (.cat checkpoints, .ost progress, contact sheets,
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
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from ccat_tf import runs as runtable
from ccat_tf import state as ost
from ccat_tf import summary as summaries
from ccat_tf.atomic import LOCK_NAME, DirectoryLock, remove_stale_temps
from ccat_tf.dataset import (
    STAGE_SCALES,
    CropPlan,
    DataSetInfo,
    FrameCache,
    make_tf_dataset,
    open_cache,
    stage_bounds,
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
from ccat_tf.settings import TrainSettings

# Settings that may change between a run and its resume without invalidating the progress.
COMPATIBLE_KEYS = {
    "epochs",
    "checkpoint_interval",
    "contact_sheet_interval",
    "preview",
    "preview_frames",
    "validation_frames",
    "run_name",
    "on_training_start",
    "on_checkpoint",
    "on_training_end",
    "use_gpu_if_available",
    "cache",
    "cache_file",
    "data_directory",
}

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
    sig["resolved"] = {
        "batch_size": info.batch_size,
        "crop_size": info.crop_size,
        "input_channels": info.input_channels,
        "output_channels": info.output_channels,
        "input_transform": info.input_transform,
        "output_transform": info.output_transform,
        "frames": info.frames,
    }
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
    """Keras model around ``net`` whose train_step minimises ``loss`` (``mae`` or ``mse``)."""
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
                loss = tf.reduce_mean(tf.abs(error) if loss_kind == "mae" else tf.square(error))
                # Gradients are summed across replicas: scale so the sum is the global mean.
                scaled = self.optimizer.scale_loss(loss)
            variables = self.network.trainable_variables
            grads = tape.gradient(scaled, variables)
            self.optimizer.apply(grads, variables)
            return {"loss": loss}

    if loss not in ("mae", "mse"):
        raise ValueError(f"unknown loss {loss!r}")
    loss_kind = loss
    return CopyCatTrainer(net)


def _pretrained_path(kind: str, model_size: str) -> Path:
    ref = resources.files("ccat_tf") / "weights" / f"{kind}_{model_size}.cat"
    return Path(str(ref))


def _initial_weights(settings: TrainSettings, info: DataSetInfo) -> tuple[Path, dict] | None:
    from ccat_tf import catfile

    kind = settings.initial_weights
    n_in, n_out = len(info.input_channels), len(info.output_channels)
    if kind == "none":
        return None
    if kind == "checkpoint":
        path = Path(settings.checkpoint_file)
        meta = catfile.read_metadata(path)
        catfile.check_compatible(
            meta, path=path, model_size=settings.model_size, in_channels=n_in, out_channels=n_out
        )
        return path, meta
    want_in, want_out, what = PRETRAINED[kind]
    if (n_in, n_out) != (want_in, want_out):
        raise SettingsError(
            f"initial_weights {kind} fits {what} models, but this run maps {n_in} -> {n_out} "
            f"channels; use input_channels/output_channels {what.replace(' -> ', ' / ')} or "
            "initial_weights none"
        )
    path = _pretrained_path(kind, settings.model_size)
    if not path.exists():
        raise ModelFileError(
            f"pretrained weights {kind} ({settings.model_size}) are not installed at {path}; "
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

    Raises CcatError subclasses for every user-fixable problem; TrainingInterrupted (exit 75)
    after SIGTERM/SIGINT once progress is saved.
    """
    if not isinstance(settings, TrainSettings):
        settings = TrainSettings.from_mapping(settings, **kw)
    elif kw:
        settings = TrainSettings.from_mapping({**settings.to_dict(), **kw})
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
    from ccat_tf.hooks import call_hooks, resolve_hooks

    hooks = {
        name: resolve_hooks(getattr(settings, name))
        for name in ("on_training_start", "on_checkpoint", "on_training_end")
    }
    created = _first_missing(data_dir)
    try:
        with DirectoryLock(data_dir, purpose="training"):
            for leftover in remove_stale_temps(data_dir):
                _say(f"removed {leftover.name}, a partial file left by an interrupted write")
            return _train_locked(
                settings,
                data_dir,
                output,
                list(callbacks),
                devices,
                progress_bar,
                hooks,
                call_hooks,
            )
    except BaseException:
        if created is not None:
            _remove_if_only_the_lock(data_dir, created)
        raise


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


def _train_locked(
    settings, data_dir, output, user_callbacks, devices, progress_bar, hooks, call_hooks
):
    info = validate_dataset(settings)
    for notice in info.notices:
        _say(notice)
    _say(info.channels_line())
    signature = signature_of(settings, info)
    progress = ost.load_latest_progress(data_dir)
    _close_stale_runs(data_dir, progress)
    # An incompatible change starts a new run, but the old run's progress.ost is set aside only
    # once the new run has passed every check (initial weights, cache): a bad setting must leave
    # the Data Directory as it was, still resumable.
    replaced = None
    if progress is not None and progress.signature != signature:
        replaced, progress = progress, None
    total = info.total_steps
    if progress is not None:
        if progress.step >= total:
            _say(
                f"{progress.run_name} already trained {progress.step} of {total} steps; nothing to do"
            )
            final = _final_cat_from_progress(data_dir, progress, settings, info, signature, total)
            if output:
                _copy_model(final, output)
            return Path(output) if output else final
        _say(f"resuming {progress.run_name} at step {progress.step} of {total}")
    start_step = progress.step if progress else 0

    # ---- TensorFlow, strategy, model ---------------------------------------------------------
    all_devices = _configure_tensorflow(settings, devices)
    import keras
    import tensorflow as tf

    replica_devices = _replicas_for(all_devices, info.batch_size)
    strategy = tf.distribute.MirroredStrategy(devices=replica_devices)
    if len(replica_devices) > 1:
        _say(f"training on {len(replica_devices)} replicas: {', '.join(replica_devices)}")
    from ccat_tf.models import build_model, divisor

    n_in, n_out = len(info.input_channels), len(info.output_channels)
    initial = None if progress else _initial_weights(settings, info)
    keras.utils.set_random_seed(settings.seed)
    with strategy.scope():
        net = build_model(n_in, n_out, settings.model_size, residual=info.residual)
        trainer = _make_trainer(net)
        optimizer = keras.optimizers.Adam(learning_rate=settings.learning_rate)
        trainer.compile(optimizer=optimizer, jit_compile=False)
        optimizer.build(net.trainable_variables)
        if progress is not None:
            _restore(net, optimizer, progress)
        elif initial is not None:
            _load_initial(net, initial)

    # ---- run table, data, callbacks ----------------------------------------------------------
    notices: list[str] = []
    cache = open_cache(info, settings, data_dir, notices)
    for n in notices:
        _say(n)
    if replaced is not None:
        kept = ost.set_aside(data_dir, replaced.run_name)
        _say(
            f"settings changed ({_describe_change(replaced.signature, signature)}): starting a new "
            f"run; {replaced.run_name}'s progress is kept as {kept.name if kept else '-'}"
        )
    run = runtable.start_run(
        data_dir,
        settings=settings.to_dict()
        | {"batch_size_resolved": info.batch_size, "crop_size_resolved": info.crop_size},
        first_step=start_step,
        total_steps=total,
        name=settings.run_name,
    )
    bounds = stage_bounds(total, settings.use_multi_resolution_training)
    plan = CropPlan(
        seed=settings.seed,
        pairs=info.pairs,
        batch_size=info.batch_size,
        crop_size=info.crop_size,
        divisor=divisor(settings.model_size),
        stage_bounds=tuple(bounds),
        stage_scales=STAGE_SCALES if settings.use_multi_resolution_training else (1.0, 1.0, 1.0),
        frame_hw=(info.height, info.width),
        augment=settings.augment,
    )
    ds = make_tf_dataset(cache, plan, start_step, total, n_in, n_out)

    from ccat_tf.callbacks import RunContext, standard_callbacks
    from ccat_tf.model import Model

    def save_model(path, step):
        return _save_checkpoint(
            path, net, settings, info, run, step, total, plan, ctx.last_loss, ctx.val_psnr
        )

    def save_progress(step):
        return ost.save_progress(
            data_dir,
            ost.Progress(
                step=step,
                total_steps=total,
                stage=plan.stage_of(max(step - 1, 0)),
                run_id=run["id"],
                run_name=run["name"],
                signature=signature,
                settings=settings.to_dict(),
                dataset=info.to_dict(),
                weights=net.get_weights(),
                optimizer=[v.numpy() for v in optimizer.variables],
                last_loss=ctx.last_loss,
            ),
        )

    ctx = RunContext(
        data_directory=data_dir,
        run_id=run["id"],
        run_name=run["name"],
        start_step=start_step,
        total_steps=total,
        net=net,
        optimizer=optimizer,
        info=info,
        plan=plan,
        cache=cache,
        settings=settings,
        signature=signature,
        save_model=save_model,
        save_progress=save_progress,
        hooks=hooks,
        step=start_step,
        last_loss=progress.last_loss if progress else None,
    )
    if info.validation_frames:
        ctx.validation_cache = FrameCache.build_in_memory(
            info, [1.0], frames=info.validation_frames
        )
    ctx.model = Model(net, _metadata(settings, info, run, start_step, total, plan, None, None))
    if info.preview and info.preview_frames:
        ctx.preview_frames = _load_previews(info)
    ctx.writer = summaries.open_writer(ctx.summary_folder)
    cbs, stopper = standard_callbacks(ctx, progress_bar=progress_bar)
    cbs.extend(user_callbacks)

    status = "failed"
    try:
        call_hooks(
            "on_training_start",
            hooks["on_training_start"],
            settings=settings.to_dict(),
            data_directory=str(data_dir),
            run_name=run["name"],
            start_step=start_step,
            total_steps=total,
        )
        stopper.install()
        try:
            trainer.fit(
                ds,
                epochs=1,
                steps_per_epoch=total - start_step,
                verbose=0,
                callbacks=cbs,
                shuffle=False,
            )
        finally:
            stopper.uninstall()
        if ctx.stop_reason == "nan":
            status = "failed"
            raise NonFiniteLoss(
                f"training stopped: {ctx.stop_detail}; the last good checkpoint and progress in "
                f"{data_dir} were kept. Check the data set for extreme values or lower learning_rate"
            )
        if ctx.stop_reason and ctx.stop_reason.startswith("signal:"):
            status = "interrupted"
            # The writer already saved this step when it saw the stop; saving it again would
            # rotate the older progress file (the fallback if this one is damaged) away.
            if ctx.last_progress_step != ctx.step:
                ctx.save_progress(ctx.step)
            err = TrainingInterrupted(
                f"{ctx.stop_reason[7:]} received: progress saved at step {ctx.step} of {total} in "
                f"{data_dir / ost.CURRENT}; train again with the same settings to resume"
            )
            if ctx.stop_reason == "signal:SIGINT":
                err.exit_code = 130
            raise err
        # Finished: the final checkpoint (with validation, preview and the on_checkpoint hook),
        # the last contact sheet if the interval skipped it, and the progress at the end.
        from ccat_tf.callbacks import DataDirectoryWriter

        writer = DataDirectoryWriter(ctx)
        final = writer.checkpoint(total)
        if total % settings.contact_sheet_interval:
            writer.contact_sheet(total)
        status = "finished"
        call_hooks(
            "on_training_end",
            hooks["on_training_end"],
            path=str(final),
            step=total,
            loss=ctx.last_loss,
            data_directory=str(data_dir),
            run_name=run["name"],
        )
        if output:
            _copy_model(final, output)
            return Path(output)
        return final
    except HookError:
        status = "failed"
        if ctx.step > start_step and ctx.last_progress_step != ctx.step:
            ctx.save_progress(ctx.step)
        raise
    finally:
        if ctx.writer is not None:
            summaries.close_writer_quietly(ctx.writer)
        cache.close()
        try:
            runtable.update_run(
                data_dir,
                run["id"],
                status=status,
                last_step=ctx.step,
                last_loss=ctx.last_loss,
                ended=_now(),
            )
        except CcatError:
            pass


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
    if len(progress.weights) != len(net.get_weights()) or len(progress.optimizer) != len(
        optimizer.variables
    ):
        raise ModelFileError(
            f"progress file {progress.path} does not match this model; move it away to start a new run"
        )
    net.set_weights(progress.weights)
    for var, value in zip(optimizer.variables, progress.optimizer, strict=True):
        var.assign(value)


def _load_initial(net, initial: tuple[Path, dict]) -> None:
    from ccat_tf.model import open_model

    path, _ = initial
    src = open_model(path).net.get_weights()
    dst = net.get_weights()
    if len(src) != len(dst) or any(a.shape != b.shape for a, b in zip(src, dst, strict=True)):
        raise ModelFileError(
            f"initial weights {path} do not fit this model's layers; use a .cat trained with the "
            "same model_size and channels"
        )
    net.set_weights(src)
    _say(f"initial weights from {path}")


def _load_previews(info: DataSetInfo):
    """(frame, pixels) of the preview frames; the model's recipe encodes them."""
    from ccat_tf import frames as framespec
    from ccat_tf import imageio

    out = []
    for frame in info.preview_frames:
        x = imageio.read_image(framespec.frame_path(info.preview, frame), info.input_channels)
        out.append((frame, x))
    return out


def _metadata(settings, info, run, step, total, plan, last_loss, val_psnr):
    """The :class:`~ccat_tf.model_info.ModelInfo` of this run's network at ``step``."""
    from ccat_tf.model_info import ModelInfo

    return ModelInfo(
        input_channels=tuple(info.input_channels),
        output_channels=tuple(info.output_channels),
        input_transform=tuple(info.input_transform),
        output_transform=tuple(info.output_transform),
        divisor=plan.divisor,
        residual=info.residual,
        model_size=settings.model_size,
        step=step,
        total_steps=total,
        epochs=settings.epochs,
        batch_size=info.batch_size,
        crop_size=info.crop_size,
        stage=plan.stage_of(max(step - 1, 0)),
        run_name=run["name"],
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


def _save_checkpoint(
    path, net, settings, info, run, step, total, plan, last_loss, val_psnr
) -> Path:
    from ccat_tf.model import Model

    info = _metadata(settings, info, run, step, total, plan, last_loss, val_psnr)
    return Model(net, info).save(path)


def _final_cat_from_progress(data_dir, progress, settings, info, signature, total) -> Path:
    """The finished run's final .cat; rebuilt from the .ost if it was deleted."""
    path = data_dir / f"{progress.run_name}.step{total:07d}.cat"
    if path.exists():
        from ccat_tf.model import read_info

        try:
            read_info(path)  # never hand out (or copy to --output) a damaged file
            return path
        except ModelFileError as err:
            import warnings

            warnings.warn(f"{err}; rebuilding it from {progress.path}", stacklevel=2)
    from ccat_tf.models import build_model, divisor

    net = build_model(
        len(info.input_channels),
        len(info.output_channels),
        settings.model_size,
        residual=info.residual,
    )
    net.set_weights(progress.weights)
    plan = CropPlan(
        settings.seed,
        info.pairs,
        info.batch_size,
        info.crop_size,
        divisor(settings.model_size),
        tuple(stage_bounds(total, settings.use_multi_resolution_training)),
        STAGE_SCALES,
        (info.height, info.width),
        settings.augment,
    )
    run = {"name": progress.run_name, "id": progress.run_id}
    return _save_checkpoint(
        path, net, settings, info, run, total, total, plan, progress.last_loss, None
    )


def _copy_model(src: Path, dst) -> None:
    from ccat_tf.atomic import atomic_path

    dst = Path(dst)
    with atomic_path(dst) as tmp:
        tmp.write_bytes(Path(src).read_bytes())


TrainHook = Callable[..., Any]
