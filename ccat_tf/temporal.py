"""Flicker metrics of an output sequence: temporal PSNR and the flow-warped temporal error.

Frames are float32 HxWxC numpy arrays as :mod:`ccat_tf.imageio` returns them (0..1 for display
images), a sequence a list of them in frame order.

* :func:`temporal_psnr` (ground truth on every frame): the PSNR of the output's frame-to-frame
  differences against the ground truth's, ``10 log10(1 / MSE)`` with MSE pooled over every pair,
  pixel and channel. The peak is 1, as in the per-frame PSNR of 0..1 frames, although
  differences lie in -1..1: the error is then in the units of the per-frame error, so the two
  read alike (a fresh independent error on every frame costs the temporal PSNR 3 dB under the
  per-frame PSNR; a steady error costs it nothing). Capped at :data:`MAX_DB` (identical
  differences).
* :func:`warp_errors` (no ground truth): the output at t against the output at t-1 warped to t
  by the optical flow of the *input* frames (OpenCV's DIS flow on 8-bit grey frames, backward
  flow t -> t-1 and ``cv2.remap``), the squared error averaged over the pixels whose flow passes
  a forward-backward consistency check (occluded or out-of-frame pixels are left out). This is
  E_warp of Lai et al., "Learning Blind Video Temporal Consistency" (ECCV 2018), with the
  occlusion test of Sundaram et al. (ECCV 2010). :func:`warp_error_ratio` divides the output's
  by the input's: 1 means the output changes as much as the input does where motion explains it;
  above 1, the output flickers more than its input.

Flows are computed once per frame pair (:func:`sequence_flows`) and passed to the error
functions, so one set serves every method scored on a shot.

:func:`blend` reduces flicker (``InferSettings.temporal_blend``): a frame's network output mixed
with its neighbours' outputs warped to it by the input's flow, only where the motion explains
them (see :func:`neighbour_weights`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ccat_tf.errors import DataSetError

#: The temporal PSNR of identical frame-to-frame differences (the per-frame PSNR's cap too).
MAX_DB = 100.0
#: DIS optical-flow presets by name (OpenCV's ``DISOPTICAL_FLOW_PRESET_*``).
PRESETS = ("ultrafast", "fast", "medium")
#: The forward-backward check of Sundaram et al.: a pixel is occluded when
#: ``|b + f(x + b)|^2 > ALPHA (|b|^2 + |f(x + b)|^2) + BETA`` (pixels squared).
ALPHA, BETA = 0.01, 0.5
REC709 = np.array([0.2126, 0.7152, 0.0722], np.float32)


@dataclass(frozen=True)
class PairFlow:
    """The motion from frame t to frame t-1 of an input sequence.

    ``backward``: HxWx2 float32, (dx, dy) in pixels such that frame t at x shows what frame t-1
    shows at x + backward[x]. ``valid``: HxW bool, False where the pixel is occluded in t-1 or
    its match lies outside the frame."""

    backward: np.ndarray
    valid: np.ndarray


def _cv2():
    try:
        import cv2
    except ImportError as err:  # pragma: no cover - a runtime dependency
        raise ImportError(
            "flicker metrics need OpenCV: pip install opencv-python-headless"
        ) from err
    return cv2


def check_sequence(frames, what: str = "sequence", least: int = 2) -> list[np.ndarray]:
    """``frames`` as a list of HxWxC float32 arrays, all one size; a one-line error otherwise."""
    frames = [np.asarray(f, dtype=np.float32) for f in frames]
    if len(frames) < least:
        raise DataSetError(
            f"the {what} has {len(frames)} frame(s); flicker is measured between consecutive "
            f"frames, give at least {least}"
        )
    for i, f in enumerate(frames):
        if f.ndim == 2:
            frames[i] = f = f[..., None]
        if f.ndim != 3 or f.shape[:2] != frames[0].shape[:2] or f.shape[0] * f.shape[1] == 0:
            raise DataSetError(
                f"frame {i} of the {what} is {f.shape}, frame 0 is {frames[0].shape}; "
                "every frame must be HxWxC of one size"
            )
    return frames


def grey8(frame: np.ndarray) -> np.ndarray:
    """The 8-bit grey image the flow is computed on: Rec.709 luma of the first three channels
    (or the first channel), 0..1 mapped to 0..255, outside values clipped."""
    f = np.asarray(frame, dtype=np.float32)
    grey = (f[..., :3] * REC709).sum(-1) if f.shape[-1] >= 3 else f[..., 0]
    return np.round(np.clip(grey, 0, 1) * 255).astype(np.uint8)


def _remap(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``image`` sampled at x + flow[x] (bilinear, edge pixels repeated)."""
    cv2 = _cv2()
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    out = cv2.remap(
        np.ascontiguousarray(image, dtype=np.float32),
        gx + flow[..., 0],
        gy + flow[..., 1],
        interpolation=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return out.reshape(image.shape)


def _dis_pair(prev: np.ndarray, cur: np.ndarray, preset: str) -> tuple[np.ndarray, np.ndarray]:
    """DIS flows both ways between two frames: (back, fwd), cur(x) ~ prev(x + back(x)) and
    prev(y) ~ cur(y + fwd(y))."""
    cv2 = _cv2()
    if preset not in PRESETS:
        raise ValueError(f"preset {preset!r} is not one of {', '.join(PRESETS)}")
    dis = cv2.DISOpticalFlow_create(getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{preset.upper()}"))
    g_prev, g_cur = grey8(prev), grey8(cur)
    back = dis.calc(g_cur, g_prev, None)  # cur(x) ~ prev(x + back(x))
    fwd = dis.calc(g_prev, g_cur, None)  # prev(y) ~ cur(y + fwd(y))
    return back, fwd


def pair_flow(prev: np.ndarray, cur: np.ndarray, preset: str = "fast") -> PairFlow:
    """The backward flow cur -> prev of two input frames and its occlusion mask."""
    return _checked(*_dis_pair(prev, cur, preset))


def pair_flows(a: np.ndarray, b: np.ndarray, preset: str = "fast") -> tuple[PairFlow, PairFlow]:
    """``(pair_flow(a, b), pair_flow(b, a))`` from the same two DIS computations: the flow taking
    frame b to a, then the one taking a to b (half the work of two :func:`pair_flow` calls)."""
    back, fwd = _dis_pair(a, b, preset)
    return _checked(back, fwd), _checked(fwd, back)


def _checked(back: np.ndarray, fwd: np.ndarray) -> PairFlow:
    """``back`` (cur -> prev) with the forward-backward check against ``fwd`` (prev -> cur)."""
    fwd_at = _remap(fwd, back)  # the forward flow where each pixel of cur lands in prev
    mismatch = ((back + fwd_at) ** 2).sum(-1)
    size = (back**2).sum(-1) + (fwd_at**2).sum(-1)
    h, w = back.shape[:2]
    gx, gy = np.meshgrid(np.arange(w), np.arange(h))
    tx, ty = gx + back[..., 0], gy + back[..., 1]
    inside = (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
    return PairFlow(back.astype(np.float32), inside & (mismatch <= ALPHA * size + BETA))


def sequence_flows(inputs, preset: str = "fast") -> list[PairFlow]:
    """The :class:`PairFlow` of each consecutive pair of an input sequence: N-1 for N frames,
    ``[k]`` taking frame k+1 to frame k. Compute once, pass to every error below."""
    frames = check_sequence(inputs, "input sequence")
    return [pair_flow(a, b, preset) for a, b in zip(frames, frames[1:], strict=False)]


def warp(frame: np.ndarray, flow: PairFlow) -> np.ndarray:
    """Frame t-1 of any sequence (output, input) warped to frame t by the input's motion."""
    return _remap(frame, flow.backward)


def warp_errors(frames, flows: list[PairFlow]) -> np.ndarray:
    """Per pair, the mean squared difference of frame t and frame t-1 warped to t over the
    valid (non-occluded) pixels and all channels; NaN where no pixel is valid. N-1 values."""
    frames = check_sequence(frames)
    if len(flows) != len(frames) - 1:
        raise DataSetError(
            f"{len(frames)} frames need {len(frames) - 1} flows, {len(flows)} were given"
        )
    out = np.full(len(flows), np.nan)
    for k, flow in enumerate(flows):
        if flow.valid.shape != frames[k].shape[:2]:
            raise DataSetError(
                f"frame {k} is {frames[k].shape[1]}x{frames[k].shape[0]}, its flow "
                f"{flow.valid.shape[1]}x{flow.valid.shape[0]}: compute flows on frames of the size"
            )
        if flow.valid.any():
            diff = frames[k + 1] - warp(frames[k], flow)
            out[k] = float(np.mean(diff[flow.valid] ** 2, dtype=np.float64))
    return out


def warp_error_ratio(outputs, inputs, flows: list[PairFlow] | None = None) -> dict:
    """The output's flow-warped error over the input's, with the same flows (computed from
    ``inputs`` at the fast preset when not given). Returns ``ratio`` (mean over mean, NaN pairs
    left out), ``output`` and ``input`` (per-pair errors, lists) and ``valid_fraction``."""
    if flows is None:
        flows = sequence_flows(inputs)
    out_e, in_e = warp_errors(outputs, flows), warp_errors(inputs, flows)
    ok = np.isfinite(out_e) & np.isfinite(in_e)
    ratio = float("nan")  # no pair with a valid pixel
    if ok.any():
        num, den = float(out_e[ok].mean()), float(in_e[ok].mean())
        ratio = num / den if den > 0 else (1.0 if num == 0 else float("inf"))
    return {
        "ratio": ratio,
        "output": out_e.tolist(),
        "input": in_e.tolist(),
        "valid_fraction": float(np.mean([f.valid.mean() for f in flows])),
    }


def difference_mse(outputs, truths) -> np.ndarray:
    """Per pair, the mean squared difference of the output's and the ground truth's
    frame-to-frame changes. N-1 values."""
    outputs, truths = check_sequence(outputs, "output"), check_sequence(truths, "ground truth")
    if len(outputs) != len(truths) or outputs[0].shape != truths[0].shape:
        raise DataSetError(
            f"the output is {len(outputs)} frames of {outputs[0].shape}, the ground truth "
            f"{len(truths)} of {truths[0].shape}; they must match"
        )
    return np.array(
        [
            np.mean(((o1 - o0) - (t1 - t0)) ** 2, dtype=np.float64)
            for o0, o1, t0, t1 in zip(outputs, outputs[1:], truths, truths[1:], strict=False)
        ]
    )


def psnr_db(mse: float) -> float:
    """``10 log10(1 / mse)`` (peak 1), :data:`MAX_DB` for no error."""
    return MAX_DB if mse <= 10 ** (-MAX_DB / 10) else float(10 * np.log10(1 / mse))


def temporal_psnr(outputs, truths) -> float:
    """The temporal PSNR of an output sequence against its ground truth (MSE pooled over pairs;
    see the module's notes for the peak)."""
    return psnr_db(float(difference_mse(outputs, truths).mean()))


# ---- flicker reduction: the flow-guided temporal blend -------------------------------------

#: A neighbour's pixel counts as explained by the motion when the local mean squared difference
#: of the input and the warped neighbour input (over a BOX x BOX window, all channels, 0..1) is
#: at most ``TOLERANCE`` times what two frames of the input's own noise give (2 sigma^2), plus
#: ``FLOOR``^2 (8-bit quantisation, bilinear resampling). The weight falls linearly to 0 at
#: twice that.
BOX = 5
TOLERANCE = 3.0
FLOOR = 2 / 255
#: A neighbour whose mean weight over the frame is below this is dropped altogether: a scene cut
#: or a whole new view, where the few chance matches would otherwise leak into the frame.
CUT_FRACTION = 0.25
#: Only the detail of a neighbour's difference (finer than a Gaussian of this many pixels) is
#: blended in; its smooth part is the frame's own. Flicker is fine grain, while an output fixed
#: to the screen (a vignette, lens shading, a locked-off matte) moves with the flow as a smooth
#: difference that blending it in would drag across the frame (a vignette grade lost 3.3 dB).
DETAIL_SIGMA = 4.0


def _display(frame: np.ndarray) -> np.ndarray:
    """The input as the flow sees it: display values clipped to 0..1 (HDR highlights flat)."""
    return np.clip(np.asarray(frame, dtype=np.float32), 0, 1)


def _channels_last(frame: np.ndarray) -> np.ndarray:
    f = np.asarray(frame, dtype=np.float32)
    return f[..., None] if f.ndim == 2 else f


def noise_sigma(frame: np.ndarray) -> float:
    """The input's own noise, the standard deviation per channel (rms over channels) of the
    0..1-clipped frame: Immerkaer's Laplacian-difference operator (Immerkaer 1996), with the
    median absolute response (1.4826 MAD / 6) so that edges and texture barely count."""
    f = _channels_last(_display(frame))
    if f.shape[0] < 3 or f.shape[1] < 3:
        return 0.0
    lap = (
        f[:-2, :-2] - 2 * f[:-2, 1:-1] + f[:-2, 2:]
        - 2 * f[1:-1, :-2] + 4 * f[1:-1, 1:-1] - 2 * f[1:-1, 2:]
        + f[2:, :-2] - 2 * f[2:, 1:-1] + f[2:, 2:]
    )  # fmt: skip
    sigma = 1.4826 * np.median(np.abs(lap.reshape(-1, f.shape[-1])), axis=0) / 6
    return float(np.sqrt(np.mean(sigma**2)))


def neighbour_weights(
    input: np.ndarray,  # noqa: A002 - the input frame t
    neighbour_inputs,
    preset: str = "fast",
    sigma: float | None = None,
    flows: list[PairFlow] | None = None,
) -> list[tuple[PairFlow, np.ndarray]]:
    """Per neighbour input frame (t-1, t+1, any order): the flow taking frame t to it and the
    HxW weight 0..1 of its pixels in the blend. The weight is 0 where the forward-backward check
    fails (occluded, out of frame) and where the warped neighbour input does not match the input
    beyond its own noise (new content, lighting changes, a wrong flow), and 0 everywhere for a
    neighbour that mostly does not match (a scene cut, :data:`CUT_FRACTION`). ``sigma``: the
    input's noise (default :func:`noise_sigma`). ``flows``: per neighbour, the flow taking frame
    t to it (``pair_flow(neighbour, input)``), when already computed."""
    cv2 = _cv2()
    x = _channels_last(_display(input))
    if sigma is None:
        sigma = noise_sigma(x)
    limit = TOLERANCE * 2 * sigma**2 + FLOOR**2
    out = []
    for k, other in enumerate(neighbour_inputs):
        y = _channels_last(_display(other))
        if y.shape != x.shape:
            raise DataSetError(
                f"a neighbour frame is {y.shape}, the frame {x.shape}: blend frames of one size"
            )
        if flows is not None:
            flow = flows[k]
        else:  # on the frames as given, as the flicker metrics' flows: x(p) ~ y(p + back(p))
            flow = pair_flow(_channels_last(other), _channels_last(input), preset)
        residual = np.mean((x - warp(y, flow)) ** 2, axis=-1, dtype=np.float32)
        local = cv2.blur(residual, (BOX, BOX), borderType=cv2.BORDER_REFLECT)
        weight = np.clip(2 - local / limit, 0, 1) * flow.valid
        if weight.mean() < CUT_FRACTION:
            weight = np.zeros_like(weight)
        out.append((flow, weight.astype(np.float32)))
    return out


def _detail(difference: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``difference`` (HxWxC) less its local mean over the pixels ``weight`` (HxW, 0..1) keeps:
    a Gaussian of :data:`DETAIL_SIGMA` pixels, normalised by the weights (so pixels left out of
    the blend do not bleed into the mean)."""
    cv2 = _cv2()
    norm = np.maximum(cv2.GaussianBlur(weight, (0, 0), DETAIL_SIGMA), 1e-3)
    mean = np.empty_like(difference)
    for c in range(difference.shape[-1]):
        part = np.ascontiguousarray(weight * difference[..., c])
        mean[..., c] = cv2.GaussianBlur(part, (0, 0), DETAIL_SIGMA) / norm
    return difference - mean


def blend(
    output: np.ndarray,
    neighbour_outputs,
    input: np.ndarray,  # noqa: A002 - the input frame t
    neighbour_inputs,
    weight: float,
    preset: str = "fast",
    flows: list[PairFlow] | None = None,
) -> np.ndarray:
    """Frame t's output with its neighbours' outputs warped to t mixed in, where the input's
    motion explains them (:func:`neighbour_weights`; flows on the inputs, so any output channels,
    mattes or colour, HDR or not).

    Per pixel, with neighbour weights m_k, warped outputs W_k and D_k = W_k - f less its local
    mean (:func:`_detail`, only the fine detail of the difference):
    ``out = f + weight * sum_k m_k D_k / max(1, sum_k m_k)``: with every neighbour valid, the
    frame's fine detail is ``(1 - weight) f + weight * mean_k W_k`` and its smooth part its own;
    where no neighbour is valid, it is ``f``, unchanged.
    ``weight`` 0 returns ``output`` itself (no flow computed). Neighbours are given in pairs
    (outputs and inputs in the same order); none (a shot of one frame) returns ``output``.
    ``flows``: as for :func:`neighbour_weights` (a renderer computes each pair once,
    :func:`pair_flows`)."""
    if not 0 <= weight <= 1:
        raise ValueError(f"weight is {weight}; use a number from 0 to 1")
    neighbour_outputs = list(neighbour_outputs)
    neighbour_inputs = list(neighbour_inputs)
    if len(neighbour_outputs) != len(neighbour_inputs):
        raise DataSetError(
            f"{len(neighbour_outputs)} neighbour outputs but {len(neighbour_inputs)} inputs"
        )
    if weight == 0 or not neighbour_outputs:
        return output
    f = np.asarray(output, dtype=np.float32)
    f3 = _channels_last(f)
    total = np.zeros(f3.shape[:2], np.float32)
    pull = np.zeros_like(f3)
    for (flow, m), other in zip(
        neighbour_weights(input, neighbour_inputs, preset, flows=flows),
        neighbour_outputs,
        strict=True,
    ):
        if not m.any():
            continue
        g = _channels_last(other)
        if g.shape != f3.shape:
            raise DataSetError(f"a neighbour output is {g.shape}, the output {f3.shape}")
        pull += m[..., None] * _detail(warp(g, flow) - f3, m)
        total += m
    if not total.any():
        return output
    out = f3 + weight * pull / np.maximum(total, 1)[..., None]
    return out.reshape(f.shape).astype(np.float32)
