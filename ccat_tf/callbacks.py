"""Keras callbacks that make a training run behave like CopyCat's.

They share one :class:`RunContext` (the run's step counter, files and stop reason). Order matters
and is fixed by :func:`standard_callbacks`: the non-finite guard runs first so that nothing is
saved from a step whose loss is NaN; the Data Directory writer runs before the progress bar.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import keras
import numpy as np

from ccat_tf import live, summary
from ccat_tf.atomic import atomic_write_json
from ccat_tf.averaging import in_network

if TYPE_CHECKING:
    from ccat_tf.dataset import CropPlan, DataSetInfo, FrameCache
    from ccat_tf.model import Model
    from ccat_tf.settings import TrainSettings


class Saver(Protocol):
    """What the callbacks save through (``training.TrainingRun``)."""

    def save_model(self, path: Path, step: int) -> Path: ...  # a .cat of the network at step

    def save_progress(self, step: int) -> Path: ...  # the .ost


@dataclass
class RunContext:
    """State shared by the callbacks of one run."""

    data_directory: Path
    run_id: int
    run_name: str
    start_step: int  # steps already done when this fit() started
    total_steps: int
    info: DataSetInfo
    plan: CropPlan
    cache: FrameCache
    settings: TrainSettings
    saver: Saver
    hooks: dict[str, list] = field(default_factory=dict)
    step: int = 0  # steps done so far (global)
    last_loss: float | None = None
    stop_reason: str | None = None  # 'nan', 'signal:SIGTERM', 'hook:<name>'
    stop_detail: str = ""
    last_checkpoint: Path | None = None
    last_progress_step: int = -1
    val_psnr: float | None = None
    validation_cache: FrameCache | None = None  # validation pairs (full resolution)
    preview_frames: list[tuple[int, np.ndarray]] = field(default_factory=list)  # as read
    model: Model | None = None  # the network's recipe: previews, validation, contact sheets
    writer: Any = None  # tf.summary writer (summary.open_writer)
    schedule: Any = None  # schedule.WarmupCosine, the optimizer's learning rate (its scale)
    guard: Any = None  # the guard.DivergenceGuard of this fit, once made
    average: Any = None  # averaging.WeightAverage: what validation and every file see, or None
    # ---- kept across a resume (persistent_state) ----
    lr_scale: float = 1.0  # the schedule's gentleness: x0.5 at each rollback
    rollbacks: int = 0  # rollbacks so far, in this training and those it resumed
    best_val_psnr: float | None = None  # the best checkpoint's (<run>.best.cat)
    best_step: int | None = None
    loss_watch: dict = field(default_factory=dict)  # guard.LossWatch.to_dict of a resumed run
    saved_state: dict | None = None  # persistent_state() as the last progress file has it
    # ---- distributed training (ccat_tf.distributed) ----
    writes: bool = True  # this process writes the Data Directory (rank 0, or a lone process)
    rank: int = 0

    @property
    def summary_folder(self) -> Path:
        """The run's folder of TensorBoard event files."""
        return self.data_directory / self.run_name

    def persistent_state(self) -> dict:
        """What must survive a resume (JSON): the progress file keeps it as ``extra``."""
        watch = self.guard.watch.to_dict() if self.guard is not None else dict(self.loss_watch)
        best = self.best_val_psnr
        bounds = getattr(self.plan, "stage_bounds", None)
        return {
            "lr_scale": self.lr_scale,
            "rollbacks": self.rollbacks,
            "best_val_psnr": best if best is not None and math.isfinite(best) else None,
            "best_step": self.best_step if best is not None and math.isfinite(best) else None,
            "loss_watch": watch,
            # a time-limited run's last stage may have changed its total but not its stages
            "stage_bounds": list(bounds) if bounds is not None else None,
        }

    def restore_persistent_state(self, state: dict) -> None:
        """Continue from :meth:`persistent_state`'s dict (read from a progress file: a value
        of the wrong kind keeps its default)."""
        state = state if isinstance(state, dict) else {}
        scale = state.get("lr_scale")
        if type(scale) in (int, float) and 0 < scale <= 1:
            self.lr_scale = float(scale)
        count = state.get("rollbacks")
        if type(count) is int and count >= 0:
            self.rollbacks = count
        best, step = state.get("best_val_psnr"), state.get("best_step")
        if type(best) in (int, float) and math.isfinite(best) and type(step) is int:
            self.best_val_psnr, self.best_step = float(best), step
        if isinstance(state.get("loss_watch"), dict):
            self.loss_watch = dict(state["loss_watch"])
            if self.guard is not None:
                self.guard.watch.load(self.loss_watch)
        if self.schedule is not None:
            self.schedule.scale.assign(self.lr_scale)


