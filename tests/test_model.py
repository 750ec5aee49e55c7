"""The model object: typed metadata, and one pixel recipe behind every path that runs a .cat.

Inference (untiled and tiled), training previews and validation, and the exported SavedModel must
give the same pixels for the same frame; validation PSNR is measured on those output pixels.
"""

from __future__ import annotations

import json
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import smooth_noise, write_exr

from ccat_tf import catfile, imageio, transform
from ccat_tf.errors import ModelFileError
from ccat_tf.model import SCENE_LINEAR_PEAK, Model, open_model, read_info
from ccat_tf.model_info import VERSION, ModelInfo

#: Largest difference allowed between two paths, in output pixel values (float32 rounding).
TOL = 1e-5
RGB = ("R", "G", "B")


def _small_net(seed: int):
    import keras

    from ccat_tf.models import build_model

    keras.utils.set_random_seed(seed)
    net = build_model(3, 3, "small")
    rng = np.random.default_rng(seed)
    net.set_weights(
        [w + rng.normal(0, 0.02, w.shape).astype(np.float32) for w in net.get_weights()]
    )
    return net


@pytest.fixture(scope="module", params=["linear", "log"])
def cat(request, tmp_path_factory) -> Path:
    kinds = (request.param,) * 3
    info = ModelInfo(RGB, RGB, kinds, kinds, divisor=8, residual=True, model_size="small")
    path = tmp_path_factory.mktemp(f"model_{request.param}") / "shot.cat"
    return Model(_small_net(5), info).save(path)


def test_every_path_gives_the_same_pixels(cat, tmp_path, monkeypatch):
    """Odd-sized frame (203x301, not a multiple of 8): direct, infer untiled and tiled, preview,
    validation and the exported SavedModel agree to float32 rounding."""
    import tensorflow as tf

    import ccat_tf
    from ccat_tf import callbacks, contact_sheet
    from ccat_tf import model as model_module

    model = open_model(cat, device="/CPU:0")
    hdr = model.info.output_transform[0] == "log"
    x = smooth_noise(np.random.default_rng(9), 203, 301) * (6.0 if hdr else 1.0)
    reference = model.predict(x)
    assert not model.plans[(203, 301)].tiled
    got: dict[str, np.ndarray] = {}

    write_exr(tmp_path / "plate.0001.exr", x, dtype="float")
    common = dict(input=str(tmp_path / "plate.####.exr"), frames="1", progress_bar=False)
    common["self_ensemble"] = 1  # the network's own recipe, as exports have it
    for name, extra in (("untiled", {}), ("tiled", {"tile_size": 160, "batch_tiles": 2})):
        out = tmp_path / f"{name}.####.exr"
        s = ccat_tf.infer(cat, output=str(out), output_data_type="float", **common, **extra)
        got[f"infer {name}"] = imageio.read_image(str(out).replace("####", "0001"))
    assert s["tiling"]["301x203"]["tiles"] >= 4

    # Training's paths run the live network through Model(net, info), without a file.
    live = Model(model.net, model.info)
    shown = []
    monkeypatch.setattr(
        contact_sheet, "render_preview", lambda images, *a, **k: shown.extend(images)
    )
    measured = []
    monkeypatch.setattr(model_module, "output_psnr", lambda out, truth, kinds: measured.append(out))
    kinds_in, kinds_out = model.info.input_transform, model.info.output_transform
    cache = types.SimpleNamespace(level=lambda s: ([transform.encode(x, kinds_in)], [x]))
    ctx = types.SimpleNamespace(
        model=live,
        info=types.SimpleNamespace(input_transform=kinds_in, output_transform=kinds_out),
        preview_frames=[(1, x)],
        validation_cache=cache,
        data_directory=tmp_path,
        run_name="run1",
        writer=None,
        average=None,  # no moving average: the network as it is
    )
    writer = callbacks.DataDirectoryWriter(ctx)
    writer.preview(1)
    writer.validate(1)
    got["validation"] = measured[0][0]

    sm = ccat_tf.export(cat, "savedmodel", tmp_path / "sm")
    loaded = tf.saved_model.load(str(sm))  # held: its variables die with it
    got["savedmodel"] = loaded.serve_pixels(tf.constant(x[None])).numpy()[0]

    diffs = {k: float(np.abs(v - reference).max()) for k, v in got.items()}
    print(f"max differences from Model.predict ({'hdr' if hdr else 'linear'}): {diffs}")
    assert max(diffs.values()) <= TOL, diffs
    display = contact_sheet.to_display(transform.encode(reference, kinds_out), kinds_out)
    assert np.abs(shown[0] - display).max() <= TOL


