"""Training pairs made on the fly in tf.data, from clean crops and a stateless seed.

Every function takes a ``seed`` (an int32/int64 tensor of shape [2], as ``tf.random.stateless_*``
wants) and is a pure function of its inputs and that seed: the same (image, seed) always gives the
same pair, so a pretraining run is reproducible and a resumed one sees the same data.

* :func:`deblur_pair`: Gaussian, motion (a line of random length and angle) or defocus (a disc)
  blur, then Gaussian noise. Returns (blurred + noisy, clean).
* :func:`upscale_pair`: downscale by a random factor in [2, 4] with one of several filters (area,
  bilinear, bicubic, Lanczos-3, nearest), upscale back with another (bilinear, bicubic,
  Lanczos-3), light noise. Returns (soft, clean).
* :func:`matting_pair`: a synthetic human figure, an articulated body of capsules and ellipses
  (head, neck, torso, shoulders, two-segment arms and legs, hands, feet) with soft edges,
  textured with another photograph and a skin tone, composited over a real background crop.
  Returns (composite RGB, alpha). There are no real people with real mattes in the corpus: see
  the README section on initial weights for what this means for the human_matting weights.
"""

from __future__ import annotations

import math

import tensorflow as tf

KERNEL_RADIUS = 12  # blur kernels are (2 * 12 + 1) square: up to 25 px motion, 12 px defocus


def _seed(seed, k: int):
    return tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), k)


def _uniform(seed, k: int, lo: float, hi: float, shape=()):
    return tf.random.stateless_uniform(shape, seed=_seed(seed, k), minval=lo, maxval=hi)


def _choice(seed, k: int, n: int):
    return tf.random.stateless_uniform([], seed=_seed(seed, k), minval=0, maxval=n, dtype=tf.int32)


# ---- crops -------------------------------------------------------------------------------------


def random_crop(images, sizes, crop: int, seed, channels: int = 3):
    """A ``crop`` x ``crop`` crop of one image of a padded stack, with scale, flips and rotations.

    ``images`` is [N, Hmax, Wmax, C] (zero padded), ``sizes`` [N, 2] the real (H, W) of each.
    A square region of side crop/scale (scale in [0.6, 1], never larger than the image) is taken
    at a random place and resized to ``crop``, so the network sees detail at several scales.
    """
    n = tf.shape(images)[0]
    idx = tf.random.stateless_uniform([], seed=_seed(seed, 0), minval=0, maxval=n, dtype=tf.int32)
    hw = tf.cast(sizes[idx], tf.float32)
    scale = _uniform(seed, 1, 0.6, 1.0)
    side = tf.minimum(tf.cast(crop, tf.float32) / scale, tf.reduce_min(hw))
    side_i = tf.cast(tf.floor(side), tf.int32)
    max_y = tf.cast(hw[0], tf.int32) - side_i
    max_x = tf.cast(hw[1], tf.int32) - side_i
    y0 = tf.cast(tf.floor(_uniform(seed, 2, 0.0, 1.0) * tf.cast(max_y + 1, tf.float32)), tf.int32)
    x0 = tf.cast(tf.floor(_uniform(seed, 3, 0.0, 1.0) * tf.cast(max_x + 1, tf.float32)), tf.int32)
    region = images[idx, y0 : y0 + side_i, x0 : x0 + side_i, :]
    out = tf.image.resize(tf.cast(region, tf.float32), [crop, crop], method="area", antialias=True)
    out = tf.cond(_choice(seed, 4, 2) > 0, lambda: out[:, ::-1], lambda: out)
    out = tf.image.rot90(out, _choice(seed, 5, 4))
    return tf.ensure_shape(out, [crop, crop, channels])


# ---- blur --------------------------------------------------------------------------------------


def blur_kernel(seed):
    """A normalised [25, 25] kernel: Gaussian, motion or defocus, chosen and shaped by ``seed``."""
    r = KERNEL_RADIUS
    coords = tf.range(-r, r + 1, dtype=tf.float32)
    yy, xx = tf.meshgrid(coords, coords, indexing="ij")
    rr = tf.sqrt(xx * xx + yy * yy)
    # Gaussian, sigma 0.6..3.5 px.
    sigma = _uniform(seed, 10, 0.6, 3.5)
    gaussian = tf.exp(-(rr * rr) / (2.0 * sigma * sigma))
    # Motion: a 1 px line of length 3..24 px at any angle, anti-aliased by its distance.
    length = _uniform(seed, 11, 3.0, 24.0)
    angle = _uniform(seed, 12, 0.0, math.pi)
    ux, uy = tf.cos(angle), tf.sin(angle)
    t = tf.clip_by_value(xx * ux + yy * uy, -length / 2, length / 2)
    dist = tf.sqrt((xx - t * ux) ** 2 + (yy - t * uy) ** 2)
    motion = tf.clip_by_value(1.0 - dist, 0.0, 1.0)
    # Defocus: a disc of radius 1..8 px with a 1 px soft rim.
    radius = _uniform(seed, 13, 1.0, 8.0)
    defocus = tf.clip_by_value(radius + 0.5 - rr, 0.0, 1.0)
    kernel = tf.gather(tf.stack([gaussian, motion, defocus]), _choice(seed, 14, 3))
    return kernel / tf.reduce_sum(kernel)


