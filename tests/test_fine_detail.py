"""Fine-detail fixes (deblur, upscale): the low stages crop the full-size frames."""

from __future__ import annotations

import numpy as np
from conftest import smooth_noise, tiny_settings, write_png

import ccat_tf
from ccat_tf import dataset
from ccat_tf.dataset import STAGE_SCALES, CropPlan, FrameCache, _downsize
from ccat_tf.model import read_info


def _cache(pairs, scales=STAGE_SCALES) -> FrameCache:
    return FrameCache(
        {
            s: ([_downsize(x, s) for x, _ in pairs], [_downsize(y, s) for _, y in pairs])
            for s in scales
        }
    )


def _box_blur(x: np.ndarray, r: int = 2) -> np.ndarray:
    import cv2

    return cv2.blur(x, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REPLICATE)


def _texture(seed: int, size: int = 128) -> np.ndarray:
    return np.random.default_rng(seed).random((size, size, 3)).astype(np.float32)


def test_detail_share_tells_a_deblur_from_a_grade():
    """Fine texture blurred: little of the difference is left at 1/4 size. A grade of smooth
    pictures: nearly all of it."""
    sharp = [_texture(i) for i in range(3)]
    deblur = _cache([(_box_blur(y), y) for y in sharp])
    rng = np.random.default_rng(0)
    smooth = [smooth_noise(rng, 128, 128).astype(np.float32) for _ in range(3)]
    grade = _cache([(x, x**0.7 * 0.9) for x in smooth])
    assert deblur.detail_share() < dataset.FINE_DETAIL_BELOW < grade.detail_share()
    assert grade.detail_share() > 0.9
    # rgb -> alpha, or a single-resolution cache: no answer
    assert _cache([(x, x[..., :1]) for x in sharp]).detail_share() is None
    assert _cache([(_box_blur(y), y) for y in sharp], scales=(1.0,)).detail_share() is None


def test_fine_detail_plan_cuts_small_crops_from_the_full_size_frames():
    frame = _texture(5, 96)
    cache = _cache([(frame, frame)])
    plan = CropPlan(
        seed=0,
        pairs=1,
        batch_size=1,
        crop_size=64,
        divisor=8,
        stage_bounds=tuple(dataset.stage_bounds(100, True, fine_detail=True)),
        stage_scales=STAGE_SCALES,
        frame_hw=(96, 96),
        augment=False,
        fine_detail=True,
    )
    assert plan.stage_bounds == (0, 60, 90)
    assert dataset.stage_bounds(100, True) == [0, 25, 50]
    for step, size in ((0, 16), (70, 32), (95, 64)):
        x, _ = dataset.make_crop(cache, plan, step)
        assert x.shape[:2] == (size, size)
        # a window of the full-size frame, pixel for pixel (not of a downsized one)
        found = [
            (y0, x0)
            for y0 in range(96 - size + 1)
            for x0 in range(96 - size + 1)
            if np.array_equal(frame[y0 : y0 + size, x0 : x0 + size], x)
        ]
        assert found, step


def test_a_blur_fix_trains_on_full_size_crops_and_says_so(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "gt").mkdir()
    for f in range(1, 5):
        sharp = _texture(f, 96)
        write_png(tmp_path / "in" / f"s.{f:04d}.png", _box_blur(sharp))
        write_png(tmp_path / "gt" / f"s.{f:04d}.png", sharp)
    shot = {
        "input": str(tmp_path / "in" / "s.####.png"),
        "ground_truth": str(tmp_path / "gt" / "s.####.png"),
        "frames": "1-4",
    }
    cat = ccat_tf.train(
        tiny_settings(shot, tmp_path / "dd", crop_size=64, epochs=6), progress_bar=False
    )
    out = capsys.readouterr()
    assert "a fine-detail fix" in out.out + out.err
    assert read_info(cat).step == 12
