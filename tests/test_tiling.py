"""Tiling: planning, feathered blending, receptive field, and tiled == untiled (no seams)."""

from __future__ import annotations

import numpy as np
import pytest

from ccat_tf import tiling
from ccat_tf.errors import SettingsError


def _profile(radius=20, divisor=8):
    return tiling.ModelProfile(
        radius=radius,
        divisor=divisor,
        elements_per_pixel=500.0,
        max_tensor_elements_per_pixel=64.0,
        in_channels=3,
        out_channels=3,
    )


@pytest.mark.parametrize("length,tile", [(64, 64), (200, 64), (1000, 512), (2160, 1392), (8, 64)])
def test_starts_cover_aligned_and_overlap(length, tile):
    divisor, overlap = 8, 24
    length = -(-length // divisor) * divisor
    starts = tiling._starts(length, min(tile, length), overlap, divisor)
    t = min(tile, length)
    assert starts[0] == 0 and starts[-1] + t == length
    assert all(s % divisor == 0 for s in starts)
    assert all(b - a <= t - overlap for a, b in zip(starts, starts[1:], strict=False))
    assert starts == sorted(set(starts))


def test_weights_are_a_partition_covering_every_pixel():
    blend = tiling.default_blend(_profile())
    plan = tiling.plan_tiles(240, 400, 112, blend, 8)
    assert plan.tiled and plan.count > 4
    total = np.zeros((240, 400))
    for y, x in plan.origins():
        w = plan.weights(y, x)
        assert w.min() >= 0 and w.max() <= 1
        total[y : y + 112, x : x + 112] += w
    assert total.min() > 0.5  # every pixel is some tile's core or shared along a ramp
    # Weight is zero within the margin of an edge another tile covers.
    inner = plan.weights(plan.ys[1], plan.xs[1])
    assert np.all(inner[: blend.margin] == 0) and np.all(inner[:, : blend.margin] == 0)


def test_predict_tiled_identity_is_exact():
    rng = np.random.default_rng(0)
    image = rng.random((96, 136, 2)).astype(np.float32)
    blend = tiling.blend_for_overlap(32, _profile())
    plan = tiling.plan_tiles(96, 136, 64, blend, 8)
    calls = []

    def ident(batch):
        calls.append(len(batch))
        return batch

    out = tiling.predict_tiled(ident, image, plan, 2, batch_tiles=3)
    np.testing.assert_allclose(out, image, atol=1e-6)
    assert max(calls) == 3 and sum(calls) == plan.count  # tiles are batched


def test_plan_rejects_tile_smaller_than_overlap():
    blend = tiling.default_blend(_profile(radius=40))
    with pytest.raises(SettingsError, match="tile_size 64 is too small"):
        tiling.plan_tiles(512, 512, 64, blend, 8)
    # A frame that fits in one tile is fine whatever the overlap.
    assert not tiling.plan_tiles(64, 64, 64, blend, 8).tiled


def test_pad_to_divisor_reflects():
    image = np.arange(5 * 3, dtype=np.float32).reshape(5, 3, 1)
    out = tiling.pad_to_divisor(image, 4)
    assert out.shape == (8, 4, 1)
    np.testing.assert_array_equal(out[5, :3, 0], image[3, :, 0])  # reflect, not repeat
    tiny = tiling.pad_to_divisor(np.ones((1, 1, 1), np.float32), 8)
    assert tiny.shape == (8, 8, 1)


def test_auto_tile_shape_follows_memory():
    p = _profile()
    blend = tiling.default_blend(p)
    per_px = p.bytes_per_pixel()
    # Plenty of memory: the whole frame is one tile.
    assert tiling.auto_tile_shape(p, 1088, 1920, blend, budget_bytes=int(1e12)) == (1088, 1920)
    # Room for 4 tiles of ~512x512 px: a tiling that fits and computes few extra pixels.
    budget = int(4 * 512 * 512 * per_px)
    th, tw = tiling.auto_tile_shape(p, 2160, 3840, blend, batch_tiles=4, budget_bytes=budget)
    assert th * tw * per_px * 4 <= budget and th % 8 == 0 and tw % 8 == 0
    square = tiling.plan_tiles(2160, 3840, 512, blend, 8)
    chosen = tiling.plan_tiles(2160, 3840, (th, tw), blend, 8)
    assert chosen.overhead() <= square.overhead()
    # With room for strips, the frame is cut in one direction only (strips beat squares).
    budget = int(1632 * 1200 * per_px)
    th, tw = tiling.auto_tile_shape(p, 1632, 3840, blend, budget_bytes=budget)
    assert th == 1632 or tw == 3840
    square = tiling.plan_tiles(1632, 3840, 1392, blend, 8)  # about the same area
    assert tiling.plan_tiles(1632, 3840, (th, tw), blend, 8).overhead() < square.overhead()
    # Hardly any memory: the smallest tile that still has a core.
    smallest = tiling.min_tile_size(blend, 8)
    assert tiling.auto_tile_shape(p, 2160, 3840, blend, budget_bytes=1) == (smallest, smallest)


def test_free_memory_is_positive():
    budget, source = tiling.free_memory_bytes(use_gpu=False)
    assert budget > 0 and ("RAM" in source or "cgroup" in source)


def test_cgroup_limits_are_respected(tmp_path):
    """A SLURM job's limit (on the job cgroup, the process in a step below) caps the budget."""
    gib = 2**30
    # cgroup v2: limit 8 GiB on the job, 3 GiB used of which 1 GiB is reclaimable cache.
    job = tmp_path / "v2" / "slurm" / "job_7"
    (job / "step_0").mkdir(parents=True)
    (job / "memory.max").write_text(str(8 * gib))
    (job / "memory.current").write_text(str(3 * gib))
    (job / "memory.stat").write_text(f"anon 123\ninactive_file {gib}\n")
    (job / "step_0" / "memory.max").write_text("max")
    (job / "step_0" / "memory.current").write_text("1")
    proc = tmp_path / "cgroup_v2"
    proc.write_text("0::/slurm/job_7/step_0\n")
    assert tiling.cgroup_free_bytes(proc, tmp_path / "v2") == 6 * gib
    # cgroup v1: an "unlimited" limit means no cap.
    grp = tmp_path / "v1" / "memory" / "docker" / "abc"
    grp.mkdir(parents=True)
    (grp / "memory.limit_in_bytes").write_text("9223372036854771712")
    (grp / "memory.usage_in_bytes").write_text(str(gib))
    proc1 = tmp_path / "cgroup_v1"
    proc1.write_text("4:memory:/docker/abc\n1:cpu:/\n")
    assert tiling.cgroup_free_bytes(proc1, tmp_path / "v1") is None
    (grp / "memory.limit_in_bytes").write_text(str(4 * gib))
    assert tiling.cgroup_free_bytes(proc1, tmp_path / "v1") == 3 * gib
    assert tiling.cgroup_free_bytes(tmp_path / "missing", tmp_path) is None


@pytest.fixture(scope="module")
def perturbed_small():
    """A small U-Net with deterministic random weights and biases (no dead ReLUs)."""
    import keras

    from ccat_tf.models import build_model

    keras.utils.set_random_seed(3)
    model = build_model(3, 3, "small")
    rng = np.random.default_rng(3)
    model.set_weights(
        [w + rng.normal(0, 0.05, w.shape).astype(np.float32) for w in model.get_weights()]
    )
    return model


def _predict_fn(model):
    import tensorflow as tf

    fn = tf.function(
        lambda x: model(x, training=False),
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
    )
    return lambda batch: fn(tf.constant(batch)).numpy()


def test_receptive_field_of_presets():
    from ccat_tf.models import PRESETS, build_model

    radii = {}
    for size in PRESETS:
        profile = tiling.profile_model(build_model(3, 1, size))
        assert profile.divisor == PRESETS[size].divisor
        assert profile.in_channels == 3 and profile.out_channels == 1
        radii[size] = profile.radius
    assert 20 < radii["small"] < radii["medium"] <= radii["large"] < 400


def test_tiled_equals_untiled(perturbed_small):
    """The seam test: many small tiles with the default overlap give the untiled result."""
    model = perturbed_small
    profile = tiling.profile_model(model)
    predict = _predict_fn(model)
    image = np.random.default_rng(5).random((203, 317, 3)).astype(np.float32) * 2
    padded = tiling.pad_to_divisor(image, profile.divisor)
    untiled = predict(padded[None])[0]
    blend = tiling.default_blend(profile)
    plan = tiling.plan_tiles(*padded.shape[:2], tiling.min_tile_size(blend, 8) + 16, blend, 8)
    assert plan.count >= 6
    tiled = tiling.predict_tiled(predict, padded, plan, 3, batch_tiles=4)
    assert np.abs(untiled).max() > 0.5  # the network really does something
    assert np.abs(tiled - untiled).max() < 1e-3
    # And the overlap matters: a quarter of it leaves visible seams with these weights.
    short = tiling.blend_for_overlap(blend.overlap // 4, profile)
    seamy = tiling.predict_tiled(
        predict, padded, tiling.plan_tiles(*padded.shape[:2], 96, short, 8), 3, batch_tiles=4
    )
    assert np.abs(seamy - untiled).max() > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("size", ["medium", "large"])
def test_tiled_equals_untiled_bigger_presets(size):
    import keras

    from ccat_tf.models import build_model

    keras.utils.set_random_seed(4)
    model = build_model(3, 3, size)
    rng = np.random.default_rng(4)
    model.set_weights(
        [w + rng.normal(0, 0.02, w.shape).astype(np.float32) for w in model.get_weights()]
    )
    profile = tiling.profile_model(model)
    predict = _predict_fn(model)
    image = np.random.default_rng(6).random((300, 420, 3)).astype(np.float32)
    padded = tiling.pad_to_divisor(image, profile.divisor)
    untiled = predict(padded[None])[0]
    blend = tiling.default_blend(profile)
    plan = tiling.plan_tiles(*padded.shape[:2], tiling.min_tile_size(blend, 8), blend, 8)
    assert plan.tiled
    tiled = tiling.predict_tiled(predict, padded, plan, 3, batch_tiles=2)
    scale = max(1.0, float(np.abs(untiled).max()))
    assert np.abs(tiled - untiled).max() < 1e-3 * scale
