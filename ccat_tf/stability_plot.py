"""The per-shot stability plot: the flow-warped temporal error of the output and of the input,
frame by frame (:mod:`ccat_tf.temporal` computes them), as a PNG.

A frame where the output's curve rises above the input's is one where the output changes more
than the input's motion explains: flicker. Drawn through matplotlib's Agg canvas (no pyplot, no
global backend state) and written atomically, like ``graph.png``.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np

from ccat_tf.atomic import atomic_path
from ccat_tf.errors import SettingsError

WIDTH_IN, HEIGHT_IN, DPI = 10.0, 3.6, 100  # 1000 x 360 pixels
MAX_TITLE = 200


def _series(frames, output_errors, input_errors) -> tuple[np.ndarray, ...]:
    frames = np.asarray(frames, dtype=np.float64).reshape(-1)
    out = np.asarray(output_errors, dtype=np.float64).reshape(-1)
    inp = np.asarray(input_errors, dtype=np.float64).reshape(-1)
    if len(frames) == 0:
        raise SettingsError(
            "the stability plot has no frames; it needs the temporal errors of at least one "
            "pair of consecutive frames (a shot of two frames or more)"
        )
    if not len(frames) == len(out) == len(inp):
        raise SettingsError(
            f"the stability plot got {len(frames)} frame numbers, {len(out)} output errors and "
            f"{len(inp)} input errors; give one of each per frame"
        )
    if not np.isfinite(frames).all():
        raise SettingsError("the stability plot's frame numbers must be finite")
    return frames, out, inp


def plot_stability(
    frames,
    output_errors,
    input_errors,
    output: str | os.PathLike,
    title: str = "",
) -> Path:
    """Plot the per-frame flow-warped temporal error of the output and of the input against the
    frame number and write it to ``output`` (PNG, 1000x360 pixels) atomically.

    ``frames[k]`` is the frame t of pair k (its error compares t with t-1 warped to it);
    ``output_errors`` / ``input_errors`` are :func:`ccat_tf.temporal.warp_errors` of the output
    and input sequences with the same flows (NaN: no valid pixel, not drawn). The title names
    the shot and the mean ratio output / input.
    """
    if len(str(title)) > MAX_TITLE:
        raise SettingsError(f"title is {len(str(title))} characters long; give at most {MAX_TITLE}")
    frames, out, inp = _series(frames, output_errors, input_errors)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return _draw(frames, out, inp, Path(output), str(title))


def _draw(frames, out, inp, output: Path, title: str) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    marker = "o" if len(frames) <= 60 else None
    ax.plot(frames, inp, color="0.55", marker=marker, markersize=3, label="input")
    ax.plot(frames, out, color="C3", marker=marker, markersize=3, label="output")
    ok = np.isfinite(out) & np.isfinite(inp)
    ratio = out[ok].mean() / inp[ok].mean() if ok.any() and inp[ok].mean() > 0 else math.nan
    ax.set_xlabel("frame")
    ax.set_ylabel("flow-warped error (MSE)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    head = f"{title}: " if title else ""
    text = f"{head}temporal error, output / input = {ratio:.2f}"
    fig.suptitle(text.replace("$", r"\$"))
    fig.tight_layout()
    with atomic_path(output) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return output
