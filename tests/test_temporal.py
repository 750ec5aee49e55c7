"""Flicker metrics (ccat_tf.temporal) and the stability plot (ccat_tf.stability_plot) on
synthetic sequences: a textured image panned by known shifts, with and without per-frame
flicker."""

from __future__ import annotations

import math

import cv2  # a base dependency (the metrics' optical flow)
import numpy as np
import pytest

from ccat_tf import temporal
from ccat_tf.errors import DataSetError, SettingsError
from ccat_tf.stability_plot import plot_stability

SHIFTS = [(0.0, 0.0), (1.5, 0.5), (3.0, 1.0), (5.0, 1.25), (6.5, 2.0), (8.0, 2.5)]


def texture(h: int, w: int, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = cv2.GaussianBlur(rng.random((h, w, 3)).astype(np.float32), (0, 0), sigma)
    return (t - t.min()) / (t.max() - t.min())


def panned(shifts=SHIFTS, size=(80, 112)) -> list[np.ndarray]:
    """A texture moved by each (dx, dy) (sub-pixel and integer), cropped away from its edges."""
    big = texture(size[0] + 32, size[1] + 32, 2.0, 1)
    out = []
    for dx, dy in shifts:
        m = np.float32([[1, 0, dx], [0, 1, dy]])
        moved = cv2.warpAffine(big, m, big.shape[1::-1], borderMode=cv2.BORDER_REFLECT)
        out.append(moved[16 : 16 + size[0], 16 : 16 + size[1]])
    return out


def grade(frames) -> list[np.ndarray]:
    """A steady per-pixel process (what a non-flickering network does)."""
    return [np.clip(f, 0, 1) ** 0.8 for f in frames]


def flicker(frames, gain=0.0, noise=0.0, seed=3) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        np.clip(f * (1 + gain * rng.standard_normal()) + noise * rng.standard_normal(f.shape), 0, 1)
        for f in frames
    ]


def test_flows_follow_the_known_pan():
    seq = panned()
    flows = temporal.sequence_flows(seq)
    assert len(flows) == len(seq) - 1
    for flow, (a, b) in zip(flows, zip(SHIFTS, SHIFTS[1:], strict=False), strict=True):
        inner = flow.backward[8:-8, 8:-8].reshape(-1, 2)
        # frame t shows at x what frame t-1 shows at x - (its shift - the previous shift)
        expected = [-(b[0] - a[0]), -(b[1] - a[1])]
        assert np.median(inner, axis=0) == pytest.approx(expected, abs=0.25)
        assert flow.valid.mean() > 0.9


def test_flicker_raises_the_warped_error_ratio_and_a_steady_output_keeps_it_near_one():
    seq = panned()
    flows = temporal.sequence_flows(seq)  # computed once, used for every sequence below
    steady = temporal.warp_error_ratio(grade(seq), seq, flows)
    assert 0.7 < steady["ratio"] < 1.4
    assert temporal.warp_error_ratio(seq, seq, flows)["ratio"] == pytest.approx(1.0)
    gain = temporal.warp_error_ratio(flicker(grade(seq), gain=0.05), seq, flows)
    noise = temporal.warp_error_ratio(flicker(grade(seq), noise=0.02), seq, flows)
    assert gain["ratio"] > 5 * steady["ratio"] and noise["ratio"] > 5 * steady["ratio"]
    assert len(gain["output"]) == len(gain["input"]) == len(seq) - 1
    # the warp is what makes a steady sequence's error small: without motion it is not
    still = [temporal.PairFlow(np.zeros_like(f.backward), f.valid) for f in flows]
    assert temporal.warp_errors(seq, flows).mean() < 0.2 * temporal.warp_errors(seq, still).mean()


def test_temporal_psnr_is_capped_for_the_truth_and_lowered_by_flicker():
    truth = grade(panned())
    assert temporal.temporal_psnr(truth, truth) == temporal.MAX_DB
    steady_error = [np.clip(t + 0.03, 0, 1) for t in truth]  # wrong, but the same every frame
    assert temporal.temporal_psnr(steady_error, truth) > 40
    noisy = flicker(truth, noise=0.02)
    tpsnr = temporal.temporal_psnr(noisy, truth)
    # an independent error per frame: about 3 dB under the per-frame PSNR (peak 1 for both)
    frame_psnr = np.mean(
        [10 * math.log10(1 / np.mean((n - t) ** 2)) for n, t in zip(noisy, truth, strict=True)]
    )
    assert tpsnr == pytest.approx(frame_psnr - 10 * math.log10(2), abs=0.5)
    assert temporal.temporal_psnr(flicker(truth, noise=0.04), truth) < tpsnr - 4