class StepCallback(keras.callbacks.Callback):
    def __init__(self, ctx: RunContext):
        super().__init__()
        self.ctx = ctx

    def global_step(self, batch: int) -> int:
        return self.ctx.start_step + batch + 1


class NonFiniteGuard(StepCallback):
    """Stop at the first NaN/Inf loss. Unlike TerminateOnNaN, nothing is saved after it."""

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))
        step = self.global_step(batch)
        if not math.isfinite(loss):
            self.ctx.stop_reason = "nan"
            self.ctx.stop_detail = f"loss became {loss} at step {step}"
            self.model.stop_training = True
            return
        self.ctx.step = step
        self.ctx.last_loss = loss


class SignalStop(StepCallback):
    """SIGTERM (a scheduler's preemption) or Ctrl-C: finish the step, save, stop cleanly."""

    def __init__(self, ctx: RunContext):
        super().__init__(ctx)
        self._received: str | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self._received:
            if name == "SIGINT":  # a second Ctrl-C: the user really wants out
                raise KeyboardInterrupt
            # Schedulers may send SIGTERM more than once (to the job and to its process
            # group); the save is already on its way, and must not be cut short.
            return
        self._received = name
        print(
            f"\nccat-tf: {name} received; saving progress at the end of this step", file=sys.stderr
        )

    @property
    def received(self) -> str | None:
        return self._received

    def on_train_batch_end(self, batch, logs=None):
        # The training loop shares every process's wish to stop (``logs["stop"]``), so all
        # ranks stop at the same step; a rank that got no signal itself stops as SIGTERM.
        logs = logs or {}
        wanted = logs["stop"] if "stop" in logs else self._received is not None
        if wanted and self.ctx.stop_reason is None:
            self.ctx.stop_reason = f"signal:{self._received or 'SIGTERM'}"
            self.model.stop_training = True