def apply_kernel(image, kernel):
    """Convolve an HWC image with a 2-D kernel per channel (reflect padding: no dark borders)."""
    r = KERNEL_RADIUS
    channels = tf.shape(image)[-1]
    padded = tf.pad(image[None], [[0, 0], [r, r], [r, r], [0, 0]], mode="REFLECT")
    k = tf.tile(kernel[:, :, None, None], [1, 1, channels, 1])
    return tf.nn.depthwise_conv2d(padded, k, [1, 1, 1, 1], "VALID")[0]


def _noise(image, seed, k: int, max_sigma: float):
    sigma = _uniform(seed, k, 0.0, max_sigma)
    noise = tf.random.stateless_normal(tf.shape(image), seed=_seed(seed, k + 1)) * sigma
    return tf.clip_by_value(image + noise, 0.0, 1.0)


def deblur_pair(clean, seed):
    """(blurred with Gaussian/motion/defocus blur and noise, clean) for one HWC crop."""
    blurred = apply_kernel(clean, blur_kernel(seed))
    return _noise(blurred, seed, 20, 0.03), clean


# ---- upscale -----------------------------------------------------------------------------------

DOWN_FILTERS = ("area", "bilinear", "bicubic", "lanczos3", "nearest")
UP_FILTERS = ("bilinear", "bicubic", "lanczos3")


def upscale_pair(clean, seed):
    """(downscaled 2-4x and upscaled back, clean) for one HWC crop."""
    hw = tf.shape(clean)[:2]
    factor = _uniform(seed, 30, 2.0, 4.0)
    small = tf.maximum(tf.cast(tf.round(tf.cast(hw, tf.float32) / factor), tf.int32), 1)
    down = tf.switch_case(
        _choice(seed, 31, len(DOWN_FILTERS)),
        [
            (lambda m=m: tf.image.resize(clean, small, method=m, antialias=m != "nearest"))
            for m in DOWN_FILTERS
        ],
    )
    up = tf.switch_case(
        _choice(seed, 32, len(UP_FILTERS)),
        [(lambda m=m: tf.image.resize(down, hw, method=m)) for m in UP_FILTERS],
    )
    up = tf.ensure_shape(up, clean.shape)
    return _noise(tf.clip_by_value(up, 0.0, 1.0), seed, 33, 0.01), clean


# ---- human matting -----------------------------------------------------------------------------


