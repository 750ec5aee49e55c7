"""Inference: apply a trained .cat to every frame of a sequence, as Nuke's Inference node does.

``infer(model_file, input=..., frames=..., output=...)`` runs in three stages:

1. **pre-flight** (:func:`_preflight`, no TensorFlow): the model's metadata is read and checked,
   every input frame exists and has the channels the model was trained on, the output pattern has
   a frame token, supports the data type, would not overwrite any input frame, and its folder is
   writable with room for a frame; partial frames an interrupted render left are removed.
2. **load** (:func:`_load_model`): the .cat as a :class:`ccat_tf.model.Model` on its device, at
   the precision asked for. Its ``predict`` is the pixel recipe (encode, pad, whole or tiled
   network, crop, decode; see :mod:`ccat_tf.model`).
3. **render** (:func:`_render`): frames are read and written by two background threads (a
   read-ahead of two frames, a write-behind of two, :class:`_Pipeline`), so the network is rarely
   idle waiting for disk; :class:`_Delivery` hands written frames to the hooks and the progress
   bar. Frames are written to a temporary name and renamed, so an aborted render never leaves a
   half-written frame; SIGTERM or Ctrl-C stops between frames (exit 75 or 130, one line).

With ``temporal_blend`` above 0 (flicker reduction, :func:`ccat_tf.temporal.blend`) each frame's
output is mixed with its neighbours' (input frames t-1 and t+1) warped by the input's optical
flow. A frame depends only on those three *input* frames, never on an output on disk, so frames
render in any order or chunk with identical results: the reader reads each neighbour through the
same checks as the frames, the network runs once per input frame read and the raw outputs of the
last frames are kept (:func:`_plan_reads`), so a run of consecutive frames costs one extra network
run at each end; a neighbour not on disk (the shot's first or last frame) is not used.

Hooks (the Python tab) and the progress bar run on the calling thread; ``after_frame_render`` and
``render_progress`` are called once a frame is safely on disk, which, because of the
write-behind, may be after the next frame started.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import queue
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from ccat_tf import ensemble, imageio, tiling
from ccat_tf import frames as framespec
from ccat_tf.atomic import check_free_space, free_bytes, full_disk_error, remove_stale_temps
from ccat_tf.errors import (
    CcatError,
    DataDirectoryError,
    DataSetError,
    SettingsError,
)
from ccat_tf.hooks import call_hooks, resolve_hooks
from ccat_tf.settings import InferSettings

if TYPE_CHECKING:
    from ccat_tf.model import Model
    from ccat_tf.model_info import ModelInfo

HOOK_NAMES = (
    "before_render",
    "before_frame_render",
    "after_frame_render",
    "after_render",
    "render_progress",
)
#: Frames decoded ahead of the network, and frames waiting for the writer. Two each keep the
#: network busy across the occasional slow read/write while bounding memory (a 4K RGB float frame
#: is 100 MB).
READ_AHEAD = 2
WRITE_BEHIND = 2
#: How many missing frames / clashing paths an error message lists before "and N more".
_LISTED = 5
#: Largest finite half-float: what non-finite input values are clamped to (see _sanitize).
_HALF_MAX = 65504.0

#: What ``optimize_for_speed_and_memory`` does without a GPU, for notices and --help.
CPU_HALF_NOTE = (
    "on the CPU float16 is emulated (TensorFlow converts to float32 inside each operation): "
    "activations take a quarter to a third less memory, so automatic tiles are larger, but it "
    "runs slower than float32 (1.4-1.9x on an AVX-512 CPU) and results differ from float32 by "
    "about 1e-3; turn it off for speed on a CPU"
)
CPU_BFLOAT16_NOTE = (
    "this CPU computes bfloat16 natively ({native}), so it computes in bfloat16 instead of float16: "
    "1.4-2.1x the frames per second of float32 (2-core AMD EPYC with AVX-512 BF16 and Xeon with "
    "AMX), results differ from float32 by about 4e-4 to 8e-4 RMS (at most a few 1e-2)"
)


# --------------------------------------------------------------------------------------------
# settings and pre-flight checks


def _settings_from(
    settings: InferSettings | dict | None, fixed: dict[str, Any], kw: dict[str, Any]
) -> InferSettings:
    if isinstance(settings, InferSettings):
        base = settings.to_dict()
    elif settings is None:
        base = {}
    elif isinstance(settings, dict):
        base = dict(settings)
    else:
        raise SettingsError(
            f"settings must be InferSettings or a mapping, not {type(settings).__name__}"
        )
    base.update({k: v for k, v in fixed.items() if v is not None})
    base.update(kw)
    return InferSettings.from_mapping(base)


def _check_settings(s: InferSettings) -> None:
    for name in ("model_file", "input", "output"):
        if not str(getattr(s, name)).strip():
            raise SettingsError(f"{name} is not set; give the {name.replace('_', ' ')}")
    if s.tile_size != "auto" and s.tile_size < 1:
        raise SettingsError(f"tile_size is {s.tile_size}; use auto or a size in pixels")
    if s.tile_overlap != "auto" and s.tile_overlap < 0:
        raise SettingsError(
            f"tile_overlap is {s.tile_overlap}; use auto or a number of pixels >= 0"
        )
    if s.batch_tiles < 1:
        raise SettingsError(f"batch_tiles is {s.batch_tiles}; use a whole number of 1 or more")
    if s.self_ensemble not in ensemble.SIZES:
        raise SettingsError(
            f"self_ensemble is {s.self_ensemble}; use one of {', '.join(map(str, ensemble.SIZES))}"
        )


def _listing(items: list) -> str:
    """The first few items, and how many more: ``1003, 1004, 1010 and 12 more``."""
    shown = ", ".join(str(i) for i in items[:_LISTED])
    more = f" and {len(items) - _LISTED} more" if len(items) > _LISTED else ""
    return f"{shown}{more}"


@dataclass
class _Job:
    index: int
    frame: int
    input_path: str
    output_path: str


def _plan_jobs(s: InferSettings) -> list[_Job]:
    """Frames, their input and output paths; raises on missing frames or clashing outputs."""
    from ccat_tf.outputs import check_frame_outputs

    if str(s.frames).strip():
        frame_list = framespec.parse_frames(s.frames)
    else:
        frame_list = framespec.find_frames(s.input)
        if not frame_list:
            raise SettingsError(
                f"frames is not set and no frames of {s.input} were found; give frames, e.g. 1001-1100"
            )
    seq = framespec.Sequence(s.input, frame_list)
    missing, not_files = seq.scan()  # one listing of the folder, not a stat per frame
    if not_files:
        from ccat_tf import regular_file

        path = seq.path(not_files[0])
        what = regular_file.problem(path) or "it is not a regular file"
        more = f" (and {len(not_files) - 1} more frames like it)" if len(not_files) > 1 else ""
        raise DataSetError(f"cannot read frame {path}: {what}{more}; give an image file there")
    if missing:
        raise DataSetError(
            f"input {s.input} is missing {len(missing)} of {len(frame_list)} frames "
            f"({_listing(missing)}); check the pattern and the frames setting"
        )
    if len(frame_list) > 1 and not framespec.has_frame_token(s.output):
        raise SettingsError(
            f"output {s.output} has no frame token but {len(frame_list)} frames are rendered; "
            "add one, e.g. out.####.exr"
        )
    jobs = [
        _Job(i, f, framespec.frame_path(s.input, f), framespec.frame_path(s.output, f))
        for i, f in enumerate(frame_list)
    ]
    # Compare real paths (symlinks, "..", relative paths resolved) of every frame, and inodes of
    # outputs that exist (hard links): a pattern spelled differently can still name the inputs.
    input_paths = {os.path.realpath(j.input_path) for j in jobs}
    input_inodes = {_inode(j.input_path) for j in jobs}
    clashes = [
        j.output_path
        for j in jobs
        if os.path.realpath(j.output_path) in input_paths
        or (os.path.exists(j.output_path) and _inode(j.output_path) in input_inodes)
    ]
    if clashes:
        raise SettingsError(
            f"output {s.output} would overwrite the input sequence ({_listing(clashes)}); "
            "choose another output pattern or folder"
        )
    check_frame_outputs(j.output_path for j in jobs)
    if not s.overwrite:
        existing = [j.output_path for j in jobs if os.path.exists(j.output_path)]
        if existing:
            raise SettingsError(
                f"overwrite is off and {len(existing)} output frames exist ({_listing(existing)}); "
                "delete them, choose another output, or turn overwrite on"
            )
    return jobs


def _neighbour_frames(s: InferSettings, jobs: list[_Job]) -> set[int]:
    """The input frames t-1 and t+1 of the rendered frames that are not rendered themselves but
    are on disk (the temporal blend uses them); a neighbour that is there but not a regular file
    fails as a rendered frame would."""
    rendered = {j.frame for j in jobs}
    wanted = sorted({j.frame + d for j in jobs for d in (-1, 1)} - rendered)
    if not wanted:
        return set()
    missing, not_files = framespec.Sequence(s.input, wanted).scan()
    if not_files:
        from ccat_tf import regular_file

        path = framespec.frame_path(s.input, not_files[0])
        what = regular_file.problem(path) or "it is not a regular file"
        raise DataSetError(
            f"cannot read frame {path} (a neighbour the temporal blend reads): {what}; give an "
            "image file there or set temporal_blend to 0"
        )
    return set(wanted) - set(missing)


def _plan_reads(
    jobs: list[_Job], neighbours: set[int], input_pattern: str
) -> tuple[list[_Job], list[tuple[int, ...]]]:
    """What the reader reads, in order, and the input frames each job uses (its own first).

    Job t uses t-1, t, t+1 where on disk (rendered or ``neighbours``);
    the render loop keeps the frames (and raw outputs) the next job uses and drops the rest, as
    simulated here, so a frame is read (and run through the network) again only when a later
    job uses it after it was dropped (frames given out of order)."""
    on_disk = {j.frame for j in jobs} | neighbours
    by_frame = {j.frame: j for j in jobs}
    needs = [(j.frame, *[j.frame + d for d in (-1, 1) if j.frame + d in on_disk]) for j in jobs]
    reads: list[_Job] = []
    held: set[int] = set()
    for i, need in enumerate(needs):
        for f in sorted(set(need) - held):
            job = by_frame.get(f) or _Job(-1, f, framespec.frame_path(input_pattern, f), "")
            reads.append(job)
            held.add(f)
        held &= set(needs[i + 1]) if i + 1 < len(needs) else set()
    return reads, needs


def _inode(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _check_input_headers(
    jobs: list[_Job], channels: list[str], merge_rgb: bool
) -> imageio.ImageInfo:
    """Open every input header (cheap) so a corrupt or channel-less frame fails before rendering.

    Returns the header of the deepest frame (16-bit over 8-bit, float over half), so ``auto``
    output never loses precision when a sequence mixes bit depths."""
    first = None
    for job in jobs:
        info = imageio.image_info(job.input_path)
        wanted = [(channels, "the model was trained on")]
        if merge_rgb:
            wanted.append(("rgb", "merge_input needs"))
        for spec, why in wanted:
            try:
                imageio.resolve_channels(spec, info.channel_names, path=job.input_path)
            except DataSetError:
                shown = spec if isinstance(spec, str) else ", ".join(spec)
                raise DataSetError(
                    f"input frame {job.input_path} has channels {', '.join(info.channel_names)} "
                    f"but {why} {shown}; give an input with those channels"
                ) from None
        first = info if first is None or _depth(info) > _depth(first) else first
    assert first is not None
    return first


#: Bit depths in increasing precision: mixed input frames are written at the deepest one.
_DEPTHS = ("uint8", "uint10", "uint12", "uint16", "half", "float")


def _depth(info: imageio.ImageInfo) -> int:
    return _DEPTHS.index(info.format) if info.format in _DEPTHS else len(_DEPTHS)


def _output_data_type(ext: str, requested: str, first: imageio.ImageInfo) -> str:
    """The data type to write: as requested, or ``auto``.

    ``auto``: EXR half (as Nuke writes by default); DPX 10-bit (the VFX norm; 8-bit only from
    8-bit DPX input); other formats keep the input's bit depth when they can store it (16-bit
    PNG stays 16-bit, float TIFF stays float; a sequence mixing depths keeps the deepest), else
    the format's default.
    """
    allowed = imageio.DATA_TYPES[ext]
    if requested not in ("", "auto"):
        if requested not in allowed:
            raise SettingsError(
                f"output_data_type {requested} cannot be written as {ext}; use auto or one of "
                f"{', '.join(allowed)}"
            )
        return requested
    if ext == ".exr":
        return "half"
    if ext == ".dpx":
        # DPX reads back as uint16 whatever its 10/12/16 bits, so only 8-bit input is telling.
        return "uint8" if first.file_format == "dpx" and first.format == "uint8" else "uint10"
    return first.format if first.format in allowed else allowed[0]


def _output_names(info: ModelInfo, merge_input: bool) -> list[str]:
    names = list(info.output_channels)
    if merge_input:
        if len(names) != 1:
            raise SettingsError(
                f"merge_input needs a model that predicts one matte channel; this one predicts "
                f"{', '.join(names)}; turn merge_input off"
            )
        return ["R", "G", "B", "A"]
    # A predicted alpha is written as the standard channel A, whatever the ground truth called it.
    return ["A" if n.lower() in ("a", "alpha") else n for n in names]


def _check_output(
    jobs: list[_Job], names: list[str], data_type: str, first: imageio.ImageInfo
) -> None:
    """Room for the first frame, then a tiny probe written (and deleted) beside it: format,
    channels, folder."""
    from ccat_tf.atomic import temp_path_for

    check_free_space(
        jobs[0].output_path, imageio.frame_bytes(first.height, first.width, len(names), data_type)
    )
    probe = temp_path_for(jobs[0].output_path)
    try:
        imageio.write_image(
            probe, np.zeros((8, 8, len(names)), np.float32), names, data_type=data_type
        )
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


def _remove_partial_frames(jobs: list[_Job], notice: Callable[[str], None]) -> None:
    """Delete the temporary files a killed render left for this render's output frames (only
    those: parallel renders of other frames into the same folder keep theirs)."""
    by_folder: dict[str, set[str]] = {}
    for job in jobs:
        folder, name = os.path.split(job.output_path)
        by_folder.setdefault(folder or ".", set()).add(name)
    for folder, names in by_folder.items():
        for leftover in remove_stale_temps(folder, names):
            notice(f"removed {leftover}, a partial frame left by an interrupted render")


# --------------------------------------------------------------------------------------------
# model, device and precision


def _choose_device(use_gpu: bool, notice: Callable[[str], None]) -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if use_gpu and gpus:
        for gpu in gpus:
            # Grow on demand so the free memory nvidia-smi reports stays meaningful for tiling.
            with contextlib.suppress(RuntimeError, ValueError):
                tf.config.experimental.set_memory_growth(gpu, True)
        if len(gpus) > 1:
            notice(f"{len(gpus)} GPUs found; inference uses GPU 0")
        return "/GPU:0"
    if use_gpu:
        notice("use_gpu_if_available: no GPU found, running on the CPU")
    return "/CPU:0"


def _check_views(model: Model, size: int, notice) -> None:
    """A notice when the self-ensemble shows the network views its training never did: any
    mirror or turn to a network trained without ``augment``, turns and upside-down views to one
    trained on mirror images only (a .cat that records no augment_rotations was trained with
    every turn)."""
    trained = model.info.settings
    if not trained.get("augment", True):
        known, what, fix = 1, "without augment", "augment"
    elif trained.get("augment_rotations") is False:
        known, what = 2, "on mirror images only (augment without augment_rotations)"
        fix = "augment_rotations"
    else:
        return
    if size > known:
        notice(
            f"self_ensemble {size}: this network was trained {what}, so {size - known} of the "
            f"{size} views (mirrored, upside down, turned) are new to it; use {known}, or train "
            f"with {fix}"
        )


def _load_model(r: _Render) -> Model:
    """The network on its device, at the precision asked for, cutting frames as the settings say.

    The slow TensorFlow part, run once pre-flight has passed."""
    from ccat_tf.model import TileSettings, open_model

    s, notice = r.settings, r.notice
    device = _choose_device(s.use_gpu_if_available, notice)
    tiles = TileSettings(s.tile_size, s.tile_overlap, s.batch_tiles)
    model = open_model(s.model_file, device=device, tiles=tiles, self_ensemble=s.self_ensemble)
    _check_views(model, s.self_ensemble, notice)
    if s.optimize_for_speed_and_memory:
        from ccat_tf.precision import native_bfloat16

        native = native_bfloat16() if device == "/CPU:0" else None
        try:
            model = model.half_precision("mixed_bfloat16" if native else "mixed_float16")
        except ValueError as err:  # the stored network is not the preset build_model makes
            notice(
                f"optimize_for_speed_and_memory: cannot rebuild the network ({err}); computing in float32"
            )
        else:
            if device == "/CPU:0":
                note = CPU_BFLOAT16_NOTE.format(native=native) if native else CPU_HALF_NOTE
                notice(f"optimize_for_speed_and_memory: {note}")
    needed = tiling.default_blend(model.profile).overlap
    if model.blend.overlap < needed:
        notice(
            f"tile_overlap {model.blend.overlap} is less than this network's receptive field needs "
            f"({needed}); tiles are feathered but may differ slightly from untiled output"
        )
    return model


# --------------------------------------------------------------------------------------------
# background reading and writing


class _Worker(threading.Thread):
    """A daemon thread draining ``inbox`` with ``handle``; results and errors go to ``outbox``."""

    def __init__(self, name: str, inbox: queue.Queue, outbox: queue.Queue, handle: Callable):
        super().__init__(name=name, daemon=True)
        self.inbox, self.outbox, self.handle = inbox, outbox, handle
        self.stop = threading.Event()

    def run(self) -> None:
        failed = False
        while True:
            item = self.inbox.get()
            if item is None:
                break
            # After a failure or a stop keep draining, so a producer never blocks on a full queue.
            if failed or self.stop.is_set():
                continue
            try:
                result = self.handle(item)
            except BaseException as err:  # noqa: BLE001 - handed to the main thread
                failed = True
                result = err
            self._put(result)

    def _put(self, result) -> None:
        while not self.stop.is_set():
            try:
                self.outbox.put(result, timeout=0.1)
                return
            except queue.Full:
                continue


def _put(q: queue.Queue, item, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


# --------------------------------------------------------------------------------------------
# progress


class FrameProgress:
    """``[####....] frame 12/48  1.9 fps  left 00:19`` on stderr.

    On a terminal the line is redrawn in place; otherwise (a farm log) a line is printed every
    ``~5 %`` of the frames, and for the first and last frame, so logs stay short.
    """

    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool = True):
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every = max(1, total // 20)
        self.t0 = time.perf_counter()

    def rate(self, done: int) -> tuple[float, float]:
        elapsed = time.perf_counter() - self.t0
        fps = done / elapsed if elapsed > 0 and done else 0.0
        left = (self.total - done) / fps if fps > 0 else float("nan")
        return fps, left

    def update(self, done: int, frame: int) -> None:
        if not self.enabled:
            return
        fps, left = self.rate(done)
        width = 24
        filled = int(width * done / max(self.total, 1))
        # Heavy frames (4K, large models on a CPU) read better as seconds per frame.
        speed = f"{fps:.2f} fps" if fps >= 1 or fps == 0 else f"{1 / fps:.1f} s/frame"
        line = (
            f"[{'#' * filled}{'.' * (width - filled)}] frame {done}/{self.total} ({frame})  "
            f"{speed}  left {_fmt_time(left)}"
        )
        if self.tty:
            self.stream.write("\r" + line + "    ")
            if done == self.total:
                self.stream.write("\n")
        elif done % self.every == 0 or done in (1, self.total):
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self, done: int) -> None:
        if self.tty and done != self.total:
            self.stream.write("\n")
            self.stream.flush()


def _fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--:--"
    h, rem = divmod(int(seconds), 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


# --------------------------------------------------------------------------------------------
# per-frame work


def _sanitize(x: np.ndarray) -> int:
    """Replace NaN/inf in place (a NaN would spread over the receptive field); return how many."""
    bad = ~np.isfinite(x)
    n = int(np.count_nonzero(bad))
    if n:
        np.nan_to_num(x, copy=False, nan=0.0, posinf=_HALF_MAX, neginf=-_HALF_MAX)
    return n


def _write_frame(
    path: str, pixels: np.ndarray, names: list[str], data_type: str, info: imageio.ImageInfo
) -> None:
    """Write one output frame, keeping the input's display window, data window and pixel aspect.

    ``imageio.write_image`` writes EXRs with data window = display window. When the input's data
    window is a smaller box (a bbox inside the format) the output keeps that box, as Nuke would;
    overscan beyond the display window is not kept (the reader crops it to the format).
    """
    ext = os.path.splitext(path)[1].lower()
    dx, dy, dw, dh = info.data_window
    fx, fy, fw, fh = info.display_window
    x0, x1 = max(dx, fx), min(dx + dw, fx + fw)
    y0, y1 = max(dy, fy), min(dy + dh, fy + fh)
    inside = (x0, y0, x1, y1) != (fx, fy, fx + fw, fy + fh) and x0 < x1 and y0 < y1
    if ext != ".exr" or not inside:
        imageio.write_image(path, pixels, names, data_type=data_type, template=info)
        return
    import OpenImageIO as oiio

    from ccat_tf.atomic import atomic_path
    from ccat_tf.errors import DataDirectoryError

    crop = np.ascontiguousarray(pixels[y0 - fy : y1 - fy, x0 - fx : x1 - fx], np.float32)
    spec = oiio.ImageSpec(x1 - x0, y1 - y0, len(names), data_type)
    spec.channelnames = tuple(names)
    spec.x, spec.y = x0, y0
    spec.full_x, spec.full_y, spec.full_width, spec.full_height = fx, fy, fw, fh
    spec.attribute("compression", "zip")
    if info.pixel_aspect and info.pixel_aspect != 1.0:
        spec.attribute("PixelAspectRatio", float(info.pixel_aspect))
    if names[-1] == "A":
        spec.alpha_channel = len(names) - 1
    with atomic_path(path) as tmp:
        out = oiio.ImageOutput.create(str(tmp))
        try:
            if out is None or not out.open(str(tmp), spec) or not out.write_image(crop):
                reason = (
                    (out.geterror() if out else "") or oiio.geterror(True) or "the writer failed"
                )
                raise DataDirectoryError(
                    f"cannot write {path}: {' '.join(reason.split())}; check the folder and the free "
                    "disk space (nothing was overwritten)"
                )
        finally:
            if out is not None:
                out.close()


def _write_checked(
    path: str, pixels: np.ndarray, names: list[str], data_type: str, info: imageio.ImageInfo
) -> None:
    """:func:`_write_frame` on a disk with room for the frame; a full disk is one line.

    Image libraries report a full disk vaguely ("File output failed"), not at all (PNG, DPX:
    a cut-short file) or by exiting the process (JPEG), so the room is checked first; a disk
    that fills up during the write (another process) is caught afterwards by reading it back.
    """
    need = imageio.frame_bytes(*pixels.shape, data_type)
    check_free_space(path, need)
    try:
        _write_frame(path, pixels, names, data_type, info)
    except CcatError as err:
        full = full_disk_error(path, str(err), need)
        if full is None:
            raise
        raise full from None
    if free_bytes(path) < need:
        try:
            imageio.read_image(path, names)
        except CcatError:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise DataDirectoryError(
                f"cannot write {path}: no space left on device (the disk filled up while it was "
                "written; the cut-short frame was removed); free some space or point the output "
                "to another disk"
            ) from None


class InferInterrupted(CcatError):
    """SIGTERM/SIGINT stopped a render; every frame written is complete (exit 75, 130 Ctrl-C)."""

    exit_code = 75


class _StopOnSignal:
    """SIGTERM (a scheduler's preemption) or Ctrl-C during a render: remember it, so the render
    stops between frames. A second Ctrl-C quits at once; a repeated SIGTERM changes nothing."""

    def __init__(self):
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.received:
            if name == "SIGINT":
                raise KeyboardInterrupt
            return
        self.received = name
        fresh_line = "\n" if sys.stderr.isatty() else ""  # below a progress bar
        print(f"{fresh_line}ccat-tf: {name} received; stopping after this frame", file=sys.stderr)


def _interrupted(signal_name: str, s: InferSettings, jobs: list[_Job], written: list[str]):
    """The one-line error of a render stopped by a signal: what is on disk, how to go on."""
    done = set(written)
    rest = [j.frame for j in jobs if j.output_path not in done]
    how = f"render the other {len(rest)} with --frames {framespec.format_frames(rest)}"
    if s.overwrite:
        how = f"run the same command again to render all {len(jobs)}, or {how}"
    err = InferInterrupted(
        f"{signal_name} received: wrote {len(done)} of {len(jobs)} frames to {s.output}, each "
        f"complete; {how}"
    )
    if signal_name == "SIGINT":
        err.exit_code = 130
    return err


@dataclass
class _Frame:
    job: _Job
    pixels: np.ndarray  # model input channels, as stored in the file
    rgb: np.ndarray | None  # input RGB for merge_input
    info: imageio.ImageInfo
    non_finite: int


# --------------------------------------------------------------------------------------------
# the render: preflight -> load the model -> render the frames -> summary


class _Notices:
    """Notices of a render: kept for the summary, printed unless the progress bar is off."""

    def __init__(self, echo: bool):
        self.messages: list[str] = []
        self.echo = echo

    def __call__(self, message: str) -> None:
        self.messages.append(message)
        if self.echo:
            print(f"ccat-tf: {message}", file=sys.stderr, flush=True)


@dataclass
class _Render:
    """What pre-flight decided: the frames, what to read and write, the hooks."""

    settings: InferSettings
    info: ModelInfo
    jobs: list[_Job]
    in_channels: list[str]
    names: list[str]  #: channels written
    data_type: str
    merge_rgb_separately: bool  #: merge_input reads RGB apart from the model's input channels
    hooks: dict[str, list]
    notice: _Notices
    t_start: float
    #: the frames the reader reads, in order (the jobs, and neighbours for the temporal blend)
    reads: list[_Job]
    #: per job, the input frames it uses: its own, then its neighbours (temporal blend)
    needs: list[tuple[int, ...]]

    @property
    def total(self) -> int:
        return len(self.jobs)


def _preflight(s: InferSettings, progress_bar: bool) -> _Render:
    """Every check that needs no TensorFlow: bad input is reported in a second, not after a load.

    Also removes partial frames an interrupted render of these frames left."""
    from ccat_tf.model import read_info

    t_start = time.perf_counter()
    notice = _Notices(progress_bar)
    hooks = {name: resolve_hooks(getattr(s, name), name) for name in HOOK_NAMES}
    info = read_info(s.model_file)
    in_channels = list(info.input_channels)
    out_ext = os.path.splitext(s.output)[1].lower()
    if out_ext not in imageio.SUPPORTED_EXTENSIONS:
        raise SettingsError(
            f"output {s.output}: unsupported extension {out_ext or '(none)'!r}; use one of "
            f"{', '.join(imageio.SUPPORTED_EXTENSIONS)}"
        )
    names = _output_names(info, s.merge_input)
    jobs = _plan_jobs(s)
    first_info = _check_input_headers(jobs, in_channels, s.merge_input)
    reads, needs = list(jobs), [(j.frame,) for j in jobs]
    if s.temporal_blend > 0:
        reads, needs = _plan_reads(jobs, _neighbour_frames(s, jobs), s.input)
        extra = [j for j in reads if j.index < 0]
        if extra:  # neighbours pass the frames' checks; their depth does not pick the output's
            _check_input_headers(extra, in_channels, s.merge_input)
    data_type = _output_data_type(out_ext, str(s.output_data_type).lower(), first_info)
    _remove_partial_frames(jobs, notice)
    _check_output(jobs, names, data_type, first_info)
    merge_apart = s.merge_input and [c.upper() for c in in_channels[:3]] != ["R", "G", "B"]
    return _Render(
        s,
        info,
        jobs,
        in_channels,
        names,
        data_type,
        merge_apart,
        hooks,
        notice,
        t_start,
        reads,
        needs,
    )


def _read_frame(r: _Render, job: _Job) -> _Frame:
    """Reader thread: one input frame, NaN/inf replaced, and the RGB merge_input needs."""
    pixels, info = imageio.read_image_with_info(job.input_path, r.in_channels)
    rgb = None
    if r.settings.merge_input:
        if r.merge_rgb_separately:
            rgb = imageio.read_image(job.input_path, "rgb")
        else:
            rgb = pixels[..., :3].copy()
    bad = _sanitize(pixels)
    return _Frame(job, pixels, rgb, info, bad)


def _write_result(r: _Render, item) -> tuple[_Job, float]:
    """Writer thread: one output frame, whole or not at all."""
    job, pixels, info = item
    t0 = time.perf_counter()
    _write_checked(job.output_path, pixels, r.names, r.data_type, info)
    return job, time.perf_counter() - t0


class _Pipeline:
    """The reader and writer threads and their queues (read-ahead and write-behind)."""

    def __init__(self, r: _Render):
        self.read_in: queue.Queue = queue.Queue()
        self.read_out: queue.Queue = queue.Queue(maxsize=READ_AHEAD)
        self.write_in: queue.Queue = queue.Queue(maxsize=WRITE_BEHIND)
        self.write_out: queue.Queue = queue.Queue()
        self.reader = _Worker(
            "ccat-infer-read", self.read_in, self.read_out, functools.partial(_read_frame, r)
        )
        self.writer = _Worker(
            "ccat-infer-write", self.write_in, self.write_out, functools.partial(_write_result, r)
        )
        for job in r.reads:
            self.read_in.put(job)
        self.read_in.put(None)

    def start(self) -> None:
        self.reader.start()
        self.writer.start()

    def next_frame(self) -> _Frame:
        item = self.read_out.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def write(self, item) -> None:
        """Hand a result (or None: no more) to the writer; waits while the queue is full."""
        _put(self.write_in, item, self.writer.stop)

    def close(self) -> None:
        """Unblock both threads whatever happened (a stopped worker drains its queue, so the put
        succeeds); they are daemons, so a stuck disk cannot hang the caller. A writer told to stop
        still finishes (or abandons, removing its temporary file) the frame in hand."""
        self.reader.stop.set()
        for q in (self.read_in, self.write_in):
            with contextlib.suppress(queue.Full):
                q.put(None, timeout=5)
        self.reader.join(timeout=5)
        self.writer.join(timeout=60)


class _Delivery:
    """Frames safely on disk: the written list, the progress bar, the per-frame hooks."""

    def __init__(self, r: _Render, pipe: _Pipeline, progress_bar: bool):
        self.r, self.pipe = r, pipe
        self.bar = FrameProgress(r.total, enabled=progress_bar)
        self.written: list[str] = []
        self.started: dict[int, float] = {}  #: job index -> when its computation began

    def drain(self, block_until: int = 0) -> None:
        """Deliver written frames: wait for ``block_until`` of them, then take what is ready.
        A failed write is raised here, so the render stops before the next frame."""
        while len(self.written) < block_until:
            self._finish(self.pipe.write_out.get())
        while True:
            try:
                self._finish(self.pipe.write_out.get_nowait())
            except queue.Empty:
                return

    def _finish(self, result) -> None:
        if isinstance(result, BaseException):
            raise result
        job, _ = result
        r, hooks = self.r, self.r.hooks
        self.written.append(job.output_path)
        done = len(self.written)
        fps, left = self.bar.rate(done)
        call_hooks(
            "after_frame_render",
            hooks["after_frame_render"],
            frame=job.frame,
            index=job.index,
            total=r.total,
            path=job.output_path,
            input_path=job.input_path,
            seconds=time.perf_counter() - self.started.get(job.index, r.t_start),
        )
        self.bar.update(done, job.frame)
        call_hooks(
            "render_progress",
            hooks["render_progress"],
            frame=job.frame,
            index=job.index,
            total=r.total,
            done=done,
            progress=done / r.total,
            path=job.output_path,
            fps=fps,
            eta_seconds=left,
        )


def _network(r: _Render, model: Model, frame: _Frame) -> np.ndarray:
    """The model's recipe on one input frame: the network's output, as predicted."""
    h, w = frame.pixels.shape[:2]
    if (h, w) not in model.plans:
        _announce_tiles(r, model, h, w)
    return model.predict(frame.pixels)


def _compute(
    r: _Render, model: Model, frame: _Frame, held: dict[int, _Held] | None = None
) -> np.ndarray:
    """One output frame: the model's recipe, blended with the neighbours in ``held`` (temporal
    blend; their raw outputs are computed once and kept there), plus the input RGB for
    merge_input."""
    if held is None:
        result = _network(r, model, frame)
    else:
        result = _blended(r, model, frame, held)
    if frame.rgb is not None:
        result = np.concatenate([frame.rgb, result], axis=-1)
    return result


@dataclass
class _Held:
    """An input frame kept for the temporal blend, and its network output once computed."""

    frame: _Frame
    output: np.ndarray | None = None
    #: neighbour frame -> the input flow taking this frame to it (temporal.pair_flows)
    flows: dict[int, Any] = field(default_factory=dict)


def _blended(r: _Render, model: Model, frame: _Frame, held: dict[int, _Held]) -> np.ndarray:
    """Frame t's network output with its held neighbours' mixed in (:func:`temporal.blend`)."""
    from ccat_tf import temporal

    t = frame.job.frame
    for h in held.values():
        if h.output is None:
            h.output = _network(r, model, h.frame)
    others = [held[f] for f in (t - 1, t + 1) if f in held]
    same = [h for h in others if h.frame.pixels.shape == frame.pixels.shape]
    for h in same:
        k = h.frame.job.frame
        if k not in held[t].flows:  # each pair once, always in frame order: chunks agree
            a, b = sorted((t, k))
            to_a, to_b = temporal.pair_flows(held[a].frame.pixels, held[b].frame.pixels)
            held[b].flows[a], held[a].flows[b] = to_a, to_b
    for h in others:
        if h not in same:
            r.notice(
                f"frame {t}: neighbour frame {h.frame.job.frame} is "
                f"{h.frame.pixels.shape[1]}x{h.frame.pixels.shape[0]}, not "
                f"{frame.pixels.shape[1]}x{frame.pixels.shape[0]}; not blended with it"
            )
    return temporal.blend(
        held[t].output,
        [h.output for h in same],
        frame.pixels,
        [h.frame.pixels for h in same],
        r.settings.temporal_blend,
        flows=[held[t].flows[h.frame.job.frame] for h in same],
    )


def _announce_tiles(r: _Render, model: Model, h: int, w: int) -> None:
    plan = model.plan_for(h, w)
    if plan.tiled:
        how = f"auto from {model.budget_source}" if model.tiles.tile_size == "auto" else "tile_size"
        r.notice(
            f"{w}x{h} frames: {plan.count} tiles of {plan.tile_width}x{plan.tile_height} "
            f"({how}), overlap {model.blend.overlap} px, {model.tiles.batch_tiles} per batch, "
            f"{plan.overhead():.2f}x pixels computed"
        )


def _render_frames(
    r: _Render, model: Model, pipe: _Pipeline, out: _Delivery, stop: _StopOnSignal
) -> int:
    """The frame loop on the calling thread; returns the count of non-finite input values.

    Stops between frames after a signal; the frames computed are still written, whole."""
    non_finite = queued = 0
    blending = r.settings.temporal_blend > 0
    held: dict[int, _Held] = {}  # temporal blend: the input frames (and outputs) at hand
    for i, job in enumerate(r.jobs):
        out.drain()  # a failed write stops the render before the next frame is computed
        if stop.received:
            break
        for f in sorted(set(r.needs[i]) - set(held)):
            frame = pipe.next_frame()
            assert frame.job.frame == f, (frame.job.frame, f)  # _plan_reads' order
            held[f] = _Held(frame)
            if frame.non_finite:
                non_finite += frame.non_finite
                what = "" if frame.job.index >= 0 else " (a neighbour for the temporal blend)"
                r.notice(
                    f"frame {f}{what}: {frame.non_finite} NaN/infinite input values "
                    "replaced (NaN by 0)"
                )
        frame = held[job.frame].frame
        out.started[job.index] = time.perf_counter()
        call_hooks(
            "before_frame_render",
            r.hooks["before_frame_render"],
            frame=job.frame,
            index=job.index,
            total=r.total,
            input_path=job.input_path,
            path=job.output_path,
        )
        pipe.write((job, _compute(r, model, frame, held if blending else None), frame.info))
        queued += 1
        keep = set(r.needs[i + 1]) if blending and i + 1 < len(r.jobs) else set()
        held = {f: h for f, h in held.items() if f in keep}
        out.drain()
    pipe.write(None)
    out.drain(queued)
    return non_finite


def _render(r: _Render, model: Model, progress_bar: bool) -> dict[str, Any]:
    """Start the threads, call the render hooks, run the frame loop, return the summary."""
    s = r.settings
    call_hooks(
        "before_render",
        r.hooks["before_render"],
        model_file=s.model_file,
        input=s.input,
        output=s.output,
        frames=[j.frame for j in r.jobs],
        total=r.total,
        settings={k: v for k, v in s.to_dict().items() if k not in HOOK_NAMES},
    )
    pipe = _Pipeline(r)
    out = _Delivery(r, pipe, progress_bar)
    pipe.start()
    out.bar.t0 = time.perf_counter()
    with _StopOnSignal() as stop:
        try:
            non_finite = _render_frames(r, model, pipe, out, stop)
        except BaseException:
            pipe.writer.stop.set()
            raise
        finally:
            out.bar.close(len(out.written))
            pipe.close()
    if stop.received and len(out.written) < r.total:
        raise _interrupted(stop.received, s, r.jobs, out.written)
    summary = _summary(r, model, out, non_finite)
    call_hooks(
        "after_render",
        r.hooks["after_render"],
        frames=[j.frame for j in r.jobs],
        total=r.total,
        output=s.output,
        paths=list(out.written),
        seconds=summary["seconds"],
        fps=summary["fps"],
    )
    return summary


def _summary(r: _Render, model: Model, out: _Delivery, non_finite: int) -> dict[str, Any]:
    s = r.settings
    render_seconds = time.perf_counter() - out.bar.t0
    return {
        "model_file": os.fspath(s.model_file),
        "input": s.input,
        "output": s.output,
        "frames": r.total,
        "paths": out.written,
        "seconds": time.perf_counter() - r.t_start,
        "fps": r.total / render_seconds if render_seconds > 0 else 0.0,
        "device": model.device,
        "precision": model.precision,
        "data_type": r.data_type,
        "channels": r.names,
        "tiling": {
            f"{w}x{h}": {
                "tiles": p.count,
                "tile_size": [p.tile_width, p.tile_height],
                "overlap": model.blend.overlap,
                "receptive_field_radius": model.profile.radius,
            }
            for (h, w), p in model.plans.items()
        },
        "non_finite_inputs": non_finite,
        "notices": r.notice.messages,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def infer(
    model_file: str | os.PathLike | None = None,
    input: str | None = None,  # noqa: A002 - the Inference node's name for it
    frames: str | Iterable[int] | None = None,
    output: str | None = None,
    *,
    settings: InferSettings | dict | None = None,
    progress_bar: bool = True,
    **kw: Any,
) -> dict[str, Any]:
    """Apply a trained .cat to frames of a sequence and write the result as a sequence.

    ``model_file``, ``input`` (a pattern such as ``plate.####.exr``), ``frames`` (``1001-1100``,
    ``1001-1100x10``, a list; empty: every frame found on disk) and ``output`` (a pattern; its
    extension picks the format) may also come in ``settings`` (an :class:`InferSettings` or a
    mapping). Any other :class:`InferSettings` field is a keyword argument: ``tile_size``,
    ``tile_overlap``, ``batch_tiles``, ``use_gpu_if_available``,
    ``optimize_for_speed_and_memory``, ``output_data_type``, ``merge_input``, ``overwrite``,
    ``temporal_blend`` (flicker reduction, see the module's notes), and the
    hooks ``before_render``, ``before_frame_render``, ``after_frame_render``, ``after_render``,
    ``render_progress`` (callables or ``module:function`` strings, or lists of them).

    Returns a summary: ``frames`` (count), ``paths`` (written files), ``seconds``, ``fps``,
    ``device``, ``precision``, ``tiling`` (per input resolution), ``notices``,
    ``peak_rss_bytes``. Raises a one-line :class:`~ccat_tf.errors.CcatError` for every problem a
    user can fix; frames already written stay complete, none is ever half-written.
    ``progress_bar=False`` also silences the notices (they are still in the summary).
    """
    if frames is not None and not isinstance(frames, str | int):
        frames = framespec.format_frames(list(frames))
    fixed = {
        "model_file": os.fspath(model_file) if model_file is not None else None,
        "input": input,
        "frames": frames,
        "output": output,
    }
    s = _settings_from(settings, fixed, kw)
    _check_settings(s)
    render = _preflight(s, progress_bar)
    model = _load_model(render)
    return _render(render, model, progress_bar)


__all__ = ["infer", "FrameProgress", "HOOK_NAMES", "CPU_HALF_NOTE", "InferInterrupted"]
