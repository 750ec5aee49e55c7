"""The training-space transform: how pixel values are encoded before the network sees them.

Scene-linear colour can run far above 1 (speculars, skies, fire). Trained on raw values, such
pixels dominate the loss and the network's range. Colour channels of an HDR data set are therefore
encoded with a log shaper, ``y = sign(x) * log(1 + |x|)`` (exactly invertible, 0 -> 0, 1 -> 0.69,
100 -> 4.6), while alpha, mattes and display-referred data (all values within 0..1) stay linear.
The choice is stored in the .cat per channel so inference decodes exactly what training encoded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

KINDS = ("linear", "log")
#: Largest magnitude fed to exp when decoding, so a wild network output cannot overflow to inf.
MAX_LOG = 80.0
_ALPHA_NAMES = {"a", "alpha", "matte", "mask"}


def is_alpha_like(channel_name: str) -> bool:
    """True for A, alpha, layer.A, matte and mask channels: these are never log-encoded."""
    leaf = channel_name.rsplit(".", 1)[-1].lower()
    return leaf in _ALPHA_NAMES


def choose_kinds(channel_names: Sequence[str], hdr: bool) -> list[str]:
    """``log`` for colour channels of an HDR data set, ``linear`` otherwise."""
    return ["log" if hdr and not is_alpha_like(n) else "linear" for n in channel_names]


def encode(array: np.ndarray, kinds: Sequence[str]) -> np.ndarray:
    """Pixel values -> training space (last axis = channels)."""
    out = np.array(array, dtype=np.float32, copy=True)
    for c, kind in enumerate(kinds):
        if kind == "log":
            x = out[..., c]
            out[..., c] = np.sign(x) * np.log1p(np.abs(x))
        elif kind != "linear":
            raise ValueError(f"unknown transform kind {kind!r}")
    return out


def decode(array: np.ndarray, kinds: Sequence[str]) -> np.ndarray:
    """Training space -> pixel values; the exact inverse of :func:`encode`."""
    out = np.array(array, dtype=np.float32, copy=True)
    for c, kind in enumerate(kinds):
        if kind == "log":
            y = out[..., c]
            out[..., c] = np.sign(y) * np.expm1(np.minimum(np.abs(y), MAX_LOG))
        elif kind != "linear":
            raise ValueError(f"unknown transform kind {kind!r}")
    return out


# The same two functions in TensorFlow ops, for graphs that carry the recipe (the exported
# SavedModel and ONNX models, ccat_tf.model.Model.pixel_function). ``log(1 + |x|)`` and
# ``exp(|y|) - 1`` are written with plain ops, not log1p/expm1, so every converter (tf2onnx
# included) maps them; the float32 difference from the numpy forms is below 1e-6.


def _log_mask(kinds: Sequence[str]):
    import tensorflow as tf

    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"unknown transform kind {kind!r}")
    # Made inside the traced function: a captured eager tensor would become a graph input.
    return tf.constant([k == "log" for k in kinds])


def encode_tf(x, kinds: Sequence[str]):
    """:func:`encode` for a float32 tensor whose last axis is the channels."""
    import tensorflow as tf

    return tf.where(_log_mask(kinds), tf.sign(x) * tf.math.log(1.0 + tf.abs(x)), x)


def decode_tf(y, kinds: Sequence[str]):
    """:func:`decode` for a float32 tensor whose last axis is the channels."""
    import tensorflow as tf

    decoded = tf.sign(y) * (tf.exp(tf.minimum(tf.abs(y), MAX_LOG)) - 1.0)
    return tf.where(_log_mask(kinds), decoded, y)
