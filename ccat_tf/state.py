"""The ``.ost`` progress file: everything needed to resume a run exactly.

An .ost is an HDF5 file holding the model weights, every optimizer variable (Adam's moments and
iteration count), the step, the multi-resolution stage, the crop RNG's seed (crops are a pure
function of seed and step, so the seed *is* the RNG state), the run's settings and the data set
it trained on. Every array is stored with HDF5's Fletcher-32 checksum and the file is written
atomically, so a damaged file is detected on load instead of resuming from garbage.

The Data Directory keeps two: ``progress.ost`` and the one before it, ``progress.prev.ost``. If the
newest is damaged (a disk error, a hand edit), training falls back to the previous one with a
warning naming the bad file.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ccat_tf import regular_file, safe_load
from ccat_tf.atomic import atomic_path, hdf5_writer
from ccat_tf.errors import CcatError, ModelFileError
from ccat_tf.safe_text import visible

CURRENT = "progress.ost"
PREVIOUS = "progress.prev.ost"
#: Written: 3 (2 and the moving average of the weights, ccat_tf.averaging, when it is on). Read:
#: 1, 2 and 3 (2: the network's architecture recorded, the optimizer's one scalar the step count,
#: the learning rate being a schedule; 1: a plain U-Net, Adam's step and rate).
FORMAT = 3
FORMATS = (1, 2, 3)


@dataclass
class Progress:
    step: int
    total_steps: int
    stage: int
    run_id: int
    run_name: str
    signature: dict[str, Any]
    settings: dict[str, Any]
    dataset: dict[str, Any]
    weights: list[np.ndarray] = field(repr=False)
    optimizer: list[np.ndarray] = field(repr=False)
    last_loss: float | None = None
    path: Path | None = None
    #: The network: model_size (resolved, never auto), position, colour, residual.
    architecture: dict[str, Any] = field(default_factory=dict)
    #: What the callbacks keep across a resume (RunContext.persistent_state).
    extra: dict[str, Any] = field(default_factory=dict)
    #: The moving averages of the trainable weights and their update count (None: not kept).
    average: list[np.ndarray] | None = field(default=None, repr=False)
    average_count: int = 0


def save_progress(data_directory: str | os.PathLike, progress: Progress) -> Path:
    """Write ``progress.ost`` atomically, keeping the previous one as ``progress.prev.ost``.

    A full disk is the one-line DataDirectoryError of :func:`atomic_path` (HDF5 never sees the
    failed write, see :func:`hdf5_writer`); the previous files are left as they were.
    """
    folder = Path(data_directory)
    target = folder / CURRENT
    with atomic_path(target) as tmp:
        with hdf5_writer(tmp) as h5:
            meta = {
                "format": FORMAT,
                "step": progress.step,
                "total_steps": progress.total_steps,
                "stage": progress.stage,
                "run_id": progress.run_id,
                "run_name": progress.run_name,
                "signature": progress.signature,
                "settings": progress.settings,
                "dataset": progress.dataset,
                "last_loss": progress.last_loss,
                "n_weights": len(progress.weights),
                "n_optimizer": len(progress.optimizer),
                "architecture": progress.architecture,
                "extra": progress.extra,
                "n_average": len(progress.average or []),
                "average_count": progress.average_count,
            }
            h5.attrs["meta"] = json.dumps(meta, default=str)
            groups = [("weights", progress.weights), ("optimizer", progress.optimizer)]
            if progress.average:
                groups.append(("average", progress.average))
            for group, arrays in groups:
                g = h5.create_group(group)
                for i, arr in enumerate(arrays):
                    arr = np.asarray(arr)
                    d = g.create_dataset(
                        f"{i:05d}", data=arr.reshape(-1), fletcher32=True, chunks=True
                    )
                    d.attrs["shape"] = arr.shape
        # Rotate only once the new file is complete and on disk (a full disk shows at fsync):
        # current -> previous, then atomic_path renames the new file into place.
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        if target.exists():
            os.replace(target, folder / PREVIOUS)
    return target


#: The most array bytes an .ost may hold: the largest model a user can make (``large``, 1023
#: channels in and out) takes 21.4 MB of weights, 64.0 MB with Adam's two moments and 85.4 MB with
#: the weights' moving averages, what an .ost stores; this is catfile's cap (2x its 64.0 MB).
#: Checked from the datasets' headers before any array is read, as every dataset's dtype, shape,
#: storage and checksum filter are.
MAX_ARRAY_BYTES = 128 * 2**20
#: The metadata attribute (settings, signature and a data set of up to ~300 000 frames).
MAX_META_BYTES = 4 * 2**20
#: The whole file: arrays and metadata plus HDF5's own structures (a few KB for 180 datasets).
MAX_FILE_BYTES = MAX_ARRAY_BYTES + MAX_META_BYTES + 16 * 2**20
#: Steps and run ids are counted in int64; a larger number was not written by a training.
MAX_COUNT = 2**62
#: The multi-resolution stage index (a plan has a handful of stages).
MAX_STAGE = 64
#: Channels a model may have (Nuke's limit).
MAX_CHANNELS = 1023


class _Refused(Exception):
    """Why an .ost cannot be trusted; reported as damage."""


def model_weight_shapes(
    model_size: str,
    in_channels: int,
    out_channels: int,
    *,
    position: bool = False,
    colour: bool = False,
    colour_input: bool = False,
    position_fit_only: bool = False,
    residual: bool = False,
    trainable_only: bool = False,
) -> list[tuple]:
    """The shapes of ``build_model(...).get_weights()`` (or of its trainable weights), without
    TensorFlow: what every .ost of that model must hold (a test keeps the two in step). The plain
    U-Net's come in Keras' order; a model with ``position`` or ``colour`` interleaves its extra
    layers, so those shapes are compared as a multiset (:func:`_expected`)."""
    from ccat_tf.models import POSITION_CHANNELS, PRESETS, colour_feature_count

    preset = PRESETS[model_size]
    shapes: list[tuple] = []
    n_total = in_channels + (POSITION_CHANNELS if position else 0)
    channels = (in_channels if position_fit_only else n_total) + (
        out_channels if colour_input else 0
    )

    def conv(filters: int, size: int = 3) -> None:
        nonlocal channels
        shapes.extend([(size, size, channels, filters), (filters,)])
        channels = filters

    conv(preset.filters[0])  # stem
    for filters in preset.filters[:-1]:
        for _ in range(preset.convs_per_level):
            conv(filters)
    for _ in range(preset.convs_per_level):
        conv(preset.filters[-1])  # bottom
    for level in reversed(range(len(preset.filters) - 1)):
        filters = preset.filters[level]
        conv(filters)  # up<level>_conv
        channels = 2 * filters  # concatenated with the skip of the same level
        for _ in range(preset.convs_per_level):
            conv(filters)
    conv(out_channels, size=1)  # head
    if colour:
        n_pairs = colour_feature_count(n_total) - n_total
        if not trainable_only:
            shapes += [(1, 1, n_total, n_pairs)] * 2  # the fixed pair selections
        if not trainable_only:  # the colour layer itself is fixed at its least-squares fit
            shapes += [(1, 1, n_total + n_pairs, out_channels), (out_channels,)]
    if position and (residual or position_fit_only) and not trainable_only:
        shapes.append((1, 1, n_total, in_channels))  # the fixed image-channel selection
    return shapes


def _count(meta: dict, key: str, low: int = 0, high: int = MAX_COUNT) -> int:
    value = meta.get(key)
    if type(value) is not int or not low <= value <= high:  # bool is not a count
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise _Refused(f"{key} is {shown}, not a whole number from {low} to {high}")
    return value


def _check_meta(meta) -> dict:
    """The metadata's fields, each of the type and in the range a training writes."""
    from ccat_tf.runs import check_run_name

    if not isinstance(meta, dict):
        raise _Refused("its metadata is not a JSON object")
    if type(meta.get("format")) is not int or meta["format"] not in FORMATS:
        raise ModelFileError(f"has unsupported progress format {visible(repr(meta.get('format')))}")
    total = _count(meta, "total_steps", 1)
    _count(meta, "step", 0, total)
    _count(meta, "stage", 0, MAX_STAGE)
    _count(meta, "run_id", 1)
    _count(meta, "n_weights", 1, 4096)
    _count(meta, "n_optimizer", 0, 2 + 2 * 4096)
    if meta["format"] < 3:
        meta["n_average"], meta["average_count"] = 0, 0
    _count(meta, "n_average", 0, 4096)
    _count(meta, "average_count")
    for key in ("signature", "settings", "dataset"):
        if not isinstance(meta.get(key), dict):
            raise _Refused(f"{key} is not a JSON object")
    try:
        check_run_name(meta.get("run_name"))
    except CcatError:
        raise _Refused(
            f"run_name {visible(repr(meta.get('run_name')))[:80]} is not a run name"
        ) from None
    loss = meta.get("last_loss")
    if loss is not None and (
        type(loss) not in (int, float) or not math.isfinite(loss) or abs(loss) > 1e30
    ):
        raise _Refused("last_loss is not a finite number")
    sig = meta["signature"]
    resolved = sig.get("resolved")
    if not isinstance(resolved, dict):
        raise _Refused("its signature names no model_size and channels")
    arch = _architecture(meta)
    counts = []
    for side in ("input_channels", "output_channels"):
        names = resolved.get(side)
        if not isinstance(names, list) or not 1 <= len(names) <= MAX_CHANNELS:
            raise _Refused(f"its signature's {side} is not a list of 1 to {MAX_CHANNELS} names")
        counts.append(len(names))
    meta["architecture"] = arch
    meta["_shapes"] = model_weight_shapes(arch["model_size"], *counts, **_flags(arch))
    meta["_trainable"] = model_weight_shapes(
        arch["model_size"], *counts, **_flags(arch), trainable_only=True
    )
    extra = meta.get("extra", {})
    if not isinstance(extra, dict):
        raise _Refused("extra is not a JSON object")
    meta["extra"] = extra
    return meta


