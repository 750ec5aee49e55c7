"""The ``.cat`` model file: a trained network plus everything needed to apply it.

A .cat is a zip archive with exactly two members:

* ``ccat.json``: metadata (channels, model size, training transform, steps, crop size, data set
  frames, ccat_tf version, ...) and ``model_sha256``, the checksum of the model member;
* ``model.keras``: the Keras 3 native model file.

Loading never executes code from the file: no pickle is involved, the Keras config is checked
against an allow-list of built-in layer classes before Keras sees it (so a ``Lambda`` layer or an
unknown class is refused), Keras loads with ``safe_mode=True``, and archive members with other
names (absolute or ``..`` paths included) are refused.

Loading costs what the model's weights cost: every member of the .cat and of the model.keras
inside it is capped (the ``MAX_*`` sizes below), checked from the zip headers before inflating and
counted while inflating (:mod:`ccat_tf.bounded_zip`), and the HDF5 weights are checked for what
they unpack to, all before Keras reads anything. Text from the file is quoted in messages with its
control characters escaped (:func:`ccat_tf.safe_text.visible`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from ccat_tf import bounded_zip, regular_file, safe_load
from ccat_tf.atomic import atomic_path
from ccat_tf.bounded_zip import LimitExceeded, size_text
from ccat_tf.errors import ModelFileError
from ccat_tf.safe_text import visible

FORMAT_VERSION = 1
META_NAME = "ccat.json"
MODEL_NAME = "model.keras"
# How the weights inside model.keras are stored: ``float32`` (Keras' own) or ``float16`` (for the
# shipped pretrained weights: half precision, and each array byte-shuffled and gzip-compressed by
# HDF5's standard filters, about 0.84x of raw float16; h5py decompresses on read, so loading is
# Keras' own and casts back to the model's float32 variables).
WEIGHTS_DTYPES = ("float32", "float16")
WEIGHTS_MEMBER = "model.weights.h5"
CONFIG_MEMBER = "config.json"
KERAS_META_MEMBER = "metadata.json"

# ---- size caps -------------------------------------------------------------------------------
# Every member of a .cat, and of the model.keras inside it, has a cap: a member that needs more is
# refused from its zip header before anything is inflated, and while inflating when the header
# lies, so loading a model costs what its weights cost. The caps come from the largest model a
# user can make, build_model(1023, 1023, "large") (1023 channels is Nuke's limit; channels only
# change the first and last convolution), saved by save_cat with Keras 3.15 and measured:
#   model.weights.h5  21.4 MB; 64.0 MB when a compiled model's Adam slots are saved with it
#                     (100 HDF5 groups and datasets; 180 with the Adam slots)
#   config.json       29.5 KB (28.1 KB with mixed_float16)
#   metadata.json     64 bytes (Keras' version and date)
#   ccat.json         1.31 MB when its data set lists 100 000 frames (a few KB usually)
#   zip directories   under 300 bytes (2 and 3 members)
# Each cap adds the margin its comment gives.
MAX_WEIGHTS_BYTES = 128 * 2**20  # 2x the 64.0 MB
MAX_CONFIG_BYTES = 2**20  # 35x: room for what newer Keras versions add to each layer's config
MAX_KERAS_META_BYTES = 64 * 2**10  # 1000x
MAX_META_BYTES = 4 * 2**20  # 3x: a data set of ~300 000 frames (about 3.5 hours at 24 fps)
MAX_DIRECTORY_BYTES = 64 * 2**10  # 200x; bounds the memory zipfile spends on parsing it
# The inner zip as stored: its three members plus their headers and directory.
MAX_MODEL_BYTES = MAX_WEIGHTS_BYTES + MAX_CONFIG_BYTES + MAX_KERAS_META_BYTES + MAX_DIRECTORY_BYTES
MAX_H5_OBJECTS = 4096  # 20x the 180 groups and datasets
OUTER_CAPS = {META_NAME: MAX_META_BYTES, MODEL_NAME: MAX_MODEL_BYTES}
INNER_CAPS = {
    KERAS_META_MEMBER: MAX_KERAS_META_BYTES,
    CONFIG_MEMBER: MAX_CONFIG_BYTES,
    WEIGHTS_MEMBER: MAX_WEIGHTS_BYTES,
}

# Every class a ccat_tf network may contain. Anything else in a model config is refused.
ALLOWED_CLASSES = {
    "Functional",
    "InputLayer",
    "Conv2D",
    "MaxPooling2D",
    "UpSampling2D",
    "Concatenate",
    "Add",
    "Multiply",
    "DTypePolicy",
    "FloatDTypePolicy",
    "GlorotUniform",
    "Zeros",
    "__keras_tensor__",  # references between layers in a functional config
}


def save_cat(
    path: str | os.PathLike,
    model,
    metadata: dict[str, Any],
    *,
    weights_dtype: str = "float32",
) -> Path:
    """Write ``model`` and ``metadata`` as a .cat at ``path``, atomically.

    ``weights_dtype="float16"`` stores the weights at half precision (recorded in the metadata as
    ``weights_dtype``); :func:`load_cat` casts them back to float32.
    """
    from ccat_tf import __version__

    if weights_dtype not in WEIGHTS_DTYPES:
        raise ValueError(f"weights_dtype must be one of {WEIGHTS_DTYPES}, not {weights_dtype!r}")
    path = Path(path)
    with atomic_path(path) as tmp:
        # Keras writes beside the target under a temporary name, not in /tmp: a full disk is
        # the same one-line error, and what a kill leaves is removed by the next training.
        staged = tmp.with_suffix(".keras")
        try:
            model.save(staged)
            model_bytes = staged.read_bytes()
        finally:
            staged.unlink(missing_ok=True)
        if weights_dtype == "float16":
            model_bytes = _weights_to_float16(model_bytes)
        meta = dict(metadata)
        meta.pop("weights_dtype", None)
        if weights_dtype != "float32":
            meta["weights_dtype"] = weights_dtype
        meta.update(
            format=FORMAT_VERSION,
            ccat_tf_version=__version__,
            created=meta.get("created")
            or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            model_sha256=hashlib.sha256(model_bytes).hexdigest(),
        )
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr(META_NAME, json.dumps(meta, indent=2, sort_keys=True, default=str))
            zf.writestr(MODEL_NAME, model_bytes)
    return path


def _weights_to_float16(model_bytes: bytes) -> bytes:
    """Rewrite the float32 datasets of a .keras file's weights member as float16."""
    import h5py
    import numpy as np

    src = io.BytesIO(model_bytes)
    out = io.BytesIO()
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == WEIGHTS_MEMBER:
                # A fresh file (h5py does not reclaim the space of deleted datasets), in memory:
                # HDF5 writing to a full disk crashes the process.
                converted = io.BytesIO()
                with h5py.File(io.BytesIO(data), "r") as h_in, h5py.File(converted, "w") as h_out:
                    _copy_h5_as_float16(h_in, h_out, np)
                data = converted.getvalue()
            # Deflated: gzip cannot shrink a weight array any further, but it packs the HDF5
            # headers and the config text.
            item.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(item, data)
    return out.getvalue()


