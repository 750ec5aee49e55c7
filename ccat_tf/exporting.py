"""Export a .cat as an open model other tools can run: TensorFlow SavedModel or ONNX.

The network inside a .cat works in *training space*: inputs encoded by the stored input transform
(log shaper for HDR colour, identity otherwise), height and width a multiple of ``divisor``, and
outputs in encoded form. Exports keep that contract and describe it, so another tool can apply it:

**SavedModel** (a folder; ``tf.saved_model.load(path)``) has two endpoints, both taking a float32
``(batch, height, width, channels)`` tensor:

* ``serve`` (also ``serving_default``): the bare network, training space in and out; height and
  width must be multiples of ``divisor``; a position-aware model (metadata ``position``) takes
  three more channels after the image's: u, v and r^2 of each pixel in the whole frame
  (:func:`ccat_tf.models.coordinate_channels`);
* ``serve_pixels``: the whole Inference recipe for one untiled frame, the graph of
  :meth:`ccat_tf.model.Model.pixel_function` (the function ccat_tf's own paths are tested
  against): encode the input transform, reflect-pad the bottom/right to the divisor, run the
  network, crop, decode the output transform. Pixels in (as read from the file), pixels out. Height and width must be larger than the
  padding (``divisor - 1``); frames too big for memory need ``ccat-tf infer``, which tiles.

The .cat's metadata is copied to ``assets.extra/ccat.json`` (TF Serving's place for extra files).

**ONNX** (one ``.onnx`` file, opset chosen by tf2onnx): the bare network by default, input
``image`` with dynamic batch/height/width (with the coordinate channels of a position-aware
model, ``position_channels`` in the metadata); ``pixels=True`` exports the ``serve_pixels`` recipe
instead, which makes the coordinates itself. The metadata (channels, transforms, divisor, ...) is stored in the model's
``metadata_props`` (``ccat.json`` holds the full JSON), which onnxruntime exposes as
``session.get_modelmeta().custom_metadata_map``.

Exports are atomic: written under a temporary name beside the output and renamed into place.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ccat_tf.atomic import (
    TEMP_MARK,
    atomic_path,
    describe_os_error,
    error_from_text,
    remove_stale_temps,
    temp_path_for,
)
from ccat_tf.errors import SettingsError

if TYPE_CHECKING:
    from ccat_tf.model import Model

FORMATS = ("savedmodel", "onnx")


def default_output(model_file: str | os.PathLike, format: str) -> Path:  # noqa: A002
    """``shot.cat`` -> ``shot_savedmodel`` (folder) or ``shot.onnx``, beside the model."""
    model_file = Path(model_file)
    if format == "onnx":
        return model_file.with_suffix(".onnx")
    return model_file.with_name(model_file.stem + "_savedmodel")


def _signature(model: Model, pixels: bool):
    """The input of a graph: image channels for the pixel recipe; for the network alone, the
    image's and, for a position-aware model, its u, v, r^2 coordinate channels after them."""
    import tensorflow as tf

    from ccat_tf.model import network_inputs

    channels = len(model.info.input_channels) if pixels else network_inputs(model.info)
    return [tf.TensorSpec([None, None, None, channels], tf.float32, name="image")]