#: An .ost's architecture flags; a flag an older file lacks reads as false.
ARCH_FLAGS = ("position", "colour", "colour_input", "position_fit_only", "residual")


def _architecture(meta: dict) -> dict:
    """The network an .ost's arrays belong to: recorded (format 2) or a plain U-Net (format 1)."""
    from ccat_tf.models import PRESETS

    if meta["format"] == 1:
        arch = {"model_size": meta["signature"].get("model_size")}
    else:
        arch = meta.get("architecture")
        if not isinstance(arch, dict):
            raise _Refused("it records no architecture")
    size = arch.get("model_size")
    if not isinstance(size, str) or size not in PRESETS:
        raise _Refused("its signature names no model_size and channels")
    flags = {k: arch.get(k, False) for k in ARCH_FLAGS}
    if not all(isinstance(v, bool) for v in flags.values()):
        raise _Refused("its architecture's flags are not true or false")
    return {"model_size": size, **flags}


def _flags(arch: dict) -> dict:
    return {k: arch[k] for k in ARCH_FLAGS}


def _group(h5, group: str) -> None:
    """Refuse a group that is missing, a link (to another file or place) or not a group."""
    import h5py

    link = h5.get(group, getlink=True)
    if link is None:
        raise _Refused(f"{group} is missing")
    if isinstance(link, h5py.ExternalLink):
        raise _Refused(f"{group} is a link to another file")
    if not isinstance(link, h5py.HardLink) or not isinstance(h5.get(group), h5py.Group):
        raise _Refused(f"{group} is a link or not a group")