class DataDirectoryWriter(StepCallback):
    """Checkpoints (.cat), progress (.ost), contact sheets, previews, validation and hooks."""

    def on_train_batch_end(self, batch, logs=None):
        ctx = self.ctx
        if ctx.stop_reason == "nan":
            return
        step = self.global_step(batch)
        s = ctx.settings
        stopping = ctx.stop_reason is not None
        if not ctx.writes:  # another rank: the guard's validation only, no file
            if step % s.checkpoint_interval == 0 and step < ctx.total_steps:
                self.checkpoint(step)
            return
        if step % s.contact_sheet_interval == 0:
            self.contact_sheet(step)
        if step % s.checkpoint_interval == 0 and step < ctx.total_steps:
            self.checkpoint(step)
        elif step % s.contact_sheet_interval == 0 or stopping:
            # Progress is cheap to save: do it often so a kill loses few steps.
            self.progress(step)

    def progress(self, step: int) -> None:
        ctx = self.ctx
        # Again at the same step only if what it keeps besides the weights changed (a best
        # checkpoint or a rollback at the final step, after the step's own save).
        kept = ctx.persistent_state()
        if ctx.last_progress_step != step or kept != ctx.saved_state:
            ctx.saver.save_progress(step)
            ctx.last_progress_step, ctx.saved_state = step, kept

    def checkpoint(self, step: int) -> Path | None:
        """Validation (and the guard's check of it), then on the writing rank the .cat, the
        progress, latest.json, the preview and the on_checkpoint hook. Other ranks validate
        too (their guard must decide as rank 0's does), keep the best PSNR and say one line.
        Validation, the .cat files and the preview use the weights' moving average, if kept."""
        from ccat_tf.hooks import call_hooks

        ctx = self.ctx
        self.validate(step)
        if ctx.guard is not None and ctx.guard.check_validation(step):
            self.validate(step)  # the network it rolled back to
        if not ctx.writes:
            if self._is_best(ctx.val_psnr):
                ctx.best_val_psnr, ctx.best_step = ctx.val_psnr, step
            print(
                f"ccat-tf: rank {ctx.rank}: step {step}: checkpoint (rank 0 writes it)",
                file=sys.stderr,
                flush=True,
            )
            return None
        with in_network(ctx.average):
            # Before the step checkpoint, so that one is the newer file of the two (a Data
            # Directory without latest.json takes its newest .cat).
            self.best_checkpoint(step)
            path = ctx.saver.save_model(
                ctx.data_directory / f"{ctx.run_name}.step{step:07d}.cat", step
            )
        ctx.last_checkpoint = path
        self.progress(step)
        # The "latest" pointer moves only once the checkpoint it names is complete.
        atomic_write_json(ctx.data_directory / "latest.json", {"cat": path.name, "step": step})
        self.preview(step)
        if ctx.writer is not None:
            summary.flush_writer(ctx.writer, ctx.summary_folder)
        call_hooks(
            "on_checkpoint",
            ctx.hooks.get("on_checkpoint", []),
            step=step,
            path=str(path),
            loss=ctx.last_loss,
            val_psnr=ctx.val_psnr,
            data_directory=str(ctx.data_directory),
            run_name=ctx.run_name,
        )
        return path

    def best_checkpoint(self, step: int) -> Path | None:
        """``<run>.best.cat`` when this checkpoint's validation PSNR is the best so far."""
        from ccat_tf import runs

        ctx = self.ctx
        val = ctx.val_psnr
        if not self._is_best(val):
            return None
        path = ctx.saver.save_model(best_checkpoint_path(ctx.data_directory, ctx.run_name), step)
        ctx.best_val_psnr, ctx.best_step = val, step
        runs.update_run(ctx.data_directory, ctx.run_id, best_step=step, best_val_psnr=val)
        return path

    def _is_best(self, val: float | None) -> bool:
        best = self.ctx.best_val_psnr
        return val is not None and not math.isnan(val) and (best is None or val > best)

    # --- images ---------------------------------------------------------------------------
    def contact_sheet(self, step: int) -> None:
        from ccat_tf.contact_sheet import render_contact_sheet, to_display
        from ccat_tf.dataset import contact_sheet_crops

        ctx = self.ctx
        crops = contact_sheet_crops(ctx.cache, ctx.plan, step - 1)
        inputs = np.stack([c[0] for c in crops])
        # Training crops are already encoded and divisor-sized: the network step of the recipe.
        with in_network(ctx.average):
            outputs = ctx.model.as_saved().network_output(inputs)
        rows = []
        n_img = len(ctx.info.input_channels)  # crops of a position-aware run carry coordinates
        for (x, y), out in zip(crops, outputs, strict=True):
            rows.append(
                (
                    to_display(x[..., :n_img], ctx.info.input_transform),
                    to_display(y, ctx.info.output_transform),
                    to_display(out, ctx.info.output_transform),
                )
            )
        loss = f"{ctx.last_loss:.5f}" if ctx.last_loss is not None else "-"
        render_contact_sheet(
            rows,
            ctx.data_directory / f"{ctx.run_name}.contact.step{step:07d}.png",
            title=f"{ctx.run_name}  step {step}/{ctx.total_steps}  loss {loss}",
        )

    def preview(self, step: int) -> None:
        if not self.ctx.preview_frames:
            return
        from ccat_tf import transform
        from ccat_tf.contact_sheet import render_preview, to_display

        ctx = self.ctx
        kinds = ctx.info.output_transform
        images, labels = [], []
        with in_network(ctx.average):
            model = ctx.model.as_saved()
            for frame, pixels in ctx.preview_frames:
                out = model.predict(pixels)  # as ccat-tf infer would write it
                images.append(to_display(transform.encode(out, kinds), kinds))
                labels.append(f"frame {frame}")
        render_preview(
            images,
            ctx.data_directory / f"{ctx.run_name}.preview.step{step:07d}.png",
            labels=labels,
            title=f"{ctx.run_name}  preview at step {step}",
        )

    def validate(self, step: int) -> None:
        ctx = self.ctx
        if ctx.validation_cache is None:
            return
        from ccat_tf import transform
        from ccat_tf.model import output_psnr

        # On output values as a user sees them (decoded, clipped as output_psnr says), not in
        # training space; the cache holds training space, decoded back to pixels here.
        info = ctx.info
        xs, ys = ctx.validation_cache.level(1.0)
        outputs, truths = [], []
        with in_network(ctx.average):
            model = ctx.model.as_saved()  # what the .cat will hold
            for x, y in zip(xs, ys, strict=True):
                x = transform.decode(np.asarray(x), info.input_transform)
                outputs.append(model.predict(x))
                truths.append(transform.decode(np.asarray(y), info.output_transform))
        ctx.val_psnr = output_psnr(np.stack(outputs), np.stack(truths), info.output_transform)
        if ctx.writer is not None:
            summary.write_scalars(ctx.writer, ctx.summary_folder, step, {"val_psnr": ctx.val_psnr})


