"""Export: the SavedModel and ONNX give ccat_tf's output within 1e-4, written atomically."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from ccat_tf import transform
from ccat_tf.errors import ModelFileError, SettingsError
from ccat_tf.exporting import export
from ccat_tf.model import Model, open_model
from ccat_tf.model_info import ModelInfo
from ccat_tf.models import build_model

TOL = 1e-4


@pytest.fixture(scope="module")
def cat(tmp_path_factory):
    """A small HDR model (log transforms) with deterministic, non-trivial weights."""
    import keras

    keras.utils.set_random_seed(21)
    model = build_model(3, 3, "small")
    rng = np.random.default_rng(21)
    model.set_weights(
        [w + rng.normal(0, 0.03, w.shape).astype(np.float32) for w in model.get_weights()]
    )
    path = tmp_path_factory.mktemp("export") / "shot.cat"
    rgb, log = ("R", "G", "B"), ("log",) * 3
    info = ModelInfo(rgb, rgb, log, log, divisor=8, residual=True, model_size="small")
    return Model(model, info).save(path)


@pytest.fixture(scope="module")
def reference(cat):
    """ccat_tf's own output for an odd-sized HDR frame: training space and pixels."""
    model = open_model(cat)
    x = (np.random.default_rng(3).random((1, 53, 75, 3)) * 8).astype(np.float32)
    encoded = transform.encode(x[0], model.info.input_transform)
    padded = np.pad(encoded, ((0, 3), (0, 5), (0, 0)), mode="reflect")[None]
    bare = model.net(padded, training=False).numpy()
    pixels = model.predict(x[0])
    return {"x": x, "padded": padded, "bare": bare, "pixels": pixels}


def _close(a, b):
    scale = max(1.0, float(np.abs(b).max()))
    assert np.abs(a - b).max() <= TOL * scale


def test_savedmodel_matches(cat, reference, tmp_path):
    import tensorflow as tf

    out = export(cat, "savedmodel", tmp_path / "sm")
    loaded = tf.saved_model.load(str(out))
    assert {"serve", "serve_pixels", "serving_default"} <= set(loaded.signatures)
    _close(loaded.serve(tf.constant(reference["padded"])).numpy(), reference["bare"])
    _close(loaded.serve_pixels(tf.constant(reference["x"])).numpy()[0], reference["pixels"])
    meta = json.loads((out / "assets.extra" / "ccat.json").read_text())
    assert meta["input_transform"] == ["log"] * 3
    # Exporting again replaces the folder in one move and leaves no temporaries behind.
    export(cat, "savedmodel", out)
    assert [p for p in os.listdir(tmp_path) if p != "sm"] == []


def test_onnx_matches(cat, reference, tmp_path):
    import onnxruntime as ort

    bare = export(cat, "onnx", tmp_path / "bare.onnx")
    session = ort.InferenceSession(str(bare), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "image"
    _close(session.run(None, {"image": reference["padded"]})[0], reference["bare"])
    props = session.get_modelmeta().custom_metadata_map
    assert props["input_transform"] == "log,log,log" and props["space"] == "training"

    pixels = export(cat, "onnx", tmp_path / "pixels.onnx", pixels=True)
    session = ort.InferenceSession(str(pixels), providers=["CPUExecutionProvider"])
    _close(session.run(None, {"image": reference["x"]})[0][0], reference["pixels"])


def test_export_errors(cat, tmp_path):
    with pytest.raises(SettingsError, match="unknown"):
        export(cat, "tflite", tmp_path / "x")
    with pytest.raises(SettingsError, match=r"\.onnx"):
        export(cat, "onnx", tmp_path / "x.bin")
    bad = tmp_path / "bad.cat"
    bad.write_bytes(b"garbage")
    with pytest.raises(ModelFileError):
        export(bad, "onnx", tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_cli_export(cat, tmp_path, capsys):
    from ccat_tf.cli import main

    out = tmp_path / "cli.onnx"
    assert main(["export", str(cat), "--format", "onnx", "--output", str(out)]) == 0
    assert out.is_file() and str(out) in capsys.readouterr().out


def test_package_level_export_stays_callable(cat):
    import ccat_tf
    import ccat_tf.exporting  # noqa: F401 - once bound the package attribute to a module

    with pytest.raises(SettingsError, match="unknown"):
        ccat_tf.export(cat, "tflite")
