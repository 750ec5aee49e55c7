"""Training and inference settings: CopyCat's knobs in snake_case, their defaults and checks.

The dataclasses here are the single Python description of every setting. The workflow's
``workflow/schemas/config.schema.yaml`` mirrors them (a test keeps the two in step), and the CLI
builds one flag per field.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ccat_tf.errors import SettingsError

MODEL_SIZES = ("small", "medium", "large")
INITIAL_WEIGHTS = ("none", "checkpoint", "deblur", "upscale", "human_matting")
CACHE_MODES = ("auto", "memory", "hdf5")
OUTPUT_DATA_TYPES = ("auto", "half", "float", "uint8", "uint10", "uint16")


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
        _require_positive(self, "epochs", "checkpoint_interval", "contact_sheet_interval")
        _require_positive(self, "crop_size")
        if self.crop_size < 16:
            raise SettingsError(
                f"crop_size is {self.crop_size}; use 16 or more (256 is CopyCat's default)"
            )
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
        if self.batch_size != "auto":
            if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int):
                raise SettingsError(
                    f"batch_size is {self.batch_size!r}; use 'auto' or a whole number >= 1"
                )
            if self.batch_size < 1:
                raise SettingsError(f"batch_size is {self.batch_size}; use 'auto' or a number >= 1")
        if self.cache not in CACHE_MODES:
            raise SettingsError(
                f"cache '{self.cache}' is unknown; use one of {', '.join(CACHE_MODES)}"
            )
        if not (self.learning_rate > 0):
            raise SettingsError(f"learning_rate is {self.learning_rate}; use a positive number")
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
    if name in ("batch_size", "tile_size"):
        if value == "auto" or value == 0 or value == "0":
            return "auto"
        return _as_int(name, value)
    if name == "tile_overlap":
        # 0 is a real (seamy) overlap, so only the word means automatic here.
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
    raise SettingsError(f"{name} is {value!r}; use a whole number")


def _require_positive(obj, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value <= 0:
            raise SettingsError(f"{name} is {value}; use a whole number of 1 or more")


def load_settings_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON mapping of settings; errors name the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise SettingsError(
            f"cannot read settings file {path}: {err.strerror}; check the path"
        ) from None
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as err:  # noqa: BLE001 - any parse error becomes one line
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        why = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SettingsError(
            f"settings file {path} is not valid YAML/JSON{where}: {why}; fix the syntax there"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"settings file {path} must hold a mapping of setting: value")
    return data