def test_val_psnr_is_measured_on_output_pixels(tmp_path):
    """An HDR data set: the val_psnr training reports equals one computed by hand on the decoded
    pixels of the finished model, clipped to 0..16 as the README says."""
    from conftest import tiny_settings

    import ccat_tf

    rng = np.random.default_rng(3)
    for side in ("in", "gt"):
        (tmp_path / side).mkdir()
    for f in range(1, 6):
        x = smooth_noise(rng, 64, 64) * 4.0
        x[8:16, 8:24] = 30.0  # highlights beyond the clip
        write_exr(tmp_path / "in" / f"s.{f:04d}.exr", x, dtype="float")
        write_exr(tmp_path / "gt" / f"s.{f:04d}.exr", x * np.float32(0.8), dtype="float")
    ds = {
        "input": str(tmp_path / "in" / "s.####.exr"),
        "ground_truth": str(tmp_path / "gt" / "s.####.exr"),
        "frames": "1-4",
    }
    settings = tiny_settings(ds, tmp_path / "dd", epochs=4, validation_frames="5")
    settings.update(checkpoint_interval=4, contact_sheet_interval=4)
    cat = ccat_tf.train(settings, progress_bar=False)
    info = read_info(cat)
    assert info.output_transform == ("log",) * 3 and info.val_psnr is not None

    frame = imageio.read_image(ds["input"].replace("####", "0005"))
    truth = imageio.read_image(ds["ground_truth"].replace("####", "0005"))
    out = open_model(cat).predict(frame)
    a = np.clip(out.astype(np.float64), 0, SCENE_LINEAR_PEAK) / SCENE_LINEAR_PEAK
    b = np.clip(truth.astype(np.float64), 0, SCENE_LINEAR_PEAK) / SCENE_LINEAR_PEAK
    by_hand = 10 * np.log10(1.0 / np.mean((a - b) ** 2))
    assert info.val_psnr == pytest.approx(by_hand, abs=1e-3)


# ---- ModelInfo: typed, versioned, checked ------------------------------------------------------


def test_model_info_round_trips_and_keeps_unknown_keys():
    info = ModelInfo(RGB, ("A",), ("log",) * 3, ("linear",), 8, False, "small", step=3)
    meta = info.to_json() | {"pretrained": {"task": "x"}}
    back = ModelInfo.from_json(json.loads(json.dumps(meta)))
    assert back == info.with_updates(extra={"pretrained": {"task": "x"}})
    assert meta["version"] == VERSION and back.to_json()["pretrained"] == {"task": "x"}


def test_version_1_files_load_with_their_gaps_filled():
    """Files written before the version key (the shipped weights too) are version 1."""
    old = {"model_size": "small", "input_channels": list(RGB), "output_channels": list(RGB)}
    info = ModelInfo.from_json(old)
    assert info.input_transform == ("linear",) * 3 and info.divisor == 8
    assert info.version == VERSION and not info.residual
    shipped = Path(catfile.__file__).parent / "weights" / "deblur_small.cat"
    if shipped.exists():
        assert read_info(shipped).model_size == "small"


@pytest.mark.parametrize(
    "change, match",
    [
        ({"version": 99}, "metadata version is 99"),
        ({"output_transform": ["log", "\x1b[2Jgamma", "log"]}, r"output_transform .*\\x1b\[2J"),
        ({"input_channels": []}, "no valid input_channels"),
        ({"divisor": 0}, "divisor is 0"),
        ({"step": "ten"}, "step is 'ten'"),
        ({"residual": "yes"}, "residual is 'yes'"),
    ],
)
def test_bad_metadata_is_one_line(tmp_path, change, match):
    info = ModelInfo(RGB, RGB, ("log",) * 3, ("log",) * 3, 8, True, "small")
    path = Model(_small_net(1), info).save(tmp_path / "m.cat")
    meta = {**catfile.read_metadata(path), **change}
    bad = tmp_path / "bad.cat"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(bad, "w") as dst:
        dst.writestr(catfile.META_NAME, json.dumps(meta))
        dst.writestr(catfile.MODEL_NAME, src.read(catfile.MODEL_NAME))
    for load in (read_info, open_model):
        with pytest.raises(ModelFileError, match=match) as err:
            load(bad)
        assert "\n" not in str(err.value) and "\x1b" not in str(err.value)