def _capsule(px, py, a, b, radius, soft):
    """Soft coverage of the capsule from point a to point b with ``radius`` (pixels)."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    length2 = tf.maximum(dx * dx + dy * dy, 1e-6)
    t = tf.clip_by_value(((px - a[0]) * dx + (py - a[1]) * dy) / length2, 0.0, 1.0)
    dist = tf.sqrt((px - a[0] - t * dx) ** 2 + (py - a[1] - t * dy) ** 2)
    return tf.clip_by_value((radius - dist) / soft + 0.5, 0.0, 1.0)


def _ellipse(px, py, centre, rx, ry, angle, soft):
    c, s = tf.cos(angle), tf.sin(angle)
    x, y = px - centre[0], py - centre[1]
    u, v = (x * c + y * s) / rx, (-x * s + y * c) / ry
    # Distance to the rim approximated in pixels by scaling with the mean radius.
    dist = (tf.sqrt(u * u + v * v) - 1.0) * 0.5 * (rx + ry)
    return tf.clip_by_value(-dist / soft + 0.5, 0.0, 1.0)


def _step(point, length, angle):
    """The point ``length`` away from ``point`` at ``angle`` (0 = straight down, y grows down)."""
    return (point[0] + length * tf.sin(angle), point[1] + length * tf.cos(angle))


def figure_alpha(size: int, seed):
    """Soft alpha of one random human figure on a ``size`` x ``size`` canvas, and its skin mask."""
    coords = tf.range(size, dtype=tf.float32) + 0.5
    py, px = tf.meshgrid(coords, coords, indexing="ij")
    s = float(size)
    height = _uniform(seed, 40, 0.45, 1.4) * s  # head to feet, may leave the crop
    soft = _uniform(seed, 41, 0.6, 2.5)  # edge width in px: focus and motion softness
    pelvis = (_uniform(seed, 42, 0.15, 0.85) * s, _uniform(seed, 43, 0.4, 0.85) * s)
    lean = _uniform(seed, 44, -0.3, 0.3)
    up = lean + math.pi  # angle pointing up the spine
    neck = _step(pelvis, 0.30 * height, up)
    head = _step(neck, 0.10 * height, up + _uniform(seed, 45, -0.3, 0.3))
    across = lean + math.pi / 2  # perpendicular to the spine
    shoulder_w = _uniform(seed, 46, 0.08, 0.12) * height
    hip_w = _uniform(seed, 47, 0.045, 0.065) * height
    parts, skin = [], []
    torso_r = _uniform(seed, 48, 0.07, 0.10) * height
    parts.append(_capsule(px, py, _step(neck, 0.04 * height, lean), pelvis, torso_r, soft))
    shoulders = [_step(neck, shoulder_w, across), _step(neck, -shoulder_w, across)]
    hips = [_step(pelvis, hip_w, across), _step(pelvis, -hip_w, across)]
    parts.append(_capsule(px, py, shoulders[0], shoulders[1], 0.045 * height, soft))
    parts.append(_capsule(px, py, hips[0], hips[1], 0.06 * height, soft))
    skin.append(_capsule(px, py, neck, head, 0.032 * height, soft))
    skin.append(_ellipse(px, py, head, 0.055 * height, 0.068 * height, lean, soft))
    for side, (shoulder, hip) in enumerate(zip(shoulders, hips, strict=True)):
        sign = 1.0 if side == 0 else -1.0
        k = 50 + 10 * side
        arm = lean + sign * _uniform(seed, k, -0.4, 2.6)
        elbow = _step(shoulder, 0.16 * height, arm)
        wrist = _step(elbow, 0.15 * height, arm + sign * _uniform(seed, k + 1, 0.0, 2.2))
        parts.append(_capsule(px, py, shoulder, elbow, 0.036 * height, soft))
        parts.append(_capsule(px, py, elbow, wrist, 0.029 * height, soft))
        skin.append(_ellipse(px, py, wrist, 0.028 * height, 0.036 * height, arm, soft))
        leg = lean + _uniform(seed, k + 2, -0.55, 0.55)
        knee = _step(hip, 0.24 * height, leg)
        ankle = _step(knee, 0.24 * height, leg + _uniform(seed, k + 3, -1.4, 0.2))
        toe = _step(ankle, 0.07 * height, leg + sign * 1.4)
        parts.append(_capsule(px, py, hip, knee, 0.052 * height, soft))
        parts.append(_capsule(px, py, knee, ankle, 0.04 * height, soft))
        parts.append(_capsule(px, py, ankle, toe, 0.026 * height, soft))
    clothes = tf.reduce_max(tf.stack(parts), axis=0)
    skin_a = tf.reduce_max(tf.stack(skin), axis=0)
    alpha = tf.maximum(clothes, skin_a)
    # One crop in ten has nobody in it: the network must also learn to say "no person".
    present = tf.cast(_uniform(seed, 49, 0.0, 1.0) > 0.1, tf.float32)
    return alpha * present, tf.clip_by_value(skin_a - clothes, 0.0, 1.0) * present


def matting_pair(background, texture, seed):
    """(figure over background, alpha) for one crop; ``texture`` clothes the figure."""
    size = background.shape[0]
    alpha, skin = figure_alpha(size, seed)
    tint = _uniform(seed, 70, 0.35, 1.25, shape=[3])
    clothes = tf.clip_by_value(texture * tint, 0.0, 1.0)
    tone = _uniform(seed, 71, 0.25, 0.95)
    skin_rgb = tf.stack(
        [tone, tone * _uniform(seed, 72, 0.7, 0.85), tone * _uniform(seed, 73, 0.5, 0.7)]
    )
    grey = tf.reduce_mean(texture, axis=-1, keepdims=True)
    skin_col = tf.clip_by_value(skin_rgb * (0.8 + 0.4 * grey), 0.0, 1.0)
    fg = clothes * (1.0 - skin[..., None]) + skin_col * skin[..., None]
    # Half the backgrounds are out of focus, as behind a person shot with a long lens.
    bg = tf.cond(
        _uniform(seed, 74, 0.0, 1.0) < 0.5,
        lambda: apply_kernel(background, blur_kernel(_seed(seed, 75))),
        lambda: background,
    )
    a = alpha[..., None]
    composite = a * fg + (1.0 - a) * bg
    return _noise(composite, seed, 76, 0.02), a


TASKS = {
    # task -> (output channel names, number of crops it needs, pair function)
    "deblur": (["R", "G", "B"], 1, deblur_pair),
    "upscale": (["R", "G", "B"], 1, upscale_pair),
    "human_matting": (["A"], 2, matting_pair),
}
