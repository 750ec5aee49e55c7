"""Shipped initial weights, the pretraining corpus builders and the on-the-fly degradations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import smooth_noise, tiny_settings, write_exr, write_png

import ccat_tf
from ccat_tf import catfile
from ccat_tf.errors import SettingsError
from ccat_tf.models import PRESETS, build_model
from ccat_tf.training import PRETRAINED, _pretrained_path

WEIGHTS = Path(ccat_tf.__file__).parent / "weights"
SHIPPED = sorted(WEIGHTS.glob("*.cat"))
CHANNELS = {"deblur": ["R", "G", "B"], "upscale": ["R", "G", "B"], "human_matting": ["A"]}


def test_weights_ship_for_every_task_and_size_within_40_mb():
    for kind in PRETRAINED:
        for size in PRESETS:
            assert _pretrained_path(kind, size).exists(), f"{kind}_{size}.cat is not shipped"
    assert len(SHIPPED) == len(PRETRAINED) * len(PRESETS)
    assert sum(p.stat().st_size for p in SHIPPED) <= 40_000_000


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_weights_load_match_their_size_and_channels(path):
    kind, size = path.stem.rsplit("_", 1)
    net, meta = catfile.load_cat(path)
    assert meta["model_size"] == size
    assert meta["input_channels"] == ["R", "G", "B"]
    assert meta["output_channels"] == CHANNELS[kind]
    assert meta["weights_dtype"] == "float16"
    assert meta["pretrained"]["task"] == kind
    fresh = build_model(3, len(CHANNELS[kind]), size)
    assert [w.shape for w in fresh.get_weights()] == [w.shape for w in net.get_weights()]
    x = np.random.default_rng(0).random((1, 32, 48, 3), dtype=np.float32)
    out = np.asarray(net(x))
    assert out.shape == (1, 32, 48, len(CHANNELS[kind]))
    assert np.isfinite(out).all()


def test_float16_storage_round_trips(tmp_path):
    net = build_model(3, 3, "small")
    full = catfile.save_cat(tmp_path / "a.cat", net, {"model_size": "small"})
    half = catfile.save_cat(
        tmp_path / "b.cat", net, {"model_size": "small"}, weights_dtype="float16"
    )
    # Half precision, then lossless shuffle+gzip: below half the float32 file.
    assert half.stat().st_size < 0.47 * full.stat().st_size
    loaded, meta = catfile.load_cat(half)
    assert meta["weights_dtype"] == "float16"
    for a, b in zip(net.get_weights(), loaded.get_weights(), strict=True):
        assert b.dtype == np.float32
        # Exactly the float16 values: the compression loses nothing.
        np.testing.assert_array_equal(a.astype(np.float16).astype(np.float32), b)


def test_float16_storage_uses_standard_hdf5_filters(tmp_path):
    import io
    import zipfile

    import h5py

    half = catfile.save_cat(
        tmp_path / "b.cat", build_model(3, 3, "small"), {}, weights_dtype="float16"
    )
    with zipfile.ZipFile(half) as outer:
        inner = zipfile.ZipFile(io.BytesIO(outer.read(catfile.MODEL_NAME)))
        (tmp_path / "w.h5").write_bytes(inner.read(catfile.WEIGHTS_MEMBER))
    kernels = []
    with h5py.File(tmp_path / "w.h5") as h5:
        h5.visititems(lambda _, obj: kernels.append(obj) if getattr(obj, "ndim", 0) == 4 else None)
        assert kernels
        for ds in kernels:
            assert (ds.dtype, ds.compression, ds.shuffle) == (np.float16, "gzip", True)


def test_deblur_initial_weights_start_training(tiny_dataset, tmp_path, capsys):
    out = ccat_tf.train(
        tiny_settings(tiny_dataset, tmp_path / "d", epochs=2, initial_weights="deblur"),
        progress_bar=False,
    )
    assert out.exists()
    assert "initial weights from" in capsys.readouterr().err
    with pytest.raises(SettingsError, match="deblur fits rgb -> rgb models.*3 -> 1"):
        ccat_tf.train(
            tiny_settings(
                tiny_dataset, tmp_path / "e", output_channels=["R"], initial_weights="deblur"
            ),
            progress_bar=False,
        )


def test_human_matting_initial_weights_start_an_alpha_training(tmp_path, capsys):
    rng = np.random.default_rng(3)
    (tmp_path / "in").mkdir()
    (tmp_path / "gt").mkdir()
    for f in range(1, 5):
        x = smooth_noise(rng, 64, 64)
        write_png(tmp_path / "in" / f"m.{f:04d}.png", x)
        write_exr(tmp_path / "gt" / f"m.{f:04d}.exr", (x[..., :1] > 0.5).astype(np.float32), ["A"])
    ds = {
        "input": str(tmp_path / "in" / "m.####.png"),
        "ground_truth": str(tmp_path / "gt" / "m.####.exr"),
        "frames": "1-4",
    }
    ccat_tf.train(
        tiny_settings(
            ds, tmp_path / "d", epochs=2, output_channels="alpha", initial_weights="human_matting"
        ),
        progress_bar=False,
    )
    assert "human_matting_small.cat" in capsys.readouterr().err


def test_tfds_builders_build_on_a_tiny_folder(tmp_path):
    from ccat_tf.pretrain import builders

    rng = np.random.default_rng(1)
    (tmp_path / "imgs").mkdir()
    for name in ("a", "b"):
        write_png(tmp_path / "imgs" / f"{name}.png", smooth_noise(rng, 40, 56))
    ds, builder = builders.load_images(tmp_path / "imgs", tmp_path / "tfds")
    items = list(ds.as_numpy_iterator())
    assert [i["name"] for i in items] == [b"a.png", b"b.png"]
    assert items[0]["image"].shape == (40, 56, 3)
    version_dir = Path(builder.data_dir)
    assert version_dir.is_dir() and version_dir.name == "1.0.0"
    # Cached: a second builder over the same files reuses the build.
    again = builders.LocalImages(folder=tmp_path / "imgs", data_dir=str(tmp_path / "tfds"))
    assert again.is_prepared()
    # Another file is another config (no stale cache).
    write_png(tmp_path / "imgs" / "c.png", smooth_noise(rng, 40, 56))
    changed = builders.LocalImages(folder=tmp_path / "imgs", data_dir=str(tmp_path / "tfds"))
    assert not changed.is_prepared()

    pairs = tmp_path / "studio"
    (pairs / "input").mkdir(parents=True)
    (pairs / "ground_truth").mkdir()
    x = smooth_noise(rng, 32, 32)
    write_png(pairs / "input" / "f1.png", x)
    write_exr(pairs / "ground_truth" / "f1.exr", x[..., :1], ["A"])
    ds, _ = builders.load_pairs(pairs, tmp_path / "tfds", "alpha")
    (item,) = list(ds.as_numpy_iterator())
    assert item["input"].shape == (32, 32, 3) and item["ground_truth"].shape == (32, 32, 1)


def test_pretrain_on_a_studio_corpus_writes_a_loadable_cat(tmp_path):
    from ccat_tf.pretrain.train import pretrain
    from ccat_tf.settings import PretrainSettings

    rng = np.random.default_rng(2)
    pairs = tmp_path / "studio"
    (pairs / "input").mkdir(parents=True)
    (pairs / "ground_truth").mkdir()
    for f in range(2):
        x = smooth_noise(rng, 48, 48)
        write_png(pairs / "input" / f"f{f}.png", x)
        write_png(pairs / "ground_truth" / f"f{f}.png", x[:, ::-1])
    settings = PretrainSettings(
        task="deblur",
        model_size="small",
        output=str(tmp_path / "w.cat"),
        data_dir=str(tmp_path / "tfds"),
        pairs=str(pairs),
        steps=3,
        crop_size=32,
        batch_size=2,
    )
    path = pretrain(settings)
    net, meta = catfile.load_cat(path)
    assert meta["pretrained"]["corpus"] == "pairs" and meta["step"] == 3
    assert meta["output_channels"] == ["R", "G", "B"]


@pytest.mark.parametrize("task", ["deblur", "upscale", "human_matting"])
def test_degradations_are_deterministic_per_seed(task):
    import tensorflow as tf

    from ccat_tf.pretrain.degrade import TASKS

    _, n_crops, make = TASKS[task]
    rng = np.random.default_rng(0)
    crops = [tf.constant(smooth_noise(rng, 48, 48)) for _ in range(n_crops)]
    a = make(*crops, tf.constant([5, 9], tf.int64))
    b = make(*crops, tf.constant([5, 9], tf.int64))
    c = make(*crops, tf.constant([5, 10], tf.int64))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert not np.array_equal(np.asarray(a[0]), np.asarray(c[0]))
    assert np.isfinite(np.asarray(a[0])).all() and a[0].shape == (48, 48, 3)
    assert a[1].shape == (48, 48, len(TASKS[task][0]))


def test_training_pairs_are_deterministic_per_sample():
    from ccat_tf.pretrain.train import _stack, pair_dataset

    rng = np.random.default_rng(0)
    images, sizes = _stack([smooth_noise(rng, 64, 80), smooth_noise(rng, 72, 64)])
    first = next(iter(pair_dataset("upscale", images, sizes, 32, 2, seed=3, start=4)))
    again = next(iter(pair_dataset("upscale", images, sizes, 32, 2, seed=3, start=4)))
    np.testing.assert_array_equal(first[0].numpy(), again[0].numpy())


def test_a_built_wheel_carries_the_weights_and_training_finds_them_there(tmp_path):
    """`initial_weights` reads the installed package, not the source tree."""
    import shutil
    import subprocess
    import sys
    import zipfile

    # Built from a copy: setuptools leaves build/ and *.egg-info behind in the source folder.
    repo, src = Path(__file__).resolve().parents[1], tmp_path / "src"
    shutil.copytree(repo / "ccat_tf", src / "ccat_tf", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (repo / name).exists():
            shutil.copy(repo / name, src / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation"]
        + ["-q", "-w", str(tmp_path / "wheel")],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "wheel").glob("ccat_tf-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert sorted(n for n in names if n.startswith("ccat_tf/weights/")) == sorted(
        f"ccat_tf/weights/{p.name}" for p in SHIPPED
    )
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import ccat_tf.training as t, ccat_tf.catfile as c;"
        "p = t._pretrained_path('deblur', 'large'); print(p);"
        "print(c.read_metadata(p)['pretrained']['task'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"},
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert out == [str(site / "ccat_tf" / "weights" / "deblur_large.cat"), "deblur"]