def _dataset(h5, group: str, name: str):
    """Dataset ``group/name``, refused unless it is stored in this file, checksummed, uncompressed."""
    import h5py

    where = f"{group}/{name}"
    link = h5[group].get(name, getlink=True)
    if link is None:
        raise _Refused(f"{where} is missing")
    if not isinstance(link, h5py.HardLink):
        raise _Refused(
            f"{where} is a link to {'another file' if isinstance(link, h5py.ExternalLink) else 'elsewhere'}"
        )
    d = h5[group][name]
    if not isinstance(d, h5py.Dataset):
        raise _Refused(f"{where} is not a dataset")
    if d.is_virtual or d.external:
        raise _Refused(f"{where} reads its data from another file")
    if not d.fletcher32:
        raise _Refused(f"{where} has no Fletcher-32 checksum")
    plist = d.id.get_create_plist()
    filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    if filters != [h5py.h5z.FILTER_FLETCHER32]:
        raise _Refused(f"{where} is stored with filters a training does not write ({filters})")
    return d


def _array_header(h5, group: str, i: int, shape: tuple, dtype: str):
    """The dataset of array ``i``, checked against the ``shape`` and ``dtype`` it must have."""
    where = f"{group}/{i:05d}"
    d = _dataset(h5, group, f"{i:05d}")
    if d.dtype != np.dtype(dtype):
        raise _Refused(f"{where} holds {visible(str(d.dtype))}, not {dtype}")
    size = int(np.prod(shape, dtype=np.int64))
    if d.shape != (size,):
        raise _Refused(f"{where} holds {d.shape} values, not {size} for this model")
    recorded = d.attrs.get("shape")
    try:
        ok = recorded is not None and np.ndim(recorded) == 1 and len(recorded) == len(shape)
        ok = ok and all(float(a) == b for a, b in zip(recorded, shape, strict=True))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise _Refused(f"{where} records a shape other than {shape}, the model's")
    return d


