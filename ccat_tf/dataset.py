"""The data set: validation, the frame cache, and the tf.data crop pipeline.

Order of work, as in the house style: every frame is decoded once (into memory, or into an HDF5
cache when the data set does not fit), encoded into training space, and downsized for the
multi-resolution stages; the tf.data pipeline then draws crops. Every crop is a pure function of
``(seed, sample index)``: which pair, where, and which flip/rotation come from stateless random
numbers, so a resumed run sees exactly the crops an uninterrupted run would have seen.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ccat_tf import frames as framespec
from ccat_tf import imageio, regular_file, transform
from ccat_tf.errors import CcatError, DataSetError, SettingsError
from ccat_tf.settings import TrainSettings

STAGE_SCALES = (0.25, 0.5, 1.0)
# Share of the total steps spent in each multi-resolution stage (1/4, 1/2, full resolution).
# Half the run at full resolution keeps fine detail; the low stages make the run ~1.7x cheaper.
STAGE_SHARES = (0.25, 0.25, 0.5)
#: A fix that lives in fine detail (deblur, upscale: the pairs' difference mostly gone at 1/4
#: size, see :meth:`FrameCache.detail_share`) learns another fix from downsized frames: its low
#: stages cut their small crops from the full-size frames instead, and take more of the steps.
FINE_DETAIL_BELOW = 0.5
FINE_DETAIL_SHARES = (0.6, 0.3, 0.1)
MIN_CROP = 16
#: temporal_consistency: one sample in this many (those with ``sample % TEMPORAL_EVERY == 0``)
#: carries its warped neighbour's valid mask, so its neighbour also goes through the network
#: (train_loop): about half of each batch, a step about 1.4x a plain one on CPU.
TEMPORAL_EVERY = 2


class DataSetProblems(DataSetError):
    """Several problems found by validation; ``problems`` holds one line for each."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        more = f" (and {len(problems) - 1} more problems; run ccat-tf validate to list them)"
        super().__init__(problems[0] + (more if len(problems) > 1 else ""))


@dataclass
class DataSetInfo:
    """What validation learned about a data set; stored in reports, .ost and .cat files."""

    input: str
    ground_truth: str
    frames: list[int]
    input_channels: list[str]
    output_channels: list[str]
    width: int
    height: int
    hdr: bool
    input_transform: list[str]
    output_transform: list[str]
    crop_size: int
    batch_size: int
    total_steps: int
    validation_frames: list[int] = field(default_factory=list)
    preview: str = ""
    preview_frames: list[int] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    residual: bool = False
    #: With temporal_consistency: for each training frame, the neighbouring input frame its
    #: output must agree with (t+1, else t-1; None: neither is on disk). Empty when off.
    neighbours: list[int | None] = field(default_factory=list)

    @property
    def pairs(self) -> int:
        return len(self.frames)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["pairs"] = self.pairs
        return d

    def channels_line(self, time_limit: float = 0) -> str:
        """CopyCat's read-only Channels field: channels, batch size and total steps (with a
        time limit, the steps are planned once the speed is measured)."""
        steps = f"planned for {time_limit:g} min" if time_limit else str(self.total_steps)
        return (
            f"Channels: {'+'.join(self.input_channels)} -> {'+'.join(self.output_channels)}   "
            f"Batch Size: {self.batch_size}   Total Steps: {steps}"
        )


def total_steps(epochs: int, pairs: int, batch_size: int) -> int:
    """CopyCat's Total Steps = Epochs x (Data Set Size) / (Batch Size), rounded up."""
    return max(1, math.ceil(epochs * pairs / batch_size))


def stage_shares(multi_resolution: bool, fine_detail: bool = False) -> tuple[float, ...]:
    """Share of the steps in each stage (one stage without multi-resolution training)."""
    if not multi_resolution:
        return (1.0,)
    return FINE_DETAIL_SHARES if fine_detail else STAGE_SHARES


def stage_bounds(total: int, multi_resolution: bool, fine_detail: bool = False) -> list[int]:
    """First step of each stage (three entries) for a run of ``total`` steps."""
    if not multi_resolution:
        return [0, 0, 0]
    shares = stage_shares(True, fine_detail)
    b1 = int(round(total * shares[0]))
    b2 = int(round(total * (shares[0] + shares[1])))
    return [0, b1, b2]


def stage_for_step(step: int, bounds: list[int]) -> int:
    """Index into STAGE_SCALES of the stage that step ``step`` (0-based) trains in."""
    stage = 0
    for i, b in enumerate(bounds):
        if step >= b:
            stage = i
    return stage


