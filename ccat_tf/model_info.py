"""A model's metadata as one typed, versioned record: :class:`ModelInfo`.

The ``ccat.json`` member of a .cat (see :mod:`ccat_tf.catfile`, which keeps the zip and safety
job) is turned into a :class:`ModelInfo` and back here and nowhere else: :meth:`ModelInfo.from_json`
checks every field's type and value, so a damaged or hostile file is one line of
:class:`~ccat_tf.errors.ModelFileError` (its text escaped) before anything uses it, and
:meth:`ModelInfo.to_json` writes it.

Versions of the metadata (the ``version`` key):

* **1** (no ``version`` key; every .cat written before it existed, the shipped weights included):
  ``input_transform`` / ``output_transform`` and ``divisor`` could be missing. They map to linear
  transforms and the model size's divisor (1 for an unknown size; the network's own pooling
  count still applies, see :class:`ccat_tf.model.Model`).
* **2**: every field of the pixel recipe (channels, transforms, divisor, residual) is present.
* **3**: ``position`` (the network takes u, v, r^2 frame-coordinate channels after the image's,
  :func:`ccat_tf.models.coordinate_channels`) and ``colour`` (it has the global colour branch);
  both false when missing (versions 1 and 2).
* **4**: ``colour_input`` (the U-Net also sees the colour branch's output); false when missing.
* **5**: ``position_fit_only`` (the frame coordinates feed the colour branch only, not the
  U-Net); false when missing.

Keys this version does not know (``pretrained`` of the shipped weights, catfile's ``format`` and
``model_sha256``) are kept in ``extra`` and written back unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from ccat_tf import transform
from ccat_tf.errors import ModelFileError
from ccat_tf.safe_text import visible

#: The metadata version this ccat_tf writes; it reads 1 up to this.
VERSION = 5
#: A divisor beyond this is no network ccat_tf builds (the presets use 8).
_MAX_DIVISOR = 4096


@dataclass(frozen=True)
class ModelInfo:
    """What a trained network expects and how it was trained (the ``ccat.json`` of a .cat)."""

    # The pixel recipe: what inference needs to apply the network.
    input_channels: tuple[str, ...]
    output_channels: tuple[str, ...]
    input_transform: tuple[str, ...]  #: per input channel: "linear" or "log"
    output_transform: tuple[str, ...]
    divisor: int  #: input height and width are padded to a multiple of it
    residual: bool
    model_size: str
    position: bool = False  #: the input has frame-coordinate channels after the image's
    colour: bool = False  #: the network has the global colour branch
    colour_input: bool = False  #: its U-Net also sees the colour branch's output
    position_fit_only: bool = False  #: the coordinates feed the colour branch, not the U-Net
    # How it was trained (shown by ccat-tf info; None when unknown).
    step: int | None = None
    total_steps: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    crop_size: int | None = None
    stage: int | None = None
    run_name: str | None = None
    dataset: dict = field(default_factory=dict)
    last_loss: float | None = None
    val_psnr: float | None = None
    settings: dict = field(default_factory=dict)
    created: str | None = None
    ccat_tf_version: str | None = None
    weights_dtype: str = "float32"
    version: int = VERSION
    extra: dict = field(default_factory=dict)  #: keys this version does not know, kept as is

    @classmethod
    def from_json(cls, meta: Any, source: Any = "model file") -> ModelInfo:
        """Check a ``ccat.json`` mapping and make it a ModelInfo (version 1 is mapped to 2).

        ``source`` (a path) names the file in the one-line ModelFileError of a bad value.
        """
        if not isinstance(meta, dict):
            raise _bad(source, "its metadata is not a JSON object")
        version = meta.get("version", 1)
        if not _is_int(version) or not 1 <= version <= VERSION:
            raise _bad(
                source,
                f"its metadata version is {version!r}; this ccat_tf reads versions 1 to "
                f"{VERSION} (a newer ccat_tf wrote it?)",
            )
        known = {f.name for f in fields(cls)} - {"extra", "version"}
        values = {k: meta[k] for k in known if k in meta and meta[k] is not None}
        extra = {k: v for k, v in meta.items() if k not in known and k != "version"}
        if version == 1:
            values = _map_version_1(values)
        return cls(**_checked(values, source), version=VERSION, extra=extra)

    def to_json(self) -> dict[str, Any]:
        """The ``ccat.json`` mapping (lists, not tuples; ``extra`` keys merged back in)."""
        out: dict[str, Any] = dict(self.extra)
        for f in fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def with_updates(self, **changes) -> ModelInfo:
        """A copy with fields changed (e.g. ``val_psnr`` after validation)."""
        return replace(self, **changes)


def _map_version_1(values: dict) -> dict:
    """Fill what version 1 could leave out: linear transforms, the model size's divisor."""
    from ccat_tf.models import PRESETS

    values = dict(values)
    for key, channels in (
        ("input_transform", "input_channels"),
        ("output_transform", "output_channels"),
    ):
        if not values.get(key) and isinstance(values.get(channels), list):
            values[key] = ["linear"] * len(values[channels])
    if "divisor" not in values:
        size = values.get("model_size")
        values["divisor"] = PRESETS[size].divisor if size in PRESETS else 1
    values.setdefault("model_size", "unknown")
    values.setdefault("residual", False)
    return values