def _replace_dir(tmp: Path, target: Path) -> None:
    """Move a finished folder onto ``target``: the old one is moved aside first, then removed."""
    old = None
    if target.exists() or target.is_symlink():
        if not target.is_dir():
            raise SettingsError(f"export output {target} exists and is a file; give a folder path")
        old = temp_path_for(target)
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _export_savedmodel(model: Model, output: Path) -> None:
    import keras

    net, meta = model.net, model.info.to_json()
    archive = keras.export.ExportArchive()
    archive.track(net)
    # The first endpoint becomes "serving_default".
    archive.add_endpoint(
        "serve", lambda x: net(x, training=False), input_signature=_signature(model, False)
    )
    archive.add_endpoint(
        "serve_pixels", model.pixel_function(), input_signature=_signature(model, True)
    )
    tmp = output.with_name(f"{TEMP_MARK}{os.getpid()}-{output.name}")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with _disk_errors(output):
            archive.write_out(str(tmp), verbose=False)
        extra = tmp / "assets.extra"
        extra.mkdir(exist_ok=True)
        (extra / "ccat.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
        _replace_dir(tmp, output)
    except OSError as err:
        raise describe_os_error(output, err) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _disk_errors(output: Path) -> Iterator[None]:
    """TensorFlow writes the SavedModel's variables in C++: its "No space left on device" (an
    OpError, not an OSError) becomes the one-line error naming the output."""
    import tensorflow as tf

    try:
        yield
    except tf.errors.OpError as err:
        failure = error_from_text(output, str(err.message))
        if failure is None:
            raise
        raise failure from None


def _export_onnx(model: Model, output: Path, pixels: bool) -> None:
    import onnx
    import tensorflow as tf
    import tf2onnx
    from keras.src.export.tf2onnx_lib import patch_tf2onnx

    signature = _signature(model, pixels)
    net, info = model.net, model.info
    fn = model.pixel_function() if pixels else (lambda x: net(x, training=False))
    concrete = tf.function(fn, input_signature=signature)
    with warnings.catch_warnings():
        # Keras' own ONNX export patches tf2onnx for NumPy 2 the same way before converting; the
        # patch probes np.object, which warns.
        warnings.simplefilter("ignore", FutureWarning)
        patch_tf2onnx()
        proto, _ = tf2onnx.convert.from_function(concrete, input_signature=signature)
    props = {
        "ccat.json": json.dumps(info.to_json(), sort_keys=True, default=str),
        "input_channels": ",".join(info.input_channels),
        "output_channels": ",".join(info.output_channels),
        "input_transform": ",".join(info.input_transform),
        "output_transform": ",".join(info.output_transform),
        "divisor": str(model.divisor),
        "space": "pixels" if pixels else "training",
        "position_channels": "u,v,r2" if info.position and not pixels else "",
    }
    onnx.helper.set_model_props(proto, props)
    with atomic_path(output) as tmp:
        onnx.save_model(proto, str(tmp))


def export(
    model_file: str | os.PathLike,
    format: str = "savedmodel",  # noqa: A002 - the CLI flag's name
    output: str | os.PathLike | None = None,
    *,
    pixels: bool = False,
) -> Path:
    """Export ``model_file`` (a .cat) as ``savedmodel`` (a folder) or ``onnx`` (a file).

    ``output`` defaults to ``<model>_savedmodel`` or ``<model>.onnx`` beside the .cat. ``pixels``
    (ONNX only; the SavedModel always has both) exports the pixels-in/pixels-out recipe instead of
    the bare training-space network. Returns the output path. The model is loaded with the same
    safety checks as inference; an existing output is replaced only once the new one is complete.
    """
    from ccat_tf.model import open_model
    from ccat_tf.outputs import Input, check_output, check_savedmodel_output

    fmt = str(format).lower().replace("_", "").replace("-", "")
    if fmt not in FORMATS:
        raise SettingsError(f"export format {format!r} is unknown; use savedmodel or onnx")
    out = Path(output) if output else default_output(model_file, fmt)
    model_input = [Input(os.fspath(model_file), "the model file")]
    if fmt == "onnx":
        check_output(out, "onnx", model_input)
    else:
        check_savedmodel_output(out, model_input)
    model = open_model(model_file)
    # What an export of the same output killed mid-write left (a temporary file or folder).
    remove_stale_temps(out.parent, {out.name})
    if fmt == "savedmodel":
        _export_savedmodel(model, out)
    else:
        _export_onnx(model, out, pixels)
    return out


def load_savedmodel_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The .cat metadata stored in an exported SavedModel folder."""
    from ccat_tf import safe_load

    with contextlib.suppress(OSError, ValueError):
        meta = Path(path) / "assets.extra" / "ccat.json"
        return safe_load.load_json_file(meta, max_bytes=4 * 2**20, max_values=None)
    return {}
