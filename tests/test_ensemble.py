"""The geometric self-ensemble (``self_ensemble``, :mod:`ccat_tf.ensemble`): each size averages a
group of flips and quarter turns, so its output turns with its input; a position-aware network's
pixels keep their frame coordinates in every view; tiles and ``infer`` give what ``predict``
gives; a size that is no group is refused before anything is written."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_png

from ccat_tf import ensemble

#: The symmetries each size is closed under (NHWC batch -> batch).
HFLIP = ("mirror", lambda b: b[:, :, ::-1])
VFLIP = ("upside down", lambda b: b[:, ::-1])
TURN = ("quarter turn", lambda b: np.rot90(b, 1, axes=(1, 2)))
SYMMETRIES = {2: [HFLIP], 4: [HFLIP, VFLIP], 8: [HFLIP, VFLIP, TURN]}


def _placeful(batch: np.ndarray) -> np.ndarray:
    """A 'network' that is no symmetry's friend: each output pixel depends on where it is and on
    its right-hand and lower neighbours."""
    h, w = batch.shape[1:3]
    ramp = np.linspace(0.5, 2.0, w, dtype=np.float32)[None, None, :, None]
    ramp = ramp * np.linspace(1.0, 1.5, h, dtype=np.float32)[None, :, None, None]
    right = np.roll(batch, -1, axis=2)
    down = np.roll(batch, -2, axis=1)
    return batch * ramp + 0.3 * right - 0.2 * down


@pytest.mark.parametrize("size", [2, 4, 8])
def test_each_size_turns_with_its_input(size):
    rng = np.random.default_rng(0)
    batch = rng.random((2, 8, 12, 3)).astype(np.float32)  # not square: turns swap the sides
    out = ensemble.averaged(_placeful, batch, size)
    assert out.shape == batch.shape and out.dtype == np.float32
    for name, sym in SYMMETRIES[size]:
        turned = ensemble.averaged(_placeful, np.ascontiguousarray(sym(batch)), size)
        np.testing.assert_allclose(turned, sym(out), atol=1e-5, err_msg=name)
    # ... and the plain map is not: the test would see a size that averaged nothing
    name, sym = SYMMETRIES[size][-1]
    assert not np.allclose(_placeful(np.ascontiguousarray(sym(batch))), sym(_placeful(batch)))


def test_size_one_is_the_plain_call_and_other_sizes_are_refused():
    rng = np.random.default_rng(1)
    batch = rng.random((1, 8, 8, 2)).astype(np.float32)
    np.testing.assert_array_equal(ensemble.averaged(_placeful, batch, 1), _placeful(batch))
    for size in (0, 3, 5, 16):
        with pytest.raises(ValueError, match=f"self_ensemble {size}: give one of 1, 2, 4, 8"):
            ensemble.averaged(_placeful, batch, size)


def _tiny_model(position: bool, ensemble_size: int, tiles=None):
    import keras

    from ccat_tf.model import Model
    from ccat_tf.model_info import ModelInfo
    from ccat_tf.models import Architecture, build_model

    keras.utils.set_random_seed(4)
    arch = Architecture("small", position=position)
    net = build_model(3, 3, arch)
    rng = np.random.default_rng(4)
    net.set_weights(
        [w + rng.normal(0, 0.05, w.shape).astype(np.float32) for w in net.get_weights()]
    )
    names = ("R", "G", "B")
    info = ModelInfo(
        names, names, ("linear",) * 3, ("linear",) * 3, divisor=8, residual=True,
        model_size="small", position=position,
    )  # fmt: skip
    return Model(net, info, tiles=tiles, self_ensemble=ensemble_size)


@pytest.mark.parametrize("position", [False, True])
def test_the_model_averages_its_views_with_each_pixels_own_coordinates(position):
    """Model.predict with self_ensemble 8: the network's eight views of the frame, turned back
    and averaged, where a position-aware network sees every pixel's true frame coordinates."""
    rng = np.random.default_rng(2)
    frame = rng.random((24, 40, 3)).astype(np.float32)
    plain, ens = _tiny_model(position, 1), _tiny_model(position, 8)
    x = plain.network_input(frame)[None]  # the image and (position) its coordinates
    views = []
    for turns, mirrored in ensemble.VIEWS:
        v = x[:, :, ::-1] if mirrored else x
        out = plain.network_output(np.ascontiguousarray(np.rot90(v, turns, axes=(1, 2))))
        out = np.rot90(out, -turns, axes=(1, 2))
        views.append(out[:, :, ::-1] if mirrored else out)
    want = np.mean(views, axis=0)[0]
    got = ens.predict(frame)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.abs(got - plain.predict(frame)).max() > 1e-3  # the views differ: it averaged
    if not position:  # a network blind to place: the ensemble's frame mirrors with its input
        np.testing.assert_allclose(ens.predict(frame[:, ::-1]), got[:, ::-1], atol=1e-5)