def _copy_h5_as_float16(src, dst, np) -> None:
    import h5py

    for key, value in src.attrs.items():
        dst.attrs[key] = value
    for name, obj in src.items():
        if isinstance(obj, h5py.Group):
            _copy_h5_as_float16(obj, dst.create_group(name), np)
        else:
            values = obj[()]
            if getattr(values, "dtype", None) == np.float32:
                values = values.astype(np.float16)
            if getattr(values, "size", 0) > 1:
                # Lossless: the shuffle filter groups the float16 high bytes (sign, exponent),
                # which gzip then packs; a scalar or empty array cannot be chunked.
                out = dst.create_dataset(
                    name,
                    data=values,
                    chunks=values.shape,  # one chunk: gzip sees the whole array
                    shuffle=True,
                    compression="gzip",
                    compression_opts=9,
                )
            else:
                out = dst.create_dataset(name, data=values)
            for key, value in obj.attrs.items():
                out.attrs[key] = value


def _error(message: str) -> ModelFileError:
    """A ModelFileError whose text (paths, metadata, zipfile's words) cannot drive a terminal."""
    return ModelFileError(visible(message))


def _unreadable(path: Path, what) -> ModelFileError:
    return _error(f"{path} is not a readable .cat file: {what}; use another checkpoint")


