"""Training, inference and pretraining settings: CopyCat's knobs in snake_case, described once.

Each field is declared with :func:`setting`: its default, help text, CopyCat control, allowed
words and numeric range sit beside it, and everything else is made from that: the CLI's flags and
``--help`` (``commands/_settings_args.py``), the README's settings tables
(``scripts/settings_table.py``, checked by tests/test_readme.py), the checks here, and the
workflow schema's defaults, descriptions, enums and bounds (checked by
tests/test_config_schema.py).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ccat_tf.errors import SettingsError
from ccat_tf.losses import LOSSES, MIXED_MAE_WEIGHT
from ccat_tf.precision import PRECISIONS

MODEL_SIZES = ("small", "medium", "large")
#: What training's model_size accepts: a preset, or auto (chosen from the time limit and speed).
TRAIN_MODEL_SIZES = ("auto", *MODEL_SIZES)
INITIAL_WEIGHTS = ("none", "checkpoint", "deblur", "upscale", "human_matting")
CACHE_MODES = ("auto", "memory", "hdf5")
OUTPUT_DATA_TYPES = ("auto", "half", "float", "uint8", "uint10", "uint16")


@dataclass(frozen=True)
class Range:
    """The values a numeric setting accepts: ``low..high`` (``above``: ``low`` itself excluded).

    Checked when settings are made (before anything is written), shown in ``--help`` and the
    README tables, and mirrored by the workflow schema's ``minimum``/``maximum``.
    """

    low: int | float
    high: int | float
    integer: bool = True
    above: bool = False  #: ``low`` is an exclusive bound (a positive number)

    def describe(self) -> str:
        if self.integer:
            return f"a whole number from {self.low} to {self.high}"
        if not self.above:
            return f"a number from {self.low} to {self.high}"
        return f"a number above {self.low} and at most {self.high}"

    def short(self) -> str:
        return f"{'>' if self.above else ''}{self.low}..{self.high}"

    def contains(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if not math.isfinite(value) or value > self.high:
            return False
        return value > self.low if self.above else value >= self.low


def setting(
    default: Any = dataclasses.MISSING,
    help: str = "",  # noqa: A002 - the word argparse uses
    *,
    knob: str = "-",
    choices: tuple[str, ...] | None = None,
    range: Range | None = None,  # noqa: A002
    auto: bool = False,
    factory: Any = None,
):
    """A settings field and everything said about it, in one place: its default, help text,
    CopyCat control (``knob``), allowed words (``choices``), numeric ``range`` (``auto``: the
    word ``auto`` is accepted instead of a number). The CLI's
    flags and ``--help``, the README tables (scripts/settings_table.py), the checks below and
    the workflow schema (tests/test_config_schema.py compares it) all read this."""
    meta = {"help": help, "knob": knob, "choices": choices, "range": range, "auto": auto}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def describe(cls) -> dict[str, dict[str, Any]]:
    """``{name: {default, help, knob, choices, range}}`` for every field of a settings class."""
    out = {}
    for f in fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        out[f.name] = {"default": default, **f.metadata}
    return out


def check_range(f: dataclasses.Field, value: Any, given: Any = None) -> None:
    """Raise SettingsError if field ``f``'s value is outside its range (``auto`` passes where
    the field takes it). ``given`` is the value as written (``1e23``, not the int it became)."""
    limits, auto = f.metadata.get("range"), f.metadata.get("auto", False)
    if limits is None or (auto and value == "auto"):
        return
    if not limits.contains(value):
        word = "'auto' or " if auto else ""
        shown = value if given is None else given
        raise SettingsError(f"{f.name} is {shown}; use {word}{limits.describe()}")


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SettingsError(f"{name} '{value}' is unknown; use one of {', '.join(choices)}")


_FRAMES_HELP = "data set frames: 1001-1100, 1001,1010 or 1001-1100x10"


@dataclass
class TrainSettings:
    """Everything CopyCat's node asks for, plus the few things a script needs to be reproducible."""

    # --- data set (CopyCat's Input / Ground Truth / Preview inputs) ---
    input: str = setting("", "input sequence, e.g. plate.####.exr", knob="Input (input 0)")
    ground_truth: str = setting(
        "", "ground-truth sequence (the painted fix)", knob="Ground Truth (input 1)"
    )
    frames: str = setting("", _FRAMES_HELP, knob="the frames connected to the Input/Ground Truth")
    input_channels: Any = setting(
        "rgb",
        "rgb, rgba, alpha or comma-separated channel names",
        knob="Channels (`trainingInfo`, read-only)",
    )
    output_channels: Any = setting(
        "rgb",
        "channels to learn from the ground truth: rgb, rgba, alpha or names",
        knob="Channels (`trainingInfo`, read-only)",
    )
    preview: str = setting(
        "", "optional preview sequence (frames outside the data set)", knob="Preview (input 2)"
    )
    preview_frames: str = setting(
        "", "preview frames rendered at each checkpoint", knob="the frames of the Preview input"
    )
    validation_frames: str = setting("", "held-out pairs whose PSNR is recorded at each checkpoint")
    # --- CopyCat tab ---
    data_directory: str = setting(
        "",
        "folder for .cat, .ost, .summary and .png files (required)",
        knob="Data Directory (`dataDirectory`)",
    )
    epochs: int = setting(
        10000,
        "passes over the data set; Total Steps = ceil(epochs x pairs / batch_size)",
        knob="Epochs (`epochs`)",
        range=Range(1, 1_000_000),
    )
    time_limit: float = setting(
        0.0,
        "minutes of training, everything from the data set checks to the final .cat (0: off, "
        "epochs sets the length); the run measures its speed and plans its steps, stages and "
        "learning-rate decay to end on time",
        range=Range(0, 525_600, integer=False),
    )
    use_gpu_if_available: bool = setting(
        True,
        "train on GPUs when present (the workflow's inference follows it too)",
        knob="Use GPU if available (`useGPUIfAvailable`)",
    )
    # --- Advanced ---
    initial_weights: str = setting(
        "none",
        "none, checkpoint, deblur, upscale or human_matting",
        knob="Initial Weights (`initialWeights`)",
        choices=INITIAL_WEIGHTS,
    )
    checkpoint_file: str = setting(
        "",
        ".cat whose weights start training when initial_weights is checkpoint",
        knob="Checkpoint File (`checkpointFile`)",
    )
    model_size: str = setting(
        "auto",
        "auto, small, medium or large; auto: with a time_limit, the largest size that still "
        "trains enough steps in it at the measured speed, else medium (CopyCat's default)",
        knob="Model Size (`modelSize`)",
        choices=TRAIN_MODEL_SIZES,
    )
    batch_size: Any = setting(
        "auto",
        "auto (from free GPU memory or RAM) or a number <= pairs",
        knob="Batch Size (`batchSizeType`, `batchSize`)",
        range=Range(1, 1024),
        auto=True,
    )
    crop_size: int = setting(
        256, "size of the random square crops", knob="Crop Size (`cropSize`)", range=Range(16, 4096)
    )
    checkpoint_interval: int = setting(
        1000,
        "steps between .cat checkpoints (and previews, validation PSNR)",
        knob="Checkpoint Interval (`checkpointInterval`)",
        range=Range(1, 1_000_000_000),
    )
    contact_sheet_interval: int = setting(
        100,
        "steps between contact sheet .png files",
        knob="Contact Sheet Interval (`imageInterval`)",
        range=Range(1, 1_000_000_000),
    )
    use_multi_resolution_training: bool = setting(
        True,
        "train at 1/4, then 1/2, then full resolution (a fix that lives in fine detail, like a "
        "deblur or an upscale, has its low stages cut small crops from the full-size frames "
        "instead, for 60% and 30% of the steps)",
        knob="Use Multi-Resolution Training (`useMultiResolutionTraining`)",
    )
    # --- beyond CopyCat: reproducibility and plumbing ---
    learning_rate: float = setting(
        1.5e-3,
        "Adam's peak learning rate: a short warm-up reaches it (again at each multi-resolution "
        "stage's start), it is held for 70% of the run, then it decays (cosine) to 5% at the "
        "planned end",
        range=Range(0, 1, integer=False, above=True),
    )
    loss: str = setting(
        "mse",
        "what each step minimises per pixel: mse (squared error, what PSNR measures: learns "
        "faint, uncertain detail such as an upscale's or a stylisation's), mae (absolute "
        "error, this project's before: its answer to an uncertain pixel is the median, often "
        f"no change at all) or mse+mae (squared error plus {MIXED_MAE_WEIGHT} x absolute "
        "error: small errors are pushed to zero as with mae; better on deblurs, worse on "
        "upscales)",
        choices=LOSSES,
    )
    augment: bool = setting(
        True,
        "random mirror images of the crops (left-right), and quarter turns with augment_rotations",
    )
    augment_rotations: bool = setting(
        False,
        "with augment, also turn crops by random quarter turns (this project's default before; "
        "for footage with no up and down, e.g. overhead or microscope shots): on shot footage "
        "the mirror alone learnt 0.05-0.7 dB more on 7 fixes",
    )
    position_aware: bool = setting(
        True,
        "give the network each pixel's place in the whole frame (u, v, r^2 channels) so "
        "vignettes, lens shading and graduated skies can be learnt from crops; with the colour "
        "branch only its fit sees them (a U-Net seeing them memorised where things were)",
    )
    colour_branch: bool = setting(
        True,
        "a global colour branch: the least-squares fit of the training pairs, added to the U-Net",
    )
    weight_average: float = setting(
        0.99,
        "decay of the moving average of the weights that validation, checkpoints and the "
        "final .cat hold (0: off, the last step's weights); it warms up as "
        "min(decay, (1+n)/(10+n)) after n steps, so short runs average only their last steps",
        range=Range(0, 0.9999, integer=False),
    )
    temporal_consistency: float = setting(
        0.0,
        "weight of a flicker penalty (0: off): each training frame's neighbouring input frame "
        "(t+1, else t-1), warped to it by optical flow, must give the same output where the "
        "motion explains it (above 10 the penalty drowns the fix: runs diverged at 20)",
        range=Range(0, 10, integer=False),
    )
    seed: int = setting(
        0, "seed of the crop and weight-initialisation random numbers", range=Range(0, 2**32 - 1)
    )
    deterministic: bool = setting(
        False, "TensorFlow op determinism: bit-exact resume on CPU (slower on GPU)"
    )
    precision: str = setting(
        "auto",
        "number format of the training step: float32, or bfloat16 (weights, loss and output "
        "layer stay float32; the .cat is float32 either way); auto: bfloat16 on CPUs that "
        "compute it natively (Intel AMX, AVX-512 BF16), where a step takes a half to two "
        "thirds of the time, else float32",
        choices=PRECISIONS,
    )
    cache: str = setting(
        "auto",
        "frame cache: auto, memory or hdf5 (the workflow always trains from the HDF5 cache its "
        "cache rule builds)",
        choices=CACHE_MODES,
    )
    cache_file: str = setting("", "prebuilt HDF5 frame cache from ccat-tf cache")
    run_name: str = setting(
        "",
        "name of this run in the run table (default run1, run2, ...)",
        knob="Runs table Name (`runTable`)",
    )
    # --- launch: one network trained by several processes (CopyCat's distributed training) ---
    main_addr: str = setting(
        "",
        "address of rank 0's machine, where every rank meets (COPYCAT_MAIN_ADDR); with "
        "main_port, rank and world_size set, this process is one rank of a distributed training",
    )
    main_port: int = setting(
        0,
        "port rank 0 listens on for the ranks (COPYCAT_MAIN_PORT; 0: unset)",
        range=Range(0, 65535),
    )
    rank: int = setting(
        -1,
        "this process's rank, 0 .. world_size - 1; rank 0 alone writes the Data Directory "
        "(COPYCAT_RANK; -1: unset)",
        range=Range(-1, 65535),
    )
    world_size: int = setting(
        0,
        "number of processes training together (COPYCAT_WORLD_SIZE; 0: unset)",
        range=Range(0, 65536),
    )
    sync_interval: int = setting(
        1,
        "steps between gradient exchanges (COPYCAT_SYNC_INTERVAL); only 1 is supported: every "
        "step's gradients are averaged over every rank",
        range=Range(1, 1_000_000),
    )
    rank_timeout: float = setting(
        300.0,
        "seconds the ranks wait for a missing or stopped rank before exiting with an error",
        range=Range(0, 86_400, integer=False, above=True),
    )
    # --- Python tab (``module:function`` strings or callables) ---
    on_training_start: list = setting(
        help="hook called when training starts",
        knob="Python tab: before render (`beforeRender`)",
        factory=list,
    )
    on_checkpoint: list = setting(
        help="hook called after each checkpoint",
        knob="Python tab: after each frame (`afterFrameRender`), here per checkpoint",
        factory=list,
    )
    on_training_end: list = setting(
        help="hook called when training ends",
        knob="Python tab: after render (`afterRender`)",
        factory=list,
    )

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any] | None = None, **overrides) -> TrainSettings:
        return _from_mapping(cls, mapping, overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check(self) -> TrainSettings:
        """Check values that do not depend on the frames; raise SettingsError naming the key."""
        _check_fields(self)
        if self.initial_weights == "checkpoint" and not self.checkpoint_file:
            raise SettingsError(
                "initial_weights is 'checkpoint' but checkpoint_file is empty; set checkpoint_file "
                "to a .cat file"
            )
        if self.batch_size != "auto" and (
            isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int)
        ):
            raise SettingsError(
                f"batch_size is {self.batch_size!r}; use 'auto' or {RANGES['batch_size'].describe()}"
            )
        if self.run_name:
            from ccat_tf.runs import check_run_name  # the run table's naming rule, in one place

            check_run_name(self.run_name)
        return self