class SummaryLogger(StepCallback):
    """Loss, stage and speed of every step into the run's TensorBoard ``.summary`` file."""

    def on_train_begin(self, logs=None):
        ctx = self.ctx
        self._t = time.perf_counter()
        self._live = None
        if ctx.writer is not None:  # the writing rank: runs.json follows the run every 10 s
            self._live = live.LiveProgress(
                ctx.data_directory, ctx.run_id, writer=ctx.writer, summary_folder=ctx.summary_folder
            )

    def on_train_batch_end(self, batch, logs=None):
        ctx = self.ctx
        if ctx.writer is None or ctx.stop_reason == "nan":
            return
        step = self.global_step(batch)
        now = time.perf_counter()
        sps = 1.0 / max(now - self._t, 1e-9)
        self._t = now
        stage = ctx.plan.stage_of(step - 1)
        values = {
            "loss": float(logs["loss"]),
            "stage_scale": ctx.plan.stage_scales[stage],
            "steps_per_second": sps,
        }
        summary.write_scalars(ctx.writer, ctx.summary_folder, step, values)
        if self._live is not None:
            self._live.step_done(step, values["loss"], live.stage_label(values["stage_scale"]))


class ProgressBar(StepCallback):
    """``step/total, loss, steps/s, time left`` on stderr (a line every few % when not a tty)."""

    def __init__(self, ctx: RunContext, stream=None):
        super().__init__(ctx)
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._every = max(1, (ctx.total_steps - ctx.start_step) // 20)

    def on_train_begin(self, logs=None):
        self._t0 = time.perf_counter()
        self._rate = None
        self._t_last = self._t0
        self._steps_last = 0

    def on_train_batch_end(self, batch, logs=None):
        ctx = self.ctx
        step = self.global_step(batch)
        done = batch + 1
        now = time.perf_counter()
        # Rate over the recent window, ignoring the first step (graph tracing).
        if done >= 2:
            dt = now - self._t_last
            if dt > 0.5 or self._rate is None:
                rate = (done - self._steps_last) / max(dt, 1e-9)
                self._rate = rate if self._rate is None else 0.7 * self._rate + 0.3 * rate
                self._t_last, self._steps_last = now, done
        rate = self._rate or 0.0
        left = (ctx.total_steps - step) / rate if rate > 0 else float("nan")
        stage = ctx.plan.stage_of(step - 1)
        scale = (
            ("1/4", "1/2", "full")[stage] if ctx.settings.use_multi_resolution_training else "full"
        )
        loss = float((logs or {}).get("loss", float("nan")))
        width = 24
        filled = int(width * step / ctx.total_steps)
        line = (
            f"[{'#' * filled}{'.' * (width - filled)}] step {step}/{ctx.total_steps}  "
            f"loss {loss:.5f}  {rate:.2f} steps/s  left {_fmt_time(left)}  res {scale}"
        )
        if self.tty:
            self.stream.write("\r" + line + " " * 4)
            if step == ctx.total_steps:
                self.stream.write("\n")
        elif step % self._every == 0 or step == ctx.total_steps or done == 1:
            self.stream.write(line + "\n")
        self.stream.flush()

    def on_train_end(self, logs=None):
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


class FirstStep(keras.callbacks.Callback):
    """Calls ``done()`` once the first step has run (and at the end of training)."""

    def __init__(self, done):
        super().__init__()
        self.done = done

    def on_train_batch_end(self, batch, logs=None):
        self.done()

    def on_train_end(self, logs=None):
        self.done()


def _fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--:--"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def best_checkpoint_path(data_directory: Path, run_name: str) -> Path:
    """The run's best checkpoint (highest validation PSNR): ``<run>.best.cat``."""
    from ccat_tf.runs import BEST_SUFFIX

    return Path(data_directory) / f"{run_name}{BEST_SUFFIX}"


def standard_callbacks(ctx: RunContext, *, progress_bar: bool = True) -> tuple[list, SignalStop]:
    from ccat_tf.guard import DivergenceGuard

    stopper = SignalStop(ctx)
    cbs: list = [
        NonFiniteGuard(ctx),
        DivergenceGuard(ctx),
        stopper,
        SummaryLogger(ctx),
        DataDirectoryWriter(ctx),
    ]
    if progress_bar:
        cbs.append(ProgressBar(ctx))
    return cbs, stopper


__all__ = [
    "RunContext",
    "NonFiniteGuard",
    "SignalStop",
    "DataDirectoryWriter",
    "SummaryLogger",
    "ProgressBar",
    "FirstStep",
    "standard_callbacks",
    "best_checkpoint_path",
]
