"""Hostile and damaged .cat files are refused with one line, and nothing in them runs."""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile

import numpy as np
import pytest

from ccat_tf import catfile
from ccat_tf.errors import ModelFileError

META = {
    "format": 1,
    "model_size": "small",
    "input_channels": ["R", "G", "B"],
    "output_channels": ["R", "G", "B"],
    "input_transform": ["linear"] * 3,
    "output_transform": ["linear"] * 3,
    "residual": True,
    "divisor": 8,
}


def _pack(path, model_bytes: bytes, *, sha: str | None = None, extra=()) -> str:
    """A .cat around ``model_bytes`` with a valid checksum (unless ``sha`` is given)."""
    meta = dict(META, model_sha256=sha or hashlib.sha256(model_bytes).hexdigest())
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(catfile.META_NAME, json.dumps(meta))
        zf.writestr(catfile.MODEL_NAME, model_bytes)
        for name, data in extra:
            zf.writestr(name, data)
    return str(path)


def _keras_bytes(model, tmp_path) -> bytes:
    path = tmp_path / "m.keras"
    model.save(path)
    return path.read_bytes()


def _edit_config(model_bytes: bytes, edit) -> bytes:
    """Rewrite config.json inside a .keras archive."""
    src = zipfile.ZipFile(io.BytesIO(model_bytes))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                edit(config)
                data = json.dumps(config).encode()
            dst.writestr(item, data)
    return out.getvalue()


@pytest.fixture(scope="module")
def good_bytes(tmp_path_factory):
    from ccat_tf.models import build_model

    return _keras_bytes(build_model(3, 3, "small"), tmp_path_factory.mktemp("good"))


def _refused(path, match=None) -> str:
    with pytest.raises(ModelFileError, match=match) as err:
        catfile.load_cat(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_a_good_file_loads(good_bytes, tmp_path):
    model, meta = catfile.load_cat(_pack(tmp_path / "ok.cat", good_bytes))
    assert meta["model_size"] == "small" and model.count_params() > 0


def test_lambda_layer_is_refused_and_never_runs(tmp_path):
    import keras

    marker = tmp_path / "pwned"

    def payload(x):
        marker.write_text("code from the model file ran")
        return x

    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Lambda(payload)(inputs))
    marker.unlink()  # building the model called it once, here in the test
    path = _pack(tmp_path / "lambda.cat", _keras_bytes(model, tmp_path))
    assert "'Lambda'" in _refused(path, "could run code")
    assert not marker.exists()


def test_path_traversal_members_are_refused(good_bytes, tmp_path):
    for name in ("../escape.txt", "/abs/escape.txt", "sub/../../escape.txt", "..\\escape.txt"):
        path = _pack(tmp_path / "trav.cat", good_bytes, extra=[(name, b"x")])
        with pytest.raises(ModelFileError) as err:
            catfile.read_metadata(path)
        assert "\n" not in str(err.value)
        _refused(path)
    assert not (tmp_path.parent / "escape.txt").exists()


def test_extra_member_is_refused(good_bytes, tmp_path):
    _refused(
        _pack(tmp_path / "extra.cat", good_bytes, extra=[("run_me.py", b"print(1)")]),
        "not a ccat_tf model",
    )


def test_truncated_file_is_refused(good_bytes, tmp_path):
    with open(_pack(tmp_path / "full.cat", good_bytes), "rb") as fh:
        data = fh.read()
    for keep in (len(data) // 2, len(data) - 10, 30):
        path = tmp_path / f"trunc{keep}.cat"
        path.write_bytes(data[:keep])
        _refused(path)


def test_random_bytes_and_empty_file_are_refused(tmp_path):
    rnd = tmp_path / "random.cat"
    rnd.write_bytes(np.random.default_rng(0).bytes(50_000))
    assert "not a readable .cat" in _refused(rnd)
    empty = tmp_path / "empty.cat"
    empty.write_bytes(b"")
    _refused(empty)


def test_checksum_mismatch_is_refused(good_bytes, tmp_path):
    damaged = bytearray(good_bytes)
    damaged[len(damaged) // 2] ^= 0xFF  # one flipped byte inside the weights
    path = _pack(tmp_path / "sum.cat", bytes(damaged), sha=hashlib.sha256(good_bytes).hexdigest())
    _refused(path, "checksum")


def test_custom_class_in_config_is_refused(good_bytes, tmp_path):
    def evil_class(config):
        layer = config["config"]["layers"][1]
        layer["class_name"] = "EvilLayer"
        layer["module"] = "evil_package.layers"

    path = _pack(tmp_path / "cls.cat", _edit_config(good_bytes, evil_class))
    assert "'EvilLayer'" in _refused(path)

    def evil_module(config):  # an allowed class name, but from somewhere else
        config["config"]["layers"][1]["module"] = "os"

    _refused(_pack(tmp_path / "mod.cat", _edit_config(good_bytes, evil_module)), "module 'os'")


def test_registered_name_cannot_swap_in_another_class(good_bytes, tmp_path):
    """A node that looks like Conv2D but names a class registered in this process is refused.

    Keras resolves ``registered_name`` in the global custom-object registry before anything
    else, so without this check a file could instantiate any class a hook or plug-in registered.
    """
    import keras

    marker = tmp_path / "registered-ran"

    @keras.saving.register_keras_serializable(package="ccat_safety_test")
    class Payload(keras.layers.Layer):
        def __init__(self, *args, **kwargs):
            marker.write_text("constructor ran")
            super().__init__(name=kwargs.get("name"))

        def call(self, x):
            return x

    def swap(config):
        config["config"]["layers"][1]["registered_name"] = "ccat_safety_test>Payload"

    _refused(_pack(tmp_path / "reg.cat", _edit_config(good_bytes, swap)), "registered class")
    assert not marker.exists()


def test_damaged_metadata_is_refused(good_bytes, tmp_path):
    path = tmp_path / "meta.cat"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(catfile.META_NAME, "{not json")
        zf.writestr(catfile.MODEL_NAME, good_bytes)
    _refused(path, "damaged")
    assert os.path.getsize(path) > 0


def _rezip(model_bytes: bytes, extra=(), compression=zipfile.ZIP_STORED) -> bytes:
    """model.keras rewritten with ``compression`` and ``extra`` members added."""
    src = zipfile.ZipFile(io.BytesIO(model_bytes))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as dst:
        for name in src.namelist():
            dst.writestr(name, src.read(name))
        for name, data in extra:
            dst.writestr(name, data)
    return out.getvalue()


def test_inner_members_other_than_the_models_are_refused(good_bytes, tmp_path):
    """Keras would extract an asset member to disk; a ccat_tf model has none."""
    inner = _rezip(good_bytes, extra=[("assets/x.bin", b"x")])
    msg = _refused(_pack(tmp_path / "assets.cat", inner), "not a readable .cat file")
    assert "'model.keras/assets/x.bin'" in msg


def test_bzip2_members_are_refused_before_inflating(good_bytes, tmp_path):
    """bzip2 output is not bounded per read (deflate's is), and ccat_tf never writes it."""
    inner = _rezip(good_bytes, compression=zipfile.ZIP_BZIP2)
    _refused(_pack(tmp_path / "bz2.cat", inner), "compression method 12")