#: How a training is launched (the processes and their meeting point), not what it trains: a run
#: trained by 2 processes resumes with 1 and the other way round (never part of a run's signature).
LAUNCH_KEYS = frozenset(
    {"main_addr", "main_port", "rank", "world_size", "sync_interval", "rank_timeout"}
)

#: Training settings that may change between a run and its resume without invalidating its
#: progress (CopyCat's Resume Training): ccat_tf.training resumes across them, and the workflow
#: (ccat_tf.workflow.shots) reruns nothing for them but epochs.
RESUME_COMPATIBLE_KEYS = frozenset(
    {
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
        "precision",
        "cache",
        "cache_file",
        "data_directory",
    }
    | LAUNCH_KEYS
)


@dataclass
class InferSettings:
    """The Inference node's controls, plus output and tiling choices."""

    model_file: str = setting(
        "", "the .cat to apply (or give it as the first argument)", knob="Model File (`modelFile`)"
    )
    input: str = setting(
        "",
        "input sequence, e.g. plate.####.exr (any format OpenImageIO reads)",
        knob="Input (input 0)",
    )
    frames: str = setting(
        "",
        "frames to render: 1001-1100, 1001,1010 or 1001-1100x10 (default: all found)",
        knob="the frames connected to the Input",
    )
    output: str = setting(
        "", "output sequence; the extension picks the format: .exr .dpx .tif .png .jpg"
    )
    use_gpu_if_available: bool = setting(
        True,
        "run on GPU 0 when there is one (otherwise the CPU, with a notice)",
        knob="Use GPU if available (`useGPUIfAvailable`)",
    )
    optimize_for_speed_and_memory: bool = setting(
        False,
        "float16 compute (mixed precision, float32 output layer): faster and about half the "
        "memory on GPUs. On a CPU with native bfloat16 (Intel AMX, AVX-512 BF16) it computes in "
        "bfloat16 instead: 1.4-2.1x faster than float32, results about 4e-4 to 8e-4 RMS from "
        "it. On other CPUs float16 is emulated: a "
        "quarter to a third less memory (larger tiles) but 1.4-1.9x slower, results about 1e-3 "
        "from float32 (a notice says which)",
        knob="Optimize for Speed and Memory (`optimizeForSpeedAndMemory`)",
    )
    tile_size: Any = setting(
        "auto",
        "tile edge in pixels, or auto: the largest that fits free memory (whole frames when "
        "they fit)",
        range=Range(16, 65536),
        auto=True,
    )
    tile_overlap: Any = setting(
        "auto",
        "pixels shared by neighbouring tiles, or auto: from the network's receptive field, so "
        "tiled output equals untiled output",
        range=Range(0, 4096),
        auto=True,
    )
    batch_tiles: int = setting(4, "tiles run through the network together", range=Range(1, 256))
    output_data_type: str = setting(
        "auto",
        "auto (EXR half; other formats keep the input's bit depth, the deepest of a mixed "
        "sequence), half, float, uint8, uint10 (DPX), uint16",
        choices=OUTPUT_DATA_TYPES,
    )
    merge_input: bool = setting(False, "write the input RGB with the predicted matte as RGBA")
    overwrite: bool = setting(
        True, "replace existing output frames (the input sequence is never overwritten)"
    )
    temporal_blend: float = setting(
        0.5,
        "flicker reduction: mix each frame's output with its neighbours' (frames -1 and +1 of "
        "the input, rendered again at a chunk's ends) warped by the input's optical flow, with "
        "this weight, where the motion explains them, fine detail only (0: off)",
        range=Range(0, 1, integer=False),
    )
    self_ensemble: int = setting(
        2,
        "average the network's output over this many flips and quarter turns of each frame "
        "(1, 2, 4 or 8; 2 adds the mirror image, which training shows; 4 and 8 add upside-down "
        "and turned views, which only networks trained with augment_rotations know): steadier, "
        "slightly better frames for that many times the network's time (1: off)",
        range=Range(1, 8),
    )
    # --- Python tab ---
    before_render: list = setting(
        help="hook called once before the first frame",
        knob="Python tab: before render (`beforeRender`)",
        factory=list,
    )
    before_frame_render: list = setting(
        help="hook called before each frame (frame, index, total, path, ...)",
        knob="Python tab: before each frame (`beforeFrameRender`)",
        factory=list,
    )
    after_frame_render: list = setting(
        help="hook called once each frame is written",
        knob="Python tab: after each frame (`afterFrameRender`)",
        factory=list,
    )
    after_render: list = setting(
        help="hook called after the last frame",
        knob="Python tab: after render (`afterRender`)",
        factory=list,
    )
    render_progress: list = setting(
        help="hook called with progress (done, total, fps, eta_seconds, ...)",
        knob="Python tab: render progress (`renderProgress`)",
        factory=list,
    )

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any] | None = None, **overrides) -> InferSettings:
        return _from_mapping(cls, mapping, overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRETRAIN_TASKS = ("deblur", "upscale", "human_matting")
WEIGHTS_DTYPES = ("float16", "float32")


@dataclass
class PretrainSettings:
    """One initial-weights file (``ccat-tf pretrain``, the workflow's ``pretrained`` target)."""

    task: str = setting("deblur", "what the weights learn", choices=PRETRAIN_TASKS)
    model_size: str = setting("small", "network size preset", choices=MODEL_SIZES)
    output: str = setting("", "the .cat to write (required)")
    corpus: str = setting("", "folder of clean images (pairs are generated on the fly)")
    pairs: str = setting(
        "", "a studio corpus instead: DIR/input/<name> and DIR/ground_truth/<name>"
    )
    data_dir: str = setting("", "tensorflow-datasets cache folder (required)")
    steps: int = setting(2000, "training steps", range=Range(1, 10_000_000))
    crop_size: int = setting(96, "size of the square training crops", range=Range(16, 4096))
    batch_size: int = setting(8, "crops per step", range=Range(1, 1024))
    learning_rate: float = setting(
        2e-3, "Adam learning rate", range=Range(0, 1, integer=False, above=True)
    )
    seed: int = setting(0, "seed of the crops, degradations and weights", range=Range(0, 2**32 - 1))
    weights_dtype: str = setting(
        "float16", "precision the weights are stored in", choices=WEIGHTS_DTYPES
    )
    threads: int = setting(0, "TensorFlow threads (0: all)", range=Range(0, 1024))

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any] | None = None, **overrides) -> PretrainSettings:
        return _from_mapping(cls, mapping, overrides).check()

    def check(self) -> PretrainSettings:
        _check_fields(self)
        if not self.corpus and not self.pairs:
            raise SettingsError(
                "give corpus (a folder of clean images) or pairs (input/ground_truth folders)"
            )
        if self.corpus and self.pairs:
            raise SettingsError("give corpus or pairs, not both")
        for name in ("output", "data_dir"):
            if not getattr(self, name):
                raise SettingsError(f"{name} is not set; give it")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _ranges(*classes) -> dict[str, Range]:
    return {f.name: f.metadata["range"] for c in classes for f in fields(c) if f.metadata["range"]}