def test_occlusion_mask_excludes_what_enters_the_frame_and_what_an_object_uncovers():
    # a pan right: the columns entering at the left edge have no match in the frame before
    seq = panned([(0.0, 0.0), (3.0, 0.0)])
    flow = temporal.sequence_flows(seq)[0]
    assert not flow.valid[:, :2].any()
    assert flow.valid[:, 6:].mean() > 0.95
    # a textured square moving 6 pixels right over a still background: the strip it uncovers
    # was hidden in the frame before
    bg, fg = texture(96, 128, 2.0, 1), texture(48, 48, 2.0, 2)
    frames = []
    for x in (30, 36):
        f = bg.copy()
        f[24:72, x : x + 48] = fg
        frames.append(f)
    flow = temporal.sequence_flows(frames, preset="medium")[0]
    assert flow.valid[28:68, 30:36].mean() < 0.5
    assert flow.valid[:, 100:].mean() > 0.95 and flow.valid[30:66, 40:70].mean() > 0.95
    masked = temporal.warp_errors(frames, [flow])[0]
    unmasked = temporal.warp_errors(frames, [temporal.PairFlow(flow.backward, flow.valid | True)])
    assert masked < 0.7 * unmasked[0]


def test_degenerate_sequences_are_refused_with_one_line():
    one = panned()[:1]
    with pytest.raises(DataSetError, match="1 frame"):
        temporal.sequence_flows(one)
    with pytest.raises(DataSetError, match="1 frame"):
        temporal.temporal_psnr(one, one)
    mixed = [np.zeros((20, 30, 3), np.float32), np.zeros((20, 31, 3), np.float32)]
    with pytest.raises(DataSetError, match="one size"):
        temporal.sequence_flows(mixed)
    seq = panned()
    with pytest.raises(DataSetError, match="must match"):
        temporal.temporal_psnr(seq, seq[:-1])
    flows = temporal.sequence_flows(seq)
    with pytest.raises(DataSetError, match="need 5 flows"):
        temporal.warp_errors(seq, flows[:-1])
    small = [f[:40, :50] for f in seq]
    with pytest.raises(DataSetError, match="compute flows on frames of the size"):
        temporal.warp_errors(small, flows)
    with pytest.raises(ValueError, match="preset"):
        temporal.pair_flow(seq[0], seq[1], preset="slow")


def test_alpha_outputs_and_grey_inputs():
    seq = panned()
    flows = temporal.sequence_flows([f[..., :1] for f in seq])  # one-channel input
    mattes = [f[..., :1] > 0.5 for f in seq]
    out = temporal.warp_errors([m.astype(np.float32) for m in mattes], flows)
    assert out.shape == (len(seq) - 1,) and np.isfinite(out).all()


def test_stability_plot_is_written(tmp_path):
    from PIL import Image

    seq = panned()
    flows = temporal.sequence_flows(seq)
    out = temporal.warp_errors(flicker(seq, gain=0.05), flows)
    inp = temporal.warp_errors(seq, flows)
    frames = list(range(1002, 1002 + len(out)))
    path = plot_stability(frames, out, inp, tmp_path / "plots" / "stability.png", title="shot010")
    assert path.exists()
    with Image.open(path) as img:
        assert img.size == (1000, 360)
    assert [p.name for p in path.parent.iterdir()] == ["stability.png"]  # no temporary left
    nan = plot_stability([1, 2], [np.nan, 0.1], [0.2, np.nan], tmp_path / "nan.png")
    assert nan.exists()


def test_stability_plot_refuses_empty_or_mismatched_input(tmp_path):
    with pytest.raises(SettingsError, match="no frames"):
        plot_stability([], [], [], tmp_path / "s.png")
    with pytest.raises(SettingsError, match="one of each per frame"):
        plot_stability([1, 2], [0.1], [0.1, 0.2], tmp_path / "s.png")
    assert not (tmp_path / "s.png").exists()
