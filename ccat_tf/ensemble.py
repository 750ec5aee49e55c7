"""The geometric self-ensemble: a network's output averaged over flips and rotations of its input.

Training shows the network its crops mirrored left-right (``augment``), and turned by quarter
turns too with ``augment_rotations``, so the mirror view (size 2) is one every network knows and
all eight are with ``augment_rotations``; their outputs, turned back and averaged, are a better
and steadier estimate than any one of them (Lim et al. 2017, "Enhanced Deep Residual Networks",
the self-ensemble). It costs one network pass per view and no training.

A position-aware network's input carries its frame coordinates as channels after the image's:
they are turned with the pixels, so every pixel keeps its own place in the frame, and the colour
branch (a per-pixel function of colour and place) gives the same answer in every view.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: The dihedral views as (quarter turns, mirrored first), in the order a smaller ensemble takes
#: them: 2 adds the mirror, 4 the half turn, 8 the quarter turns.
VIEWS = ((0, False), (0, True), (2, False), (2, True), (1, False), (1, True), (3, False), (3, True))
#: The ensemble sizes: each a subgroup of the views (its outputs average to an equivariant map).
SIZES = (1, 2, 4, 8)


def _forward(batch: np.ndarray, turns: int, mirrored: bool) -> np.ndarray:
    if mirrored:
        batch = batch[:, :, ::-1]
    return np.ascontiguousarray(np.rot90(batch, turns, axes=(1, 2)))


def _back(out: np.ndarray, turns: int, mirrored: bool) -> np.ndarray:
    out = np.rot90(out, -turns, axes=(1, 2))
    return out[:, :, ::-1] if mirrored else out


def averaged(call: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, size: int) -> np.ndarray:
    """``call`` (NHWC -> NHWC) on ``size`` views of ``batch``, turned back and averaged."""
    if size not in SIZES:
        raise ValueError(f"self_ensemble {size}: give one of {', '.join(map(str, SIZES))}")
    if size == 1:
        return np.asarray(call(batch), np.float32)
    total = None
    for turns, mirrored in VIEWS[:size]:
        out = _back(np.asarray(call(_forward(batch, turns, mirrored)), np.float32), turns, mirrored)
        total = out.copy() if total is None else total + out
    return total / np.float32(size)
