"""The start of the global colour branch: a least-squares fit of the training pairs.

A global grade is a function of each pixel's colour (and, for a vignette, of its place in the
frame). Learnt by gradient descent through a U-Net it takes thousands of steps; solved in closed
form on the training pairs' pixels it takes a fraction of a second. So a new run starts its
colour branch (:mod:`ccat_tf.models`) at the ridge least-squares fit of what the rest of the
network does not already produce, and its U-Net head at zero: step 0 is exactly that fit, and
training can only improve the loss from there. Everything is in training space (the encoded
pixels the network sees), on a seeded sample of full-resolution pixels of every training pair.
"""

from __future__ import annotations

import numpy as np

from ccat_tf.models import coordinate_channels

#: Pixels sampled over all training pairs (enough for a 27-term fit; ~0.1 s to solve).
SAMPLES = 200_000
#: Ridge strength relative to the mean feature energy: keeps unused terms (a flat channel,
#: coordinates of a shot without any position-dependent change) at zero instead of noise.
RIDGE = 1e-4


def sample(xs, ys, *, position: bool, base=None, seed: int = 0, count: int = SAMPLES):
    """``(inputs, targets)`` pixel rows sampled from frames ``xs``/``ys`` (training space).

    ``inputs`` has the image channels (then u, v, r^2 with ``position``); ``targets`` is the
    ground truth minus ``base(i)``, what the rest of the network gives for pair ``i`` (None: 0).
    """
    rng = np.random.default_rng([seed, 0xC01])
    per_pair = max(1, count // max(1, len(xs)))
    rows_in, rows_out = [], []
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        h, w = x.shape[:2]
        idx = rng.integers(0, h * w, size=min(per_pair, h * w))
        pix = np.asarray(x, np.float32).reshape(h * w, -1)[idx]
        if position:
            coords = coordinate_channels(h, w).reshape(h * w, -1)[idx]
            pix = np.concatenate([pix, coords], axis=-1)
        target = np.asarray(y, np.float32).reshape(h * w, -1)[idx]
        if base is not None:
            b = np.asarray(base(i), np.float32)
            target = target - (b if b.ndim == 0 else b.reshape(h * w, -1)[idx])
        rows_in.append(pix)
        rows_out.append(target)
    return np.concatenate(rows_in), np.concatenate(rows_out)


def fit(inputs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ridge least squares of ``targets`` on :func:`~ccat_tf.models.colour_features` of
    ``inputs`` plus a constant: ``(kernel (F, C_out), bias (C_out,))`` in float32."""
    from ccat_tf.models import colour_features

    feats = colour_features(inputs.astype(np.float64))
    design = np.concatenate([feats, np.ones((len(feats), 1))], axis=1)
    gram = design.T @ design
    ridge = RIDGE * np.trace(gram) / gram.shape[0]
    reg = np.eye(gram.shape[0]) * ridge
    reg[-1, -1] = 0.0  # the constant is not shrunk
    coef = np.linalg.solve(gram + reg, design.T @ targets.astype(np.float64))
    return coef[:-1].astype(np.float32), coef[-1].astype(np.float32)


def initialise(net, xs, ys, *, position: bool, residual: bool, seed: int, base=None) -> float:
    """Set ``net``'s colour layer to the fit of ``ys`` minus what the rest of the network gives
    for pair ``i``: ``base(i)`` (a pretrained U-Net's output), or else the input for a residual
    network and 0 otherwise. Return the fit's RMS error in training space (step 0's)."""
    n_img = xs[0].shape[-1]

    def rest(i):
        if base is not None:
            return base(i)
        return np.asarray(xs[i])[..., :n_img] if residual else 0.0

    inputs, targets = sample(xs, ys, position=position, base=rest, seed=seed)
    kernel, bias = fit(inputs, targets)
    layer = net.get_layer("colour")
    layer.set_weights([kernel[None, None], bias])
    from ccat_tf.models import colour_features

    pred = colour_features(inputs) @ kernel + bias
    return float(np.sqrt(np.mean((pred - targets) ** 2)))