def _checked(values: dict, source) -> dict:
    """Every field's type and value checked; lists become tuples."""
    out = dict(values)
    for key in ("input_channels", "output_channels"):
        names = values.get(key)
        if not isinstance(names, list) or not names or not all(_is_name(n) for n in names):
            raise _bad(source, f"it has no valid {key} in its metadata ({names!r})")
        out[key] = tuple(names)
    for key, channels in (
        ("input_transform", "input_channels"),
        ("output_transform", "output_channels"),
    ):
        kinds, n = values.get(key), len(out[channels])
        if (
            not isinstance(kinds, list)
            or len(kinds) != n
            or any(k not in transform.KINDS for k in kinds)
        ):
            raise _bad(source, f"its {key} {kinds!r} does not match its {n} {channels}")
        out[key] = tuple(kinds)
    for key in ("divisor", "residual", "model_size"):
        if key not in values:
            raise _bad(source, f"its metadata has no {key}")
    _check(source, values, "divisor", lambda v: _is_int(v) and 1 <= v <= _MAX_DIVISOR, "1..4096")
    for key in ("residual", "position", "colour", "colour_input", "position_fit_only"):
        _check(source, values, key, lambda v: isinstance(v, bool), "true or false")
    if out["residual"] and len(out["input_channels"]) != len(out["output_channels"]):
        raise _bad(source, "it is residual but maps a different number of channels")
    _check(source, values, "model_size", _is_name, "a name")
    for key in ("step", "total_steps", "epochs", "batch_size", "crop_size", "stage"):
        _check(source, values, key, lambda v: _is_int(v) and v >= 0, "a whole number >= 0")
    for key in ("last_loss", "val_psnr"):
        _check(source, values, key, _is_number, "a number")
    for key in ("run_name", "created", "ccat_tf_version"):
        _check(source, values, key, lambda v: isinstance(v, str), "text")
    for key in ("dataset", "settings"):
        _check(source, values, key, lambda v: isinstance(v, dict), "a mapping")
    _check(source, values, "weights_dtype", lambda v: v in ("float32", "float16"), "float32")
    return out


def _check(source, values: dict, key: str, ok, wanted: str) -> None:
    if key in values and not ok(values[key]):
        raise _bad(source, f"its {key} is {values[key]!r}, not {wanted}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    # JSON's Infinity/NaN are allowed: a diverged loss or a perfect PSNR is still a record.
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_name(v) -> bool:
    return isinstance(v, str) and bool(v.strip())


def _bad(source, what: str) -> ModelFileError:
    return ModelFileError(
        visible(f"{source}: {what}; the file is damaged or was not written by ccat-tf train")
    )