def _array_plan(h5, group: str, shapes: list[tuple], scalars: list[tuple[str, tuple]]) -> list:
    """(group, index, shape, dtype) of every array of ``group``: ``scalars`` first, then arrays
    whose recorded shapes must be exactly the multiset ``shapes`` (checked again, with dtype and
    size, by :func:`_array_header`)."""
    _group(h5, group)
    n = len(scalars) + len(shapes)
    if len(h5[group]) != n:
        raise _Refused(f"{group} holds {len(h5[group])} arrays, not {n}")
    plan = [(group, i, shape, dtype) for i, (dtype, shape) in enumerate(scalars)]
    remaining = sorted(shapes)
    for i in range(len(scalars), n):
        d = _dataset(h5, group, f"{i:05d}")
        try:
            recorded = tuple(int(v) for v in d.attrs.get("shape"))
        except (TypeError, ValueError):
            recorded = None
        if recorded not in remaining:
            raise _Refused(f"{group}/{i:05d} records a shape this model does not have")
        remaining.remove(recorded)
        plan.append((group, i, recorded, "float32"))
    return plan


def load_progress_file(path: str | os.PathLike) -> Progress:
    """Read one .ost; raise ModelFileError (naming the file) if it is damaged or hostile.

    Everything is checked before any array is read: the file is a regular file within
    :data:`MAX_FILE_BYTES`; the metadata's fields have their types and ranges; every dataset is
    stored in this file (no external storage, virtual dataset or link), carries the Fletcher-32
    checksum and no other filter, and has the dtype and shape the model of the run's signature
    has (:func:`model_weight_shapes`), within :data:`MAX_ARRAY_BYTES` in all.
    """
    import h5py

    path = Path(path)
    try:
        what = regular_file.problem(path)
        if what is not None:
            raise _Refused(what)
        if path.stat().st_size > MAX_FILE_BYTES:
            raise _Refused(
                f"it is larger than {MAX_FILE_BYTES >> 20} MiB, more than any model needs"
            )
        with h5py.File(path, "r") as h5:
            if "meta" not in h5.attrs:
                raise _Refused("it has no metadata")
            raw = h5.attrs["meta"]
            if isinstance(raw, np.ndarray) or not isinstance(raw, (str, bytes)):
                raise _Refused("its metadata is not text")
            meta = _check_meta(
                safe_load.load_json_text(
                    raw, "its metadata", max_bytes=MAX_META_BYTES, max_values=None
                )
            )
            shapes, trainable = meta.pop("_shapes"), meta.pop("_trainable")
            if meta["n_weights"] != len(shapes):
                raise _Refused(f"it holds {meta['n_weights']} weights, the model has {len(shapes)}")
            scalars = [("int64", ())] + ([("float32", ())] if meta["format"] == 1 else [])
            n_opt = len(scalars) + 2 * len(trainable)
            if meta["n_optimizer"] != n_opt:
                raise _Refused(f"it holds {meta['n_optimizer']} optimizer variables, not {n_opt}")
            slots = [s for s in trainable for _ in (0, 1)]
            if meta["n_average"] not in (0, len(trainable)):
                raise _Refused(
                    f"it holds {meta['n_average']} weight averages, not {len(trainable)}"
                )
            plan = _array_plan(h5, "weights", shapes, [])
            plan += _array_plan(h5, "optimizer", slots, scalars)
            if meta["n_average"]:
                plan += _array_plan(h5, "average", trainable, [])
            total = sum(4 * int(np.prod(s, dtype=np.int64)) for _, _, s, _ in plan)
            if total > MAX_ARRAY_BYTES:
                raise _Refused(f"its arrays need {total >> 20} MiB, more than any model")
            datasets = [(g, _array_header(h5, g, i, s, t), s) for g, i, s, t in plan]
            arrays: dict[str, list[np.ndarray]] = {"weights": [], "optimizer": [], "average": []}
            for group, d, shape in datasets:  # only now is any array read
                arrays[group].append(np.asarray(d[()]).reshape(shape))
    except ModelFileError as err:
        raise ModelFileError(f"progress file {path} {err}") from None
    except _Refused as err:
        raise ModelFileError(
            f"progress file {path} is damaged or not a progress file ({err})"
        ) from None
    except Exception as err:  # noqa: BLE001 - h5py raises OSError, KeyError, ValueError...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelFileError(f"progress file {path} is damaged ({first})") from None
    return Progress(
        step=meta["step"],
        total_steps=meta["total_steps"],
        stage=meta["stage"],
        run_id=meta["run_id"],
        run_name=meta["run_name"],
        signature=meta["signature"],
        settings=meta["settings"],
        dataset=meta["dataset"],
        weights=arrays["weights"],
        optimizer=arrays["optimizer"],
        last_loss=meta.get("last_loss"),
        path=path,
        architecture=meta["architecture"],
        extra=meta["extra"],
        average=arrays["average"] or None,
        average_count=meta["average_count"],
    )


