"""The quality benchmark (benchmarks/bench_quality.py) runs end to end on a tiny sequence, so it
cannot rot: footage -> fixes -> baselines -> calibrated, deadline-stopped ccat_tf training ->
scores -> JSON and table. The numbers themselves are the benchmark's business, not this test's."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "bench_quality", ROOT / "benchmarks" / "bench_quality.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_quality"] = module
    spec.loader.exec_module(module)
    return module


def test_split_is_six_even_training_frames_and_odd_scored_frames(bench):
    train, scored = bench.split(48)
    assert train == [0, 9, 19, 28, 38, 47]
    assert scored == [i for i in range(1, 48, 2) if i not in train]
    assert len(scored) == 21


def test_colour_fits_recover_a_colour_transform(bench):
    rng = np.random.default_rng(0)
    xs = [rng.random((20, 30, 3)).astype(np.float32) for _ in range(3)]
    m = np.array([[0.9, 0.1, 0.0, 0.05], [0.0, 1.1, -0.1, 0.0], [0.2, 0.0, 0.7, -0.02]])
    ys = [x @ m[:, :3].T + m[:, 3] for x in xs]
    coef = bench.fit_colour(xs, ys, 1)
    assert np.allclose(bench.apply_colour(xs[0], coef, 1), ys[0], atol=1e-5)
    ys2 = [np.stack([x[..., 0] * x[..., 1], x[..., 2] ** 2, x[..., 0]], -1) for x in xs]
    coef2 = bench.fit_colour(xs, ys2, 2)
    assert np.allclose(bench.apply_colour(xs[1], coef2, 2), ys2[1], atol=1e-5)


def test_psnr_and_ssim(bench):
    rng = np.random.default_rng(1)
    y = rng.random((40, 50, 3)).astype(np.float32)
    assert bench.ssim(y, y) == pytest.approx(1.0)
    noisy = np.clip(y + rng.normal(0, 0.05, y.shape), 0, 1).astype(np.float32)
    assert bench.psnr(noisy, y) == pytest.approx(
        10 * math.log10(1 / np.mean((noisy - y) ** 2)), rel=1e-6
    )
    metrics = pytest.importorskip("skimage.metrics")
    expected = metrics.structural_similarity(
        noisy,
        y,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
        channel_axis=-1,
    )
    assert bench.ssim(noisy, y) == pytest.approx(expected, abs=1e-6)


def test_vignette_ring_and_centre(bench):
    h, w = 60, 80
    truth = np.full((h, w, 3), 0.5, np.float32)
    pred = truth + np.where(bench.radius(h, w) > bench.RING, 0.2, 0.0)[..., None]
    out = bench.ring_centre_rms([pred], [truth])
    assert out["ring_rms"] == pytest.approx(0.2, abs=1e-6)
    assert out["centre_rms"] == 0.0


def test_quick_mode_code_path_on_a_tiny_sequence(bench, tmp_path):
    fixes = ["grade_vig"]
    try:
        import cv2  # noqa: F401

        fixes.append("colour_key")  # rgb -> alpha, and the OpenCV path
    except ImportError:
        pass  # CI without the bench extra still runs the numpy fix end to end
    out = tmp_path / "quality.json"
    result = bench.run(
        ["synthetic"], fixes, ["small"], 6.0, frames=16, output=out, workdir=tmp_path / "work"
    )
    saved = json.loads(out.read_text())
    assert [r["fix"] for r in saved["rows"]] == fixes
    for row in saved["rows"]:
        methods = row["methods"]
        assert set(methods) == {"identity", "affine", "poly2", "ccat_small"}
        for m in methods.values():
            assert math.isfinite(m["psnr"]) and -1 <= m["ssim"] <= 1
        ccat = methods["ccat_small"]
        assert 0 < ccat["steps"] <= ccat["total_steps"]
        assert ccat["stopped_by_deadline"] == (ccat["steps"] < ccat["total_steps"])
        assert ccat["final_cat"].endswith(".cat")
        assert ccat["train_seconds"] < 6.0 + 30  # stop at the deadline, then finish
    vig = saved["rows"][0]["methods"]["identity"]
    assert vig["ring_rms"] > vig["centre_rms"]  # the vignette darkens the ring
    assert "small@64x48" in saved["calibration"]
    table = bench.markdown(result)
    assert "| synthetic | grade_vig |" in table and "ring / centre" in table