def _open_archive(path: Path) -> zipfile.ZipFile:
    what = regular_file.problem(path)
    if what == "it does not exist":
        raise _error(
            f"model file {path} does not exist; check the path (a .cat from ccat-tf train)"
        )
    if what is not None:
        raise _error(f"model file {path} cannot be read: {what}; give the path of a .cat file")
    try:
        zf = bounded_zip.open_zip(path, MAX_DIRECTORY_BYTES)
    except LimitExceeded as err:
        raise _unreadable(path, err) from None
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise _error(
            f"{path} is not a readable .cat file ({err}); it may be truncated or not a model: "
            "use another checkpoint"
        ) from None
    names = zf.namelist()
    for name in names:
        if name.startswith("/") or ".." in Path(name).parts or "\\" in name:
            zf.close()
            raise _error(f"{path} contains an unsafe member name {name!r}; refusing to load it")
    if sorted(names) != sorted(OUTER_CAPS):
        zf.close()
        raise _error(
            f"{path} is not a ccat_tf model (members {names[:5]}); use a .cat written by ccat-tf train"
        )
    try:
        bounded_zip.check_headers(zf, OUTER_CAPS)
    except LimitExceeded as err:
        zf.close()
        raise _unreadable(path, err) from None
    return zf


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a .cat, checked for format and integrity, without building the model."""
    path = Path(path)
    with _open_archive(path) as zf:
        return _read_members(path, zf)


def _read_members(path: Path, zf: zipfile.ZipFile, model_out=None) -> dict:
    """The checked metadata; the model member is hashed as it streams (into ``model_out``)."""
    digest = hashlib.sha256()

    def sink(chunk: bytes) -> None:
        digest.update(chunk)
        if model_out is not None:
            model_out.write(chunk)

    try:
        meta = safe_load.load_json_text(
            bounded_zip.read(zf, META_NAME, MAX_META_BYTES),
            f"{path} meta",
            max_bytes=MAX_META_BYTES,
            max_values=None,
        )
        bounded_zip.stream(zf, MODEL_NAME, MAX_MODEL_BYTES, sink)
    except LimitExceeded as err:
        raise _unreadable(path, err) from None
    except (*bounded_zip.READ_ERRORS, KeyError, RecursionError) as err:
        raise _error(f"{path} is damaged ({err}); use another checkpoint") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        raise _error(
            f"{path} has an unsupported format {meta.get('format') if isinstance(meta, dict) else '?'}; "
            f"this ccat_tf reads format {FORMAT_VERSION}"
        )
    if meta.get("weights_dtype", "float32") not in WEIGHTS_DTYPES:
        raise _error(
            f"{path} stores weights as {meta.get('weights_dtype')!r}; this ccat_tf reads "
            f"{' or '.join(WEIGHTS_DTYPES)}"
        )
    if digest.hexdigest() != meta.get("model_sha256"):
        raise _error(f"{path} failed its checksum (the file is damaged); use another checkpoint")
    return meta


def _unpack_model(path: Path, keras_path: Path, weights_path: Path) -> dict:
    """Check the inner model.keras member by member; returns its config, writes its weights.

    Every member is inflated here, within its cap, so Keras (which reads the same archive
    afterwards) never meets more than the caps allow.
    """
    prefix = f"{MODEL_NAME}/"
    try:
        with bounded_zip.open_zip(keras_path, MAX_DIRECTORY_BYTES) as inner:
            bounded_zip.check_headers(inner, INNER_CAPS, prefix)
            config = bounded_zip.read(inner, CONFIG_MEMBER, MAX_CONFIG_BYTES, prefix)
            bounded_zip.read(inner, KERAS_META_MEMBER, MAX_KERAS_META_BYTES, prefix)
            with open(weights_path, "wb") as out:
                bounded_zip.stream(inner, WEIGHTS_MEMBER, MAX_WEIGHTS_BYTES, out.write, prefix)
        return safe_load.load_json_text(
            config, f"{path} model config", max_bytes=MAX_CONFIG_BYTES, max_values=None
        )
    except LimitExceeded as err:
        raise _unreadable(path, err) from None
    except (*bounded_zip.READ_ERRORS, RecursionError) as err:
        raise _error(
            f"{path}: the model inside is damaged ({err}); use another checkpoint"
        ) from None


def _check_weights(path: Path, weights_path: Path) -> None:
    """Bound what Keras will read from model.weights.h5: HDF5 can compress datasets too."""
    import h5py

    total, count = 0, 0
    try:
        with h5py.File(weights_path, "r") as h5:
            groups = [h5]
            while groups:
                group = groups.pop()
                for name in group:
                    count += 1
                    if count > MAX_H5_OBJECTS:
                        raise LimitExceeded(
                            f"its weights hold more than {MAX_H5_OBJECTS} HDF5 objects"
                        )
                    if not isinstance(group.get(name, getlink=True), h5py.HardLink):
                        raise LimitExceeded(f"its weights link to {name!r} outside the file")
                    obj = group[name]
                    if isinstance(obj, h5py.Group):
                        groups.append(obj)
                        continue
                    if obj.is_virtual or obj.external:
                        raise LimitExceeded(f"its weights read {name!r} from other files")
                    total += int(obj.size or 0) * obj.dtype.itemsize
            if total > MAX_WEIGHTS_BYTES:
                raise LimitExceeded(
                    f"its weights unpack to {size_text(total)}, more than the "
                    f"{size_text(MAX_WEIGHTS_BYTES)} a ccat_tf model of any size needs"
                )
    except LimitExceeded as err:
        raise _unreadable(path, err) from None
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as err:
        raise _error(
            f"{path}: the weights inside are damaged ({err}); use another checkpoint"
        ) from None


def _check_config(path: Path, config) -> None:
    """Refuse any class outside the allow-list before Keras deserialises anything."""

    def walk(node):
        if isinstance(node, dict):
            cls = node.get("class_name")
            if isinstance(cls, str) and "config" in node:
                if cls not in ALLOWED_CLASSES:
                    raise _error(
                        f"{path} contains a layer of class {cls!r}, which ccat_tf models never use; "
                        "refusing to load it (it could run code)"
                    )
                # Keras looks ``registered_name`` up in the process-wide custom-object registry
                # before anything else, so a node dressed as Conv2D could otherwise instantiate
                # any class a plug-in or hook registered. Built-ins carry None (or their own name).
                registered = node.get("registered_name")
                if registered not in (None, cls, f"ccat_tf>{cls}"):
                    raise _error(
                        f"{path} asks for the registered class {registered!r} in place of {cls!r}; "
                        "refusing to load it (it could run code)"
                    )
                module = node.get("module")
                if isinstance(module, str) and not module.startswith("keras"):
                    raise _error(f"{path} refers to code in module {module!r}; refusing to load it")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    try:
        walk(config)
    except RecursionError:
        raise _error(
            f"{path}: the model inside is nested too deeply to be a ccat_tf model; "
            "use another checkpoint"
        ) from None


def load_cat(path: str | os.PathLike, *, compile: bool = False):
    """Load a .cat: returns ``(keras_model, metadata)``. Raises ModelFileError on any problem.

    Everything is checked (sizes, checksum, classes, weights) before Keras is imported.
    """
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="ccat-load-") as tmpdir:
        keras_path = Path(tmpdir) / MODEL_NAME
        weights_path = Path(tmpdir) / WEIGHTS_MEMBER
        with _open_archive(path) as zf, open(keras_path, "wb") as out:
            meta = _read_members(path, zf, out)
        _check_config(path, _unpack_model(path, keras_path, weights_path))
        _check_weights(path, weights_path)
        weights_path.unlink()
        import keras

        try:
            model = keras.saving.load_model(keras_path, compile=compile, safe_mode=True)
        except Exception as err:  # noqa: BLE001 - Keras raises many types; report one line
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise _error(
                f"{path}: the model cannot be loaded ({first}); use another checkpoint"
            ) from None
    return model, meta


def load_model(path: str | os.PathLike):
    """Public API: the Keras model stored in a .cat (metadata via :func:`read_metadata`).

    ``path`` may also be a Data Directory: its newest intact checkpoint is loaded
    (:func:`latest_good_checkpoint`).
    """
    if Path(path).is_dir():
        path = latest_good_checkpoint(path)
    model, _ = load_cat(path)
    return model


def latest_good_checkpoint(data_directory: str | os.PathLike) -> Path:
    """The newest .cat of a Data Directory that passes its integrity checks.

    The checkpoint ``latest.json`` names comes first, then every ``*.cat`` newest first; a
    damaged one (truncated, garbage, failed checksum) is skipped with a warning naming it.
    Raises ModelFileError when none is usable.
    """
    import warnings

    from ccat_tf.atomic import TEMP_MARK

    folder = Path(data_directory)
    candidates = []
    try:
        latest = safe_load.load_json_file(folder / "latest.json")["cat"]
        candidates.append(folder / Path(str(latest)).name)
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no pointer (or a damaged one): the files themselves decide
    on_disk = [p for p in folder.glob("*.cat") if not p.name.startswith(TEMP_MARK)]
    # A run's best checkpoint (<run>.best.cat) is a fallback after every step checkpoint.
    on_disk.sort(
        key=lambda p: (not p.name.endswith(".best.cat"), p.stat().st_mtime_ns, p.name),
        reverse=True,
    )
    candidates += [p for p in on_disk if p not in candidates]
    bad = 0
    for path in candidates:
        if not path.is_file():
            continue
        try:
            read_metadata(path)
        except ModelFileError as err:
            bad += 1
            warnings.warn(f"{err}; skipping it", stacklevel=2)
            continue
        return path
    what = f"all {bad} .cat files are damaged" if bad else "it holds no .cat file"
    raise _error(
        f"no usable checkpoint in {folder}: {what}; train again or give the path of a good .cat"
    )


def check_compatible(
    meta: dict, *, path, model_size: str, in_channels: int, out_channels: int
) -> None:
    """Raise if weights from a .cat cannot initialise a model of this size and channel count."""
    problems = []
    if meta.get("model_size") != model_size:
        problems.append(f"model_size {meta.get('model_size')} (this run uses {model_size})")
    for side, wanted in (("input", in_channels), ("output", out_channels)):
        channels = meta.get(f"{side}_channels")
        count = len(channels) if isinstance(channels, list) else 0
        if count != wanted:
            problems.append(f"{count} {side} channels (this run has {wanted})")
    if problems:
        raise _error(
            f"checkpoint_file {path} does not fit this run: it has {'; '.join(problems)}; "
            "choose a checkpoint trained with the same model_size and channels"
        )