def load_latest_progress(data_directory: str | os.PathLike) -> Progress | None:
    """The newest loadable .ost of a Data Directory, or None if there is none.

    A damaged newest file is skipped with a warning naming it; if every .ost present is damaged,
    ModelFileError says so (training must not silently start over on top of them).
    """
    folder = Path(data_directory)
    bad = []
    for name in (CURRENT, PREVIOUS):
        path = folder / name
        if not path.exists():
            continue
        try:
            progress = load_progress_file(path)
        except ModelFileError as err:
            bad.append(str(err))
            warnings.warn(f"{err}; falling back to the previous progress file", stacklevel=2)
            continue
        return progress
    if bad:
        raise ModelFileError(
            f"no usable progress file in {folder}: {bad[-1]}; move the damaged .ost files away to "
            "start a new run, or restore them from a backup"
        )
    return None


def set_aside(data_directory: str | os.PathLike, run_name: str) -> Path | None:
    """Keep a finished or abandoned run's progress as ``<run>.progress.ost`` (nothing is lost)."""
    folder = Path(data_directory)
    current = folder / CURRENT
    if not current.exists():
        return None
    target = folder / f"{run_name}.progress.ost"
    os.replace(current, target)
    prev = folder / PREVIOUS
    if prev.exists():
        prev.unlink()
    return target