#: The range of every numeric training and inference setting (the workflow schema's
#: minimum/maximum mirror it, tests/test_config_schema.py checks). Upper bounds are far past any
#: real use and keep numbers in what TensorFlow and NumPy take (a seed is a uint32).
RANGES: dict[str, Range] = _ranges(TrainSettings, InferSettings)


HOOK_FIELDS = {
    "on_training_start",
    "on_checkpoint",
    "on_training_end",
    "before_render",
    "before_frame_render",
    "after_frame_render",
    "after_render",
    "render_progress",
}


def _from_mapping(cls, mapping, overrides):
    data = dict(mapping or {})
    data.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        import difflib

        close = difflib.get_close_matches(str(unknown[0]), list(known), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise SettingsError(
            f"unknown setting '{unknown[0]}'{hint}; known settings are: {', '.join(sorted(known))}"
        )
    values = {}
    for name, value in data.items():
        values[name] = _coerce(name, known[name], value)
        check_range(known[name], values[name], given=value)
    return cls(**values)


def _coerce(name: str, f: dataclasses.Field, value: Any) -> Any:
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if name in HOOK_FIELDS:
        if isinstance(value, str):
            return [value] if value else []
        if isinstance(value, list | tuple):
            return list(value)
        if callable(value):
            return [value]
        raise SettingsError(f"{name} must be 'module:function' or a list of them, not {value!r}")
    if f.metadata.get("auto"):
        # Only the word means automatic: 0 is refused by the range (it used to mean auto
        # silently for batch_size and tile_size), and a 0 tile_overlap is a real, seamy overlap.
        return "auto" if value == "auto" else _as_int(name, value)
    if name in ("input_channels", "output_channels"):
        if isinstance(value, str) and "," in value:
            value = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, str) and value:
            return value
        if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
            return list(value)
        raise SettingsError(f"{name} is {value!r}; use rgb, rgba, alpha or a list of channel names")
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in (
            "true",
            "on",
            "yes",
            "1",
            "false",
            "off",
            "no",
            "0",
        ):
            return value.lower() in ("true", "on", "yes", "1")
        raise SettingsError(f"{name} is {value!r}; use true or false")
    if isinstance(default, int):
        return _as_int(name, value)
    if isinstance(default, float):
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError):
            raise SettingsError(f"{name} is {value!r}; use a number") from None
    if isinstance(default, str):
        if (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and name in ("frames", "preview_frames", "validation_frames")
        ):
            return str(value)
        if not isinstance(value, str):
            raise SettingsError(f"{name} is {value!r}; use a text value")
        return value
    return value


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise SettingsError(f"{name} is {value!r}; use a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
        try:  # "1e3" is a whole number too (and "1e23" then meets the range check)
            number = float(value)
            if number.is_integer():
                return int(number)
        except (ValueError, OverflowError):
            pass
    raise SettingsError(f"{name} is {value!r}; use a whole number")


def _check_fields(obj) -> None:
    """Every field within its range and choices (as :func:`setting` declared them)."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.metadata.get("range"):
            check_range(f, value)
        if f.metadata.get("choices"):
            check_choice(f.name, value, f.metadata["choices"])


def load_settings_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON mapping of settings; errors name the file.

    Bounded (ccat_tf.safe_load): at most 1 MiB and 100 000 values with YAML aliases expanded,
    no duplicate keys.
    """
    from ccat_tf import safe_load

    path = Path(path)
    data = safe_load.load_file(path, f"settings file {path}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"settings file {path} must hold a mapping of setting: value")
    return data
