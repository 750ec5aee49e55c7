"""Training and inference settings: CopyCat's knobs in snake_case, their defaults and checks.

The dataclasses here are the single Python description of every setting. The workflow's
``workflow/schemas/config.schema.yaml`` mirrors them (a test keeps the two in step), and the CLI
builds one flag per field.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ccat_tf.errors import SettingsError

MODEL_SIZES = ("small", "medium", "large")
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
        return f"a number above {self.low} and at most {self.high}"

    def short(self) -> str:
        return f"{'>' if self.above else ''}{self.low}..{self.high}"

    def contains(self, value) -> bool:
        if not math.isfinite(value) or value > self.high:
            return False
        return value > self.low if self.above else value >= self.low


#: The range of every numeric setting (training, inference). One place: checks, --help, the
#: README tables and tests/test_config_schema.py (against the schema) all read this table.
#: Upper bounds are far past any real use and keep numbers in what TensorFlow and NumPy take
#: (a seed is a uint32; a step count stays well inside int64).
RANGES: dict[str, Range] = {
    "epochs": Range(1, 1_000_000),
    "batch_size": Range(1, 1024),
    "crop_size": Range(16, 4096),
    "checkpoint_interval": Range(1, 1_000_000_000),
    "contact_sheet_interval": Range(1, 1_000_000_000),
    "learning_rate": Range(0, 1, integer=False, above=True),
    "seed": Range(0, 2**32 - 1),
    "tile_size": Range(16, 65536),
    "tile_overlap": Range(0, 4096),
    "batch_tiles": Range(1, 256),
}
#: Pretraining's own numbers (``ccat-tf pretrain``); its crop, batch, rate and seed use RANGES.
PRETRAIN_RANGES: dict[str, Range] = {
    "steps": Range(1, 10_000_000),
    "threads": Range(0, 1024),
}
#: Settings that also take the word ``auto`` instead of a number.
AUTO_NUMBERS = ("batch_size", "tile_size", "tile_overlap")


def check_range(name: str, value: Any, given: Any = None) -> None:
    """Raise SettingsError if a numeric setting is outside its range (``auto`` passes).

    ``given`` is the value as the user wrote it (``1e23`` rather than the integer it became)."""
    limits = RANGES.get(name) or PRETRAIN_RANGES.get(name)
    if limits is None or (value == "auto" and name in AUTO_NUMBERS):
        return
    if not limits.contains(value):
        auto = "'auto' or " if name in AUTO_NUMBERS else ""
        shown = value if given is None else given
        raise SettingsError(f"{name} is {shown}; use {auto}{limits.describe()}")


@dataclass
class TrainSettings:
    """Everything CopyCat's node asks for, plus the few things a script needs to be reproducible."""

    # --- data set (CopyCat's Input / Ground Truth / Preview inputs) ---
    input: str = ""  #: input sequence pattern, e.g. ``plates/shot.####.exr``
    ground_truth: str = ""  #: ground-truth sequence pattern
    frames: str = ""  #: data set frames, e.g. ``1001-1100x10`` or ``1001,1010``
    input_channels: Any = "rgb"  #: ``rgb``, ``rgba``, ``alpha`` or a list of channel names
    output_channels: Any = "rgb"  #: channels the network learns to produce (from the ground truth)
    preview: str = ""  #: optional preview sequence pattern (frames outside the data set)
    preview_frames: str = ""  #: frames of the preview sequence to render at each checkpoint
    validation_frames: str = ""  #: pairs held out of training whose PSNR is recorded
    # --- CopyCat tab ---
    data_directory: str = ""
    epochs: int = 10000
    use_gpu_if_available: bool = True
    # --- Advanced ---
    initial_weights: str = "none"
    checkpoint_file: str = ""
    model_size: str = "medium"
    batch_size: Any = "auto"  #: ``auto`` or a number <= the number of pairs
    crop_size: int = 256
    checkpoint_interval: int = 1000
    contact_sheet_interval: int = 100
    use_multi_resolution_training: bool = True
    # --- beyond CopyCat: reproducibility and plumbing ---
    learning_rate: float = 1e-3
    augment: bool = True  #: random flips and 90-degree rotations of the crops
    seed: int = 0
    deterministic: bool = False  #: tf op determinism: bit-exact resume on CPU, slower on GPU
    cache: str = (
        "auto"  #: frame cache: ``memory``, ``hdf5`` (file beside the Data Directory), ``auto``
    )
    cache_file: str = ""  #: a prebuilt HDF5 cache (``ccat-tf cache``) to read frames from
    run_name: str = ""  #: name of this run in the run table (default run1, run2, ...)
    # --- Python tab (``module:function`` strings) ---
    on_training_start: list = field(default_factory=list)
    on_checkpoint: list = field(default_factory=list)
    on_training_end: list = field(default_factory=list)

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any] | None = None, **overrides) -> TrainSettings:
        return _from_mapping(cls, mapping, overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check(self) -> TrainSettings:
        """Check values that do not depend on the frames; raise SettingsError naming the key."""
        _check_ranges(self)
        if self.model_size not in MODEL_SIZES:
            raise SettingsError(
                f"model_size '{self.model_size}' is unknown; use one of {', '.join(MODEL_SIZES)}"
            )
        if self.initial_weights not in INITIAL_WEIGHTS:
            raise SettingsError(
                f"initial_weights '{self.initial_weights}' is unknown; use one of "
                f"{', '.join(INITIAL_WEIGHTS)}"
            )
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
        if self.cache not in CACHE_MODES:
            raise SettingsError(
                f"cache '{self.cache}' is unknown; use one of {', '.join(CACHE_MODES)}"
            )
        if self.run_name:
            from ccat_tf.runs import check_run_name  # the run table's naming rule, in one place

            check_run_name(self.run_name)
        return self


@dataclass
class InferSettings:
    """The Inference node's controls, plus output and tiling choices."""

    model_file: str = ""
    input: str = ""
    frames: str = ""
    output: str = ""
    use_gpu_if_available: bool = True
    optimize_for_speed_and_memory: bool = False  #: float16 compute (mixed precision)
    tile_size: Any = "auto"  #: ``auto`` (from free memory) or a size in pixels
    #: ``auto`` (from the network's receptive field: tiled equals untiled) or pixels
    tile_overlap: Any = "auto"
    batch_tiles: int = 4  #: tiles run through the model together
    output_data_type: str = (
        "auto"  #: ``half``/``float`` (EXR, TIFF), ``uint8``/``uint16``, ``uint10`` (DPX)
    )
    merge_input: bool = False  #: write input RGB + predicted alpha as RGBA
    overwrite: bool = True  #: replace existing output frames (never the input sequence)
    # --- Python tab ---
    before_render: list = field(default_factory=list)
    before_frame_render: list = field(default_factory=list)
    after_frame_render: list = field(default_factory=list)
    after_render: list = field(default_factory=list)
    render_progress: list = field(default_factory=list)

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any] | None = None, **overrides) -> InferSettings:
        return _from_mapping(cls, mapping, overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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
        check_range(name, values[name], given=value)
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
    if name in AUTO_NUMBERS:
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


def _check_ranges(obj) -> None:
    for f in fields(obj):
        check_range(f.name, getattr(obj, f.name))


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