def stage_crop(crop_size: int, scale: float, divisor: int, frame_hw: tuple[int, int]) -> int:
    """Crop size used at a stage: the crop shrinks with the frames, so low stages are cheap."""
    h, w = frame_hw
    fit = min(int(h * scale), int(w * scale)) // divisor * divisor
    want = max(MIN_CROP, int(crop_size * scale) // divisor * divisor)
    return max(divisor, min(want, fit))


# ----------------------------------------------------------------------------------------------
# Validation


def _resolve_batch_size(settings: TrainSettings, pairs: int, crop: int, notices: list[str]) -> int:
    if settings.batch_size == "auto":
        from ccat_tf.models import sizing_preset
        from ccat_tf.resources import auto_batch_size

        return auto_batch_size(sizing_preset(settings.model_size), crop, pairs, notices=notices)
    return int(settings.batch_size)


def validate_dataset(
    settings: TrainSettings | dict | None = None, *, report: str | os.PathLike | None = None, **kw
) -> DataSetInfo:
    """Check a data set as CopyCat would before training; return what was found.

    Accepts a :class:`TrainSettings`, a mapping, or the settings as keyword arguments
    (``input=``, ``ground_truth=``, ``frames=``, ``input_channels=``, ...). Every pair must exist
    and be readable, input and ground truth must have the same resolution, the channels must
    exist, values must be finite, ``batch_size`` must not exceed the number of pairs, and
    ``crop_size`` must fit (it is reduced with a notice when the frames are smaller). Raises
    :class:`DataSetProblems` listing every problem, one line each; nothing is written then.
    With ``report`` the findings are written there as JSON (atomically).
    """
    if not isinstance(settings, TrainSettings):
        settings = TrainSettings.from_mapping(settings, **kw)
    elif kw:
        settings = TrainSettings.from_mapping({**settings.to_dict(), **kw})
    settings.check()
    for key in ("input", "ground_truth", "frames"):
        if not getattr(settings, key):
            raise SettingsError(f"{key} is not set; give the {key.replace('_', ' ')} sequence")
    survey = _Survey(settings)
    survey.check_frame_lists()
    for frame in survey.frames + survey.validation:
        survey.check_pair(frame)
    if settings.temporal_consistency > 0:
        survey.find_neighbours()
    survey.check_previews()
    crop = survey.fit_crop()
    if settings.batch_size != "auto" and int(settings.batch_size) > len(survey.frames):
        pairs = len(survey.frames)
        survey.problems.append(
            f"batch_size {settings.batch_size} is more than the {pairs} image pairs; use at most "
            f"{pairs} or 'auto'"
        )
    if survey.problems:
        raise DataSetProblems(survey.problems)
    info = survey.info(crop)
    if report is not None:
        from ccat_tf.atomic import atomic_write_json

        atomic_write_json(
            report, {"ok": True, **info.to_dict(), "channels_line": info.channels_line()}
        )
    return info


class _Survey:
    """What :func:`validate_dataset` finds, frame by frame: every problem (one line each, all
    reported together), the notices, the channels, frame sizes and whether values exceed 0..1."""

    def __init__(self, settings: TrainSettings):
        self.settings = settings
        self.frames = framespec.parse_frames(settings.frames)
        self.validation = _frames_or_none(settings.validation_frames)
        self.preview_frames = _frames_or_none(settings.preview_frames)
        self.problems: list[str] = []
        self.notices: list[str] = []
        self.in_names: list[str] | None = None
        self.out_names: list[str] | None = None
        self.sizes: set[tuple[int, int]] = set()
        self.input_sizes: dict[int, tuple[int, int]] = {}  #: frame -> its input's (w, h)
        self.neighbours: list[int | None] = []
        self.hdr = False

    def check_frame_lists(self) -> None:
        overlap = sorted(set(self.frames) & set(self.validation))
        if overlap:
            self.problems.append(
                f"validation_frames {framespec.format_frames(overlap)} are also training "
                "frames; hold validation frames out of frames"
            )
        if self.settings.preview and not self.preview_frames:
            self.problems.append(
                "preview is set but preview_frames is empty; give the frames to preview"
            )

    def check_pair(self, frame: int) -> None:
        """Both frames of a pair readable, with the channels, finite, and of one size."""
        s = self.settings
        found = []
        for side, pattern, spec in (
            ("input", s.input, s.input_channels),
            ("ground truth", s.ground_truth, s.output_channels),
        ):
            read = self._read(frame, side, framespec.frame_path(pattern, frame), spec)
            if read is not None:
                found.append(read)
        if len(found) == 2:
            (ip, ii), (gp, gi) = found
            if (ii.width, ii.height) != (gi.width, gi.height):
                self.problems.append(
                    f"frame {frame}: input {ip} is {ii.width}x{ii.height} but ground truth {gp} "
                    f"is {gi.width}x{gi.height}; reformat one to match"
                )
            self.sizes.add((ii.height, ii.width))
            self.input_sizes[frame] = (ii.width, ii.height)

    def find_neighbours(self) -> None:
        """temporal_consistency's unlabelled frames: for each training frame t, input frame t+1
        if it is on disk, else t-1 (only its input is read, whatever else the frame is: the
        choice depends on the files alone, so ``ccat-tf cache`` makes the same one). A neighbour
        must have its frame's size and channels; a frame with neither is trained without the
        temporal term (a notice), and a data set where no frame has one is a problem."""
        s = self.settings
        missing = []
        for frame in self.frames:
            chosen = None
            paths = [(n, framespec.frame_path(s.input, n)) for n in (frame + 1, frame - 1)]
            found = [(n, path) for n, path in paths if os.path.lexists(path)]
            if not found:
                missing.append(frame)
            elif self._check_neighbour(frame, found[0][1]):
                chosen = found[0][0]
            self.neighbours.append(chosen)
        if missing and len(missing) < len(self.frames):
            self.notices.append(
                f"temporal_consistency: frame(s) {framespec.format_frames(missing)} have no "
                "neighbouring input frame (t+1 or t-1) on disk; they train without the temporal "
                "term"
            )
        elif missing:
            self.problems.append(
                f"temporal_consistency is {s.temporal_consistency:g} but no training frame has a "
                f"neighbouring input frame (t+1 or t-1 of {s.input}) on disk; render the input "
                "frames next to the training frames or set temporal_consistency to 0"
            )

    def _check_neighbour(self, frame: int, path: str) -> bool:
        """The neighbour at ``path`` has training frame ``frame``'s size and input channels
        (one problem line otherwise; False also when ``frame``'s own input was unreadable)."""
        try:
            info = imageio.image_info(path)
            names = imageio.channel_names_for(
                self.settings.input_channels, info.channel_names, path=path
            )
        except CcatError as err:
            self.problems.append(str(err))
            return False
        size = self.input_sizes.get(frame)
        if size is None or self.in_names is None:
            return False
        if (info.width, info.height) != size:
            self.problems.append(
                f"frame {frame}: neighbouring input {path} is {info.width}x{info.height} but the "
                f"input is {size[0]}x{size[1]}; reformat it to match or set temporal_consistency "
                "to 0"
            )
            return False
        if len(names) != len(self.in_names):
            self.problems.append(
                f"frame {frame}: neighbouring input {path} has {len(names)} channel(s) "
                f"({', '.join(names)}), the input {len(self.in_names)} "
                f"({', '.join(self.in_names)}); give it the same channels or set "
                "temporal_consistency to 0"
            )
            return False
        return True

    def _read(self, frame: int, side: str, path: str, spec):
        """(path, header) of one frame, or None after noting its problem."""
        if not os.path.lexists(path):  # a broken link or loop: imageio says which
            self.problems.append(
                f"frame {frame}: {side} file {path} does not exist; render it or remove the "
                "frame from frames"
            )
            return None
        try:
            info = imageio.image_info(path)
            names = imageio.channel_names_for(spec, info.channel_names, path=path)
            pixels = imageio.read_image(path, spec)
        except CcatError as err:
            self.problems.append(str(err))
            return None
        n_nan, n_inf = imageio.is_finite_report(pixels)
        if n_nan or n_inf:
            self.problems.append(
                f"{path} has {n_nan} NaN and {n_inf} infinite pixel values; clamp or fix them "
                "(e.g. an Expression node) before training"
            )
        if pixels.size and (float(pixels.max()) > 1.0 or float(pixels.min()) < 0.0):
            self.hdr = True
        if side == "input":
            self.in_names = self.in_names or names
        else:
            self.out_names = self.out_names or names
        return path, info

    def check_previews(self) -> None:
        s = self.settings
        if not s.preview:
            return
        for frame in self.preview_frames:
            path = framespec.frame_path(s.preview, frame)
            if not os.path.lexists(path):
                self.problems.append(
                    f"preview frame {frame}: {path} does not exist; fix preview or preview_frames"
                )
                continue
            try:
                names = imageio.image_info(path).channel_names
                imageio.channel_names_for(s.input_channels, names, path=path)
            except CcatError as err:
                self.problems.append(str(err))

    def fit_crop(self) -> int:
        """crop_size as it fits the smallest frame and the model's divisor (with a notice)."""
        from ccat_tf.models import divisor as model_divisor

        div = model_divisor(self.settings.model_size)
        crop = self.settings.crop_size
        if not self.sizes:
            return crop
        height, width = self.frame_hw
        largest = min(height, width) // div * div
        if largest < MIN_CROP:
            self.problems.append(
                f"frames are {width}x{height}, too small to train on; use frames of at least "
                f"{MIN_CROP}x{MIN_CROP} pixels"
            )
        elif crop > largest:
            self.notices.append(
                f"crop_size {crop} does not fit the {width}x{height} frames; reduced to {largest}"
            )
            crop = largest
        elif crop % div:
            crop = crop // div * div
            self.notices.append(
                f"crop_size rounded down to {crop}, a multiple of {div} for this model_size"
            )
        return crop

    @property
    def frame_hw(self) -> tuple[int, int]:
        """The smallest frame height and width (0, 0 before any pair was read)."""
        if not self.sizes:
            return 0, 0
        return min(h for h, _ in self.sizes), min(w for _, w in self.sizes)

    def info(self, crop: int) -> DataSetInfo:
        s = self.settings
        assert self.in_names is not None and self.out_names is not None
        pairs = len(self.frames)
        batch = _resolve_batch_size(s, pairs, crop, self.notices)
        in_kinds = transform.choose_kinds(self.in_names, self.hdr)
        out_kinds = transform.choose_kinds(self.out_names, self.hdr)
        height, width = self.frame_hw
        return DataSetInfo(
            input=s.input,
            ground_truth=s.ground_truth,
            frames=self.frames,
            input_channels=self.in_names,
            output_channels=self.out_names,
            width=width,
            height=height,
            hdr=self.hdr,
            input_transform=in_kinds,
            output_transform=out_kinds,
            crop_size=crop,
            batch_size=batch,
            total_steps=total_steps(s.epochs, pairs, batch),
            validation_frames=self.validation,
            preview=s.preview,
            preview_frames=self.preview_frames,
            notices=self.notices,
            residual=len(self.in_names) == len(self.out_names) and in_kinds == out_kinds,
            neighbours=self.neighbours,
        )


def _frames_or_none(spec: str) -> list[int]:
    return framespec.parse_frames(spec) if str(spec).strip() else []


# ----------------------------------------------------------------------------------------------
# The frame cache


class FrameCache:
    """Every pair decoded once, in training space, at each multi-resolution scale.

    ``level(scale)`` returns two lists (inputs, ground truths) of HWC float32 arrays (memory) or
    h5py datasets (HDF5), which both support ``[y0:y1, x0:x1]`` slicing, so crops read only the
    pixels they need.

    With temporal_consistency (``info.neighbours``), ``temporal(scale)`` returns two more lists,
    one entry per pair (None for a pair without a neighbour): the neighbouring input frame
    warped into the pair's geometry by optical flow, W(x_n), and where that warp is valid
    (HxWx1, 1 valid, 0 occluded or outside the frame). The flow is computed once per pair at
    full resolution; both are downsized for each scale exactly as the frames are.
    """

    def __init__(
        self,
        levels: dict[float, tuple[list, list]],
        h5file=None,
        path: Path | None = None,
        temporal: dict[float, tuple[list, list]] | None = None,
    ):
        self._levels = levels
        self._temporal = temporal or {}
        self._h5 = h5file
        self.path = path

    def level(self, scale: float) -> tuple[list, list]:
        return self._levels[scale]

    def temporal(self, scale: float) -> tuple[list, list]:
        """(warped neighbours, valid masks) at ``scale``, None for a pair without one."""
        return self._temporal[scale]

    @property
    def scales(self) -> list[float]:
        return sorted(self._levels)

    def detail_share(self) -> float | None:
        """How much of the pairs' difference survives at 1/4 size: RMS(y - x) of the 1/4 level
        over RMS(y - x) at full size, over every pair. About 1 for a grade or a restyle, 0.3-0.4
        for a deblur or a 3x upscale (whose low-stage pairs hardly differ). None without a 1/4
        level, or when input and output are different things (rgb -> alpha)."""
        if 0.25 not in self._levels:
            return None
        sums = []
        for scale in (0.25, 1.0):
            xs, ys = self._levels[scale]
            if xs[0].shape[-1] != ys[0].shape[-1]:
                return None
            sq = sum(
                float(np.sum(np.square(y[()] - x[()], dtype=np.float64)))
                for x, y in zip(xs, ys, strict=True)
            )
            sums.append(sq / sum(int(np.prod(x.shape)) for x in xs))
        return float(np.sqrt(sums[0] / sums[1])) if sums[1] > 0 else None

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    # -- building -------------------------------------------------------------------------
    @staticmethod
    def frame_bytes(info: DataSetInfo, scales) -> int:
        chans = len(info.input_channels) + len(info.output_channels)
        per_pixel = chans * info.pairs + _neighbour_count(info) * (len(info.input_channels) + 1)
        return int(sum(info.width * info.height * s * s for s in scales) * per_pixel * 4)

    @classmethod
    def build_in_memory(
        cls, info: DataSetInfo, scales, frames: list[int] | None = None
    ) -> FrameCache:
        """The training pairs (or ``frames``' pairs: validation, no neighbours) in memory."""
        levels: dict[float, tuple[list, list]] = {s: ([], []) for s in scales}
        temporal: dict[float, tuple[list, list]] = {}
        neighbours = info.neighbours if frames is None else []
        if neighbours:
            temporal = {s: ([], []) for s in scales}
        for i, frame in enumerate(frames if frames is not None else info.frames):
            x, y = load_pair(info, frame)
            for s in scales:
                levels[s][0].append(_downsize(x, s))
                levels[s][1].append(_downsize(y, s))
            if neighbours:
                warped = None
                if neighbours[i] is not None:
                    warped = load_neighbour(info, neighbours[i], x)
                for s in scales:
                    for side, arr in zip(temporal[s], warped or (None, None), strict=True):
                        side.append(None if arr is None else _downsize(arr, s))
        return cls(levels, temporal=temporal)

    @classmethod
    def write_hdf5(cls, info: DataSetInfo, path: str | os.PathLike, scales=STAGE_SCALES) -> Path:
        """Decode the data set into an HDF5 cache file at ``path`` (atomically).

        A disk without room for the decoded frames is refused before any is decoded; one that
        fills up meanwhile is the same one-line error (HDF5 never sees the failed write).
        """
        import json

        from ccat_tf.atomic import atomic_path, check_free_space, hdf5_writer

        path = Path(path)
        check_free_space(path, _hdf5_bytes(info, scales))
        with atomic_path(path) as tmp:
            with hdf5_writer(tmp) as h5:
                h5.attrs["dataset_info"] = json.dumps(info.to_dict())
                h5.attrs["signature"] = dataset_signature(info)
                for i, frame in enumerate(info.frames):
                    x, y = load_pair(info, frame)
                    sides = [("input", x), ("ground_truth", y)]
                    if info.neighbours and info.neighbours[i] is not None:
                        warped, valid = load_neighbour(info, info.neighbours[i], x)
                        sides += [("warped", warped), ("valid", valid)]
                    for s in scales:
                        for side, arr in sides:
                            small = _downsize(arr, s)
                            h5.create_dataset(
                                f"scale_{s}/{side}/{i:06d}",
                                data=small,
                                chunks=_chunks(small.shape),
                                fletcher32=True,
                            )
        return path

    @classmethod
    def open_hdf5(cls, info: DataSetInfo, path: str | os.PathLike, scales) -> FrameCache:
        import h5py

        path = Path(path)
        try:
            regular_file.check_regular(path)
            h5 = h5py.File(path, "r")
        except OSError as err:
            raise DataSetError(
                f"frame cache {path} cannot be read ({err}); delete it so it is rebuilt"
            ) from None
        if h5.attrs.get("signature") != dataset_signature(info):
            h5.close()
            raise DataSetError(
                f"frame cache {path} was built for another data set, other channels or another "
                "temporal_consistency (neighbour frames); rebuild it (ccat-tf cache) or remove "
                "cache_file"
            )
        levels, temporal = {}, {}
        try:
            for s in scales:
                levels[s] = tuple(
                    [h5[f"scale_{s}/{side}/{i:06d}"] for i in range(info.pairs)]
                    for side in ("input", "ground_truth")
                )
                if info.neighbours:
                    temporal[s] = tuple(
                        [
                            None if n is None else h5[f"scale_{s}/{side}/{i:06d}"]
                            for i, n in enumerate(info.neighbours)
                        ]
                        for side in ("warped", "valid")
                    )
        except KeyError as err:
            h5.close()
            raise DataSetError(
                f"frame cache {path} is incomplete ({err}); rebuild it with ccat-tf cache"
            ) from None
        return cls(levels, h5file=h5, path=path, temporal=temporal)


def _chunks(shape) -> tuple[int, int, int]:
    return (min(shape[0], 64), min(shape[1], 64), shape[2])


def _hdf5_bytes(info: DataSetInfo, scales) -> int:
    """The size of :meth:`FrameCache.write_hdf5`'s file: whole chunks (edge chunks are stored
    full size) with their Fletcher-32 sums, 4 KiB of headers per frame, 64 KiB for the file."""
    total = 2**16
    for s in scales:
        h, w = max(1, int(round(info.height * s))), max(1, int(round(info.width * s)))
        ch, cw, _ = _chunks((h, w, 1))
        chunks = math.ceil(h / ch) * math.ceil(w / cw)
        for n in (len(info.input_channels), len(info.output_channels)):
            total += info.pairs * (chunks * (ch * cw * n * 4 + 4) + 2**12)
        for n in (len(info.input_channels), 1):  # temporal_consistency's warped neighbours
            total += _neighbour_count(info) * (chunks * (ch * cw * n * 4 + 4) + 2**12)
    return total


def _neighbour_count(info: DataSetInfo) -> int:
    return sum(n is not None for n in info.neighbours)


def dataset_signature(info: DataSetInfo) -> str:
    """Identifies the pixels a cache holds: patterns, frames, channels and transforms."""
    import hashlib
    import json

    key = {
        k: getattr(info, k)
        for k in (
            "input",
            "ground_truth",
            "frames",
            "input_channels",
            "output_channels",
            "input_transform",
            "output_transform",
            "width",
            "height",
        )
    }
    if info.neighbours:  # a cache with temporal_consistency's warped neighbours (else as before)
        key["neighbours"] = info.neighbours
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def load_pair(info: DataSetInfo, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """One (input, ground truth) pair in training space, cropped to the data set's size."""
    x = imageio.read_image(framespec.frame_path(info.input, frame), info.input_channels)
    y = imageio.read_image(framespec.frame_path(info.ground_truth, frame), info.output_channels)
    h, w = min(x.shape[0], y.shape[0]), min(x.shape[1], y.shape[1])
    return (
        transform.encode(x[:h, :w], info.input_transform),
        transform.encode(y[:h, :w], info.output_transform),
    )


def load_neighbour(info: DataSetInfo, neighbour: int, x: np.ndarray):
    """temporal_consistency's view of training input ``x`` (training space, as
    :func:`load_pair` returns it): input frame ``neighbour`` warped into ``x``'s geometry by the
    DIS optical flow between them, and where that warp holds (HxWx1 float32, 1 valid, 0 where
    the forward-backward check finds an occlusion or the match falls outside the frame)."""
    from ccat_tf import temporal

    h, w = x.shape[:2]
    n = imageio.read_image(framespec.frame_path(info.input, neighbour), info.input_channels)
    n = transform.encode(n[:h, :w], info.input_transform)
    flow = temporal.pair_flow(n, x)  # x(p) ~ n(p + flow(p))
    return temporal.warp(n, flow), flow.valid[..., None].astype(np.float32)


def _downsize(array: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return np.ascontiguousarray(array, dtype=np.float32)
    h, w = array.shape[:2]
    return imageio.resize(array, max(1, int(round(w * scale))), max(1, int(round(h * scale))))


def open_cache(
    info: DataSetInfo, settings: TrainSettings, data_directory: Path, notices: list[str]
) -> FrameCache:
    """The frame cache for training: a prebuilt HDF5 file, memory, or an HDF5 file made now."""
    scales = list(STAGE_SCALES) if settings.use_multi_resolution_training else [1.0]
    if settings.cache_file:
        what = regular_file.problem(settings.cache_file)
        if what == "it does not exist":
            raise DataSetError(
                f"cache_file {settings.cache_file} does not exist; build it with ccat-tf cache "
                "or leave cache_file empty"
            )
        if what is not None:  # a FIFO would block HDF5's open, a device never end
            raise DataSetError(
                f"cache_file {settings.cache_file} cannot be read: {what}; give a cache file "
                "built with ccat-tf cache or leave cache_file empty"
            )
        return FrameCache.open_hdf5(info, settings.cache_file, scales)
    mode = settings.cache
    if mode == "auto":
        from ccat_tf.resources import available_memory_bytes

        need = FrameCache.frame_bytes(info, scales)
        mode = "memory" if need < 0.4 * available_memory_bytes() else "hdf5"
        if mode == "hdf5":
            notices.append(
                f"the data set needs {need / 2**30:.1f} GiB decoded, more than fits in memory; "
                "caching frames in an HDF5 file"
            )
    if mode == "memory":
        return FrameCache.build_in_memory(info, scales)
    path = data_directory / "frame_cache.h5"
    cache = None
    if path.exists():
        try:
            cache = FrameCache.open_hdf5(info, path, scales)
        except DataSetError:
            cache = None
    if cache is None:
        FrameCache.write_hdf5(info, path, scales)
        cache = FrameCache.open_hdf5(info, path, scales)
    return cache


# ----------------------------------------------------------------------------------------------
# Crops: a pure function of (seed, sample index)


@dataclass(frozen=True)
class CropPlan:
    """Everything that decides which crops a run sees; two equal plans give identical crops."""

    seed: int
    pairs: int
    batch_size: int
    crop_size: int
    divisor: int
    stage_bounds: tuple[int, int, int]
    stage_scales: tuple[float, float, float]
    frame_hw: tuple[int, int]
    augment: bool
    position: bool = False  #: append each pixel's frame coordinates to the input crops
    #: temporal_consistency: each crop also brings its window of the pair's warped neighbour
    #: and the warp's valid mask (the same place, rotation and flip)
    temporal: bool = False
    #: the fix lives in fine detail: every stage cuts its crops (as small as the stage's) from
    #: the full-size frames (see FINE_DETAIL_BELOW)
    fine_detail: bool = False
    #: with ``augment``, quarter turns as well as mirror images (augment_rotations)
    rotations: bool = False

    def stage_of(self, step: int) -> int:
        return stage_for_step(step, list(self.stage_bounds))

    def level_at(self, stage: int) -> float:
        """The frame scale a stage cuts its crops from."""
        return 1.0 if self.fine_detail else self.stage_scales[stage]

    def crop_at(self, stage: int) -> int:
        return stage_crop(self.crop_size, self.stage_scales[stage], self.divisor, self.frame_hw)


def sample_params(
    plan: CropPlan, sample: int, level_shapes: list[tuple[int, int]]
) -> tuple[int, int, int, int, int, int]:
    """(pair, y, x, crop, rotation, flip) for the ``sample``-th crop of the run.

    Pairs are visited in a fresh random order every epoch (each pair once per epoch, as CopyCat's
    epochs mean); the permutation and the crop position come from generators seeded with
    (seed, epoch) and (seed, sample), never from shared state.
    """
    step = sample // plan.batch_size
    stage = plan.stage_of(step)
    crop = plan.crop_at(stage)
    epoch, pos = divmod(sample, plan.pairs)
    order = np.random.default_rng([plan.seed, 0x5EED, epoch]).permutation(plan.pairs)
    pair = int(order[pos])
    rng = np.random.default_rng([plan.seed, 0xC209, sample])
    h, w = level_shapes[pair]
    y = int(rng.integers(0, max(0, h - crop) + 1))
    x = int(rng.integers(0, max(0, w - crop) + 1))
    rot = int(rng.integers(0, 4)) if plan.augment else 0  # drawn either way: the same stream
    flip = int(rng.integers(0, 2)) if plan.augment else 0
    if not plan.rotations:
        rot = 0
    return pair, y, x, crop, rot, flip


def make_crop(cache: FrameCache, plan: CropPlan, sample: int) -> tuple[np.ndarray, ...]:
    """The ``sample``-th (input, ground truth) crop, augmented; deterministic. With
    ``plan.temporal`` also (warped neighbour, valid mask) of the same window: the neighbour
    gets the input's position channels. The mask is empty (and the neighbour the input itself)
    for a pair without a neighbour and for all but one sample in :data:`TEMPORAL_EVERY`."""
    step = sample // plan.batch_size
    scale = plan.level_at(plan.stage_of(step))
    xs, ys = cache.level(scale)
    shapes = [tuple(a.shape[:2]) for a in xs]
    pair, y, x, crop, rot, flip = sample_params(plan, sample, shapes)
    out = [
        _with_position(plan, xs[pair], y, x, crop),
        np.asarray(ys[pair][y : y + crop, x : x + crop], dtype=np.float32),
    ]
    if plan.temporal:
        ws, ms = cache.temporal(scale)
        if ws[pair] is None or sample % TEMPORAL_EVERY:
            out += [out[0], np.zeros((*out[0].shape[:2], 1), np.float32)]
        else:
            out += [
                _with_position(plan, ws[pair], y, x, crop),
                np.asarray(ms[pair][y : y + crop, x : x + crop], dtype=np.float32),
            ]
    if rot:
        out = [np.rot90(a, rot) for a in out]
    if flip:
        out = [a[:, ::-1] for a in out]
    return tuple(np.ascontiguousarray(a) for a in out)


def make_tf_dataset(
    cache: FrameCache,
    plan: CropPlan,
    first_step: int,
    last_step: int,
    in_ch: int,
    out_ch: int,
    current_plan=None,
):
    """tf.data pipeline of batches for steps ``first_step`` .. ``last_step - 1``.

    sample index -> crop + augment (parallel map) -> batch at the global batch size -> prefetch.
    Batches never mix stages: a batch is exactly the samples of one step. ``current_plan`` (a
    callable returning a CropPlan) lets a time-limited run re-plan its stages while it runs.
    """
    import tensorflow as tf

    def fetch(sample):
        return make_crop(cache, current_plan() if current_plan else plan, int(sample))

    # (input, ground truth), and with temporal_consistency (warped neighbour, valid mask)
    channels = [in_ch, out_ch] + ([in_ch, 1] if plan.temporal else [])

    def crop_fn(sample):
        out = tf.numpy_function(fetch, [sample], [tf.float32] * len(channels), stateful=False)
        for tensor, n in zip(out, channels, strict=True):
            tensor.set_shape([None, None, n])
        return tuple(out)

    b = plan.batch_size
    ds = tf.data.Dataset.range(first_step * b, last_step * b)
    return batched_pipeline(ds, crop_fn, b)


#: Parallel calls of a pipeline's map, and batches it prepares ahead of the step. Fixed rather
#: than tf.data.AUTOTUNE: autotuning runs a model thread whose timed wait (its period grows to a
#: minute) the iterator's destructor joins, so ending a run's pipelines took 20-126 s after the
#: final .cat (gdb: ~RootDataset::Iterator waiting on Model::OptimizeLoop; the distributed input
#: path's own pipeline did it too, see StepLoop._input_options). With these two, a step was no
#: slower (bench_loop_speed on a 2-core Xeon: 0.069 s against 0.074-0.079 autotuned).
PIPELINE_PARALLEL_CALLS = 2
PIPELINE_PREFETCH = 2


def batched_pipeline(ds, fn, batch: int):
    """``ds`` mapped by ``fn`` in order, batched at ``batch`` and prefetched, without tf.data's
    autotuning (see :data:`PIPELINE_PARALLEL_CALLS`) and without auto-sharding (every process
    makes the same global batches and keeps its slice)."""
    import tensorflow as tf

    # h5py serialises reads behind one lock; memory slices are cheap: a few parallel calls suffice.
    ds = ds.map(fn, num_parallel_calls=PIPELINE_PARALLEL_CALLS, deterministic=True)
    ds = ds.batch(batch, drop_remainder=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    options.deterministic = True
    options.autotune.enabled = False
    ds = ds.with_options(options)
    return ds.prefetch(PIPELINE_PREFETCH)


def contact_sheet_crops(cache: FrameCache, plan: CropPlan, step: int, count: int = 3):
    """``count`` random (input, ground truth) crops at the stage of ``step``; seeded by step."""
    out = []
    for i in range(count):
        # Sample indices far beyond any real run, so sheet crops never repeat training crops' RNG.
        out.append(make_crop_at_step(cache, plan, step, 10**12 + step * 16 + i))
    return out


def make_crop_at_step(cache: FrameCache, plan: CropPlan, step: int, key: int):
    scale = plan.level_at(plan.stage_of(step))
    crop = plan.crop_at(plan.stage_of(step))
    xs, ys = cache.level(scale)
    rng = np.random.default_rng([plan.seed, 0x5C, key])
    pair = int(rng.integers(0, len(xs)))
    h, w = xs[pair].shape[:2]
    y = int(rng.integers(0, max(0, h - crop) + 1))
    x = int(rng.integers(0, max(0, w - crop) + 1))
    return (
        _with_position(plan, xs[pair], y, x, crop),
        np.asarray(ys[pair][y : y + crop, x : x + crop], dtype=np.float32),
    )


def _with_position(plan: CropPlan, frame, y: int, x: int, crop: int) -> np.ndarray:
    """The input crop at (y, x), with its pixels' frame coordinates appended if the plan says
    so (the level's frame is the whole frame: coordinates are the same at every stage)."""
    xi = np.asarray(frame[y : y + crop, x : x + crop], dtype=np.float32)
    if not plan.position:
        return xi
    from ccat_tf.models import coordinate_channels

    coords = coordinate_channels(xi.shape[0], xi.shape[1], tuple(frame.shape[:2]), (y, x))
    return np.concatenate([xi, coords], axis=-1)