def test_tiled_equals_untiled_with_the_ensemble():
    from ccat_tf.model import TileSettings

    rng = np.random.default_rng(3)
    frame = rng.random((176, 232, 3)).astype(np.float32)
    whole = _tiny_model(True, 4).predict(frame)
    tiled_model = _tiny_model(True, 4, tiles=TileSettings(tile_size=(128, 160)))
    assert tiled_model.plan_for(176, 232).tiled
    np.testing.assert_allclose(tiled_model.predict(frame), whole, atol=1e-5)


@pytest.fixture(scope="module")
def cat_and_frames(tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble")
    model = _tiny_model(True, 1)
    model.save(root / "m.cat")
    rng = np.random.default_rng(6)
    (root / "in").mkdir()
    for f in (1, 2):
        write_png(root / "in" / f"s.{f:04d}.png", rng.random((32, 48, 3)), bits=16)
    return root


def test_infer_writes_the_ensembles_frames(cat_and_frames, tmp_path):
    from ccat_tf import imageio
    from ccat_tf.inference import infer
    from ccat_tf.model import open_model

    root = cat_and_frames
    out = tmp_path / "o.####.exr"
    common = dict(
        input=str(root / "in" / "s.####.png"), frames="1-2", output=str(out),
        output_data_type="float", temporal_blend=0, progress_bar=False,
    )  # fmt: skip
    infer(str(root / "m.cat"), self_ensemble=2, **common)
    model = open_model(root / "m.cat", self_ensemble=2)
    for f in (1, 2):
        x = imageio.read_image(str(root / "in" / f"s.{f:04d}.png"))
        got = imageio.read_image(str(out).replace("####", f"{f:04d}"))
        np.testing.assert_allclose(got, model.predict(x), atol=1e-6)


def test_infer_refuses_a_size_that_is_no_group_before_writing(cat_and_frames, tmp_path):
    from ccat_tf.errors import SettingsError
    from ccat_tf.inference import infer

    root = cat_and_frames
    out = tmp_path / "out"
    with pytest.raises(SettingsError, match=r"^self_ensemble is 3; use one of 1, 2, 4, 8$"):
        infer(
            str(root / "m.cat"), input=str(root / "in" / "s.####.png"), frames="1-2",
            output=str(out / "o.####.exr"), self_ensemble=3, progress_bar=False,
        )  # fmt: skip
    assert not out.exists()


def test_infer_says_when_views_are_new_to_the_network(cat_and_frames, tmp_path):
    """A network trained on mirror images only (the default since augment_rotations) is told
    apart: 4 or 8 views get a notice naming the fix, 2 views do not; one trained without
    augment gets it from 2 views; a .cat from before the setting (every turn) gets none."""
    from ccat_tf.inference import infer
    from ccat_tf.model import open_model

    root = cat_and_frames
    model = open_model(root / "m.cat")
    trained = {"augment": True, "augment_rotations": False}
    mirror_only = model.info.with_updates(settings=trained)
    type(model)(model.net, mirror_only).save(tmp_path / "mirror.cat")
    common = dict(
        input=str(root / "in" / "s.####.png"), frames="1", output_data_type="float",
        temporal_blend=0, progress_bar=False,
    )  # fmt: skip

    def notices(cat, size):
        out = str(tmp_path / f"{cat.stem}{size}" / "o.####.exr")
        said = infer(str(cat), self_ensemble=size, output=out, **common)["notices"]
        return [n for n in said if "new to it" in n]

    assert notices(tmp_path / "mirror.cat", 4) == [
        "self_ensemble 4: this network was trained on mirror images only (augment without "
        "augment_rotations), so 2 of the 4 views (mirrored, upside down, turned) are new to it; "
        "use 2, or train with augment_rotations"
    ]
    assert notices(tmp_path / "mirror.cat", 2) == []
    assert notices(root / "m.cat", 8) == []
    plain = model.info.with_updates(settings={"augment": False})
    type(model)(model.net, plain).save(tmp_path / "plain.cat")
    assert notices(tmp_path / "plain.cat", 2) == [
        "self_ensemble 2: this network was trained without augment, so 1 of the 2 views "
        "(mirrored, upside down, turned) are new to it; use 1, or train with augment"
    ]
    assert notices(tmp_path / "plain.cat", 1) == []
