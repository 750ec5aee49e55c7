"""The networks: fully convolutional U-Nets in three sizes, as CopyCat's Model Size knob offers.

Every model takes ``(None, None, C_in [+ 3])`` images and returns ``(None, None, C_out)``, so a
network trained on crops runs on whole frames. Height and width must be a multiple of the preset's
``divisor`` (inference pads frames to it). When input and output channels are the same kind of
thing (rgb -> rgb), the network learns a residual on top of its input, which trains much faster for
the small corrections compositors paint (grades, repairs, deblur).

Two additions beyond a plain U-Net, each a flag of :class:`Architecture` stored in the .cat:

* ``position``: three more input channels say where in the whole frame each pixel is
  (:func:`coordinate_channels`: u and v from -1 at the left/top edge to +1 at the right/bottom
  edge, and r^2 = u^2 + v^2), so a vignette, lens shading or a graduated sky can be learnt from
  random crops. The pixel recipe supplies them for crops, whole frames and tiles alike. With
  ``position_fit_only`` (every network built since) only the colour branch sees them: a U-Net
  that sees them memorises where things were in the few training frames (a 3000-step matte of
  moving figures ended 5.3 dB lower with them), while the branch's smooth second-order terms in
  u, v and r^2 are what learns a vignette.
* ``colour``: a global colour branch, a 1x1 convolution over second-order features of the input
  (every channel, every product of two channels, with ``position`` the coordinates and their
  products with the colour too), added to the U-Net's output. Training starts it at the
  least-squares fit of the training pairs (:func:`ccat_tf.colour_fit.fit`) with the U-Net's head at
  zero, so a run starts exactly at a global colour fit and the U-Net learns what is left. The
  branch is not trained further: trained jointly (L1 loss, 1/4-resolution crops first) it drifted
  from the L2 optimum and a 2-minute stylisation run ended 0.4 dB under the fit it started at.
  With ``colour_input`` (every network built since) the U-Net also sees the branch's output as
  input channels, after the image's and the coordinates: what it must learn is the fix minus the
  fit, and with the fit in view it can cancel the fit where it is wrong (a matte's or a
  stylisation's smear) instead of having to rebuild the second-order polynomial from the colours.

Only built-in Keras layers are used (a .cat's layer classes are checked against an allow-list):
channel selection and products are fixed (non-trainable) 1x1 convolutions and ``Multiply``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Preset:
    filters: tuple[int, ...]  # channels per level, encoder top to bottom
    convs_per_level: int  # 3x3 convolutions per level and side

    @property
    def divisor(self) -> int:
        return 2 ** (len(self.filters) - 1)


PRESETS: dict[str, Preset] = {
    "small": Preset(filters=(16, 32, 64, 128), convs_per_level=1),
    "medium": Preset(filters=(32, 64, 128, 256), convs_per_level=2),
    "large": Preset(filters=(48, 96, 192, 384), convs_per_level=2),
}


#: Input channels the ``position`` flag adds: u, v and r^2.
POSITION_CHANNELS = 3


@dataclass(frozen=True)
class Architecture:
    """Everything but the channel counts that decides a network's layers and weights."""

    model_size: str
    position: bool = False
    colour: bool = False
    #: the U-Net's input also has the colour branch's output (needs ``colour``; older .cat and
    #: .ost files lack it and are rebuilt without it)
    colour_input: bool = False
    #: the frame coordinates feed the colour branch only, not the U-Net (needs ``position`` and
    #: ``colour_input``; older files lack it: their U-Net sees the coordinates)
    position_fit_only: bool = False


def divisor(model_size: str) -> int:
    return PRESETS[sizing_preset(model_size)].divisor


def sizing_preset(model_size: str) -> str:
    """The preset to size memory (batch, divisor) for before ``auto`` is resolved: the largest
    it may choose."""
    return "large" if model_size == "auto" else model_size


def coordinate_channels(
    height: int,
    width: int,
    frame_hw: tuple[int, int] | None = None,
    origin: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """(height, width, 3) float32 u, v, r^2 of the pixels of a window of a frame.

    ``frame_hw`` is the whole frame's size (default: the window is the frame), ``origin`` the
    window's top-left pixel in it; pixels outside the frame (padding) continue the ramps.
    """
    fh, fw = frame_hw or (height, width)
    oy, ox = origin
    v = (2.0 * (np.arange(height, dtype=np.float32) + oy + 0.5) / fh - 1.0)[:, None]
    u = (2.0 * (np.arange(width, dtype=np.float32) + ox + 0.5) / fw - 1.0)[None, :]
    uu, vv = np.broadcast_to(u, (height, width)), np.broadcast_to(v, (height, width))
    return np.stack([uu, vv, uu * uu + vv * vv], axis=-1).astype(np.float32)


def coordinate_channels_tf(images, frame_hw):
    """TensorFlow form of :func:`coordinate_channels` for an NHWC batch whose frames are
    ``frame_hw`` = (height, width) tensors (the batch may be padded beyond them)."""
    import tensorflow as tf

    shape = tf.shape(images)
    fh, fw = tf.cast(frame_hw[0], tf.float32), tf.cast(frame_hw[1], tf.float32)
    v = 2.0 * (tf.range(shape[1], dtype=tf.float32) + 0.5) / fh - 1.0
    u = 2.0 * (tf.range(shape[2], dtype=tf.float32) + 0.5) / fw - 1.0
    vv, uu = tf.meshgrid(v, u, indexing="ij")
    coords = tf.stack([uu, vv, uu * uu + vv * vv], axis=-1)
    return tf.tile(coords[None], [shape[0], 1, 1, 1])


def colour_feature_pairs(n_inputs: int) -> list[tuple[int, int]]:
    """The (i, j) input-channel index pairs, i <= j, whose products the colour branch sees."""
    return [(i, j) for i in range(n_inputs) for j in range(i, n_inputs)]


def colour_feature_count(n_inputs: int) -> int:
    return n_inputs + len(colour_feature_pairs(n_inputs))


def colour_features(x: np.ndarray) -> np.ndarray:
    """numpy form of the colour branch's features of ``x`` (..., n_inputs), in layer order."""
    n = x.shape[-1]
    pairs = colour_feature_pairs(n)
    prods = [x[..., i] * x[..., j] for i, j in pairs]
    return np.concatenate([x, np.stack(prods, axis=-1)], axis=-1)


def build_model(
    in_channels: int,
    out_channels: int,
    model_size: str | Architecture = "medium",
    *,
    residual: bool | None = None,
    dtype_policy: str | None = None,
    name: str | None = None,
):
    """Build the U-Net for ``model_size`` (a preset name or an :class:`Architecture`) mapping
    ``in_channels`` image channels to ``out_channels``.

    ``residual`` defaults to ``in_channels == out_channels``. ``dtype_policy`` (e.g.
    ``"mixed_float16"``) is applied to every layer but the last ones, which stay float32 so
    outputs keep full precision. With ``position`` the network's input has
    :data:`POSITION_CHANNELS` more channels after the image's; with ``colour_input`` the
    U-Net's first convolution sees ``out_channels`` more (the colour branch's output).
    """
    import keras
    from keras import layers

    arch = model_size if isinstance(model_size, Architecture) else Architecture(model_size)
    preset = PRESETS[arch.model_size]
    if residual is None:
        residual = in_channels == out_channels
    if residual and in_channels != out_channels:
        raise ValueError("a residual model needs as many input channels as output channels")
    kw = {"dtype": dtype_policy} if dtype_policy else {}
    n_total = in_channels + (POSITION_CHANNELS if arch.position else 0)
    if arch.colour_input and not arch.colour:
        raise ValueError("colour_input needs the colour branch (colour)")
    if arch.position_fit_only and not (arch.position and arch.colour_input):
        raise ValueError("position_fit_only needs position and colour_input")
    inputs = keras.Input((None, None, n_total), name="image")
    colour = _colour_branch(inputs, n_total, out_channels) if arch.colour else None
    image = inputs
    if arch.position and (residual or arch.position_fit_only):
        image = _select(inputs, range(in_channels), "image_channels")
    unet_input = image if arch.position_fit_only else inputs
    if arch.colour_input:
        unet_input = layers.Concatenate(name="unet_input", dtype="float32")([unet_input, colour])
    x = _unet(unet_input, preset, kw)
    head_init = "zeros" if arch.colour else "glorot_uniform"
    outputs = layers.Conv2D(
        out_channels, 1, padding="same", name="head", dtype="float32", kernel_initializer=head_init
    )(x)
    terms = [outputs]
    if residual:
        terms.append(image)
    if arch.colour:
        terms.append(colour)
    if len(terms) > 1:
        label = "sum" if arch.colour or arch.position else "residual"
        outputs = layers.Add(name=label, dtype="float32")(terms)
    model = keras.Model(inputs, outputs, name=name or f"ccat_unet_{arch.model_size}")
    _set_fixed_weights(model, n_total, in_channels)
    return model


def _unet(inputs, preset: Preset, kw: dict):
    from keras import layers

    def conv(x, filters, label):
        for i in range(preset.convs_per_level):
            x = layers.Conv2D(
                filters, 3, padding="same", activation="relu", name=f"{label}_conv{i}", **kw
            )(x)
        return x

    skips = []
    # Encoder: a first convolution lifts the image to features, then conv blocks and 2x pools.
    x = layers.Conv2D(preset.filters[0], 3, padding="same", activation="relu", name="stem", **kw)(
        inputs
    )
    for level, filters in enumerate(preset.filters[:-1]):
        x = conv(x, filters, f"enc{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"down{level}", **kw)(x)
    x = conv(x, preset.filters[-1], "bottom")
    # Decoder: upsample, merge the skip of the same level, conv block.
    for level in reversed(range(len(preset.filters) - 1)):
        filters = preset.filters[level]
        x = layers.UpSampling2D(2, interpolation="nearest", name=f"up{level}", **kw)(x)
        x = layers.Conv2D(
            filters, 3, padding="same", activation="relu", name=f"up{level}_conv", **kw
        )(x)
        x = layers.Concatenate(name=f"merge{level}", **kw)([x, skips[level]])
        x = conv(x, filters, f"dec{level}")
    return x


def _select(inputs, channels, label: str, count: int | None = None):
    """A fixed 1x1 convolution picking ``channels`` (weights set by :func:`_set_fixed_weights`)."""
    from keras import layers

    n = count if count is not None else len(list(channels))
    layer = layers.Conv2D(n, 1, use_bias=False, trainable=False, name=label, dtype="float32")
    return layer(inputs)


def _colour_branch(inputs, n_total: int, out_channels: int):
    """1x1 convolution over [input, products of input channel pairs] (float32 throughout)."""
    from keras import layers

    pairs = colour_feature_pairs(n_total)
    left = _select(inputs, None, "colour_left", count=len(pairs))
    right = _select(inputs, None, "colour_right", count=len(pairs))
    products = layers.Multiply(name="colour_products", dtype="float32")([left, right])
    features = layers.Concatenate(name="colour_features", dtype="float32")([inputs, products])
    # Not trained: it stays the least-squares fit it starts at (see the module docstring).
    # Zero until fitted: a new network's output is the U-Net's alone.
    colour = layers.Conv2D(
        out_channels,
        1,
        name="colour",
        dtype="float32",
        trainable=False,
        kernel_initializer="zeros",
    )
    return colour(features)


def _set_fixed_weights(model, n_total: int, in_channels: int) -> None:
    """The selection matrices of the fixed 1x1 convolutions (see :func:`_select`)."""
    names = {layer.name: layer for layer in model.layers}
    if "image_channels" in names:
        names["image_channels"].set_weights(
            [np.eye(n_total, in_channels, dtype=np.float32)[None, None]]
        )
    if "colour_left" in names:
        pairs = colour_feature_pairs(n_total)
        for label, side in (("colour_left", 0), ("colour_right", 1)):
            kernel = np.zeros((1, 1, n_total, len(pairs)), np.float32)
            for k, pair in enumerate(pairs):
                kernel[0, 0, pair[side], k] = 1.0
            names[label].set_weights([kernel])


def forward_flops(model, height: int = 256, width: int = 256) -> int:
    """Multiply-adds x2 of every convolution for one ``height`` x ``width`` image (forward only).

    Training costs about three times this (forward, and the two backward products).
    """
    from keras import layers

    total = 0
    shapes = _spatial_shapes(model, height, width)
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            h, w = shapes[layer.name]
            kh, kw = layer.kernel_size
            cin = layer.input.shape[-1]
            total += 2 * h * w * kh * kw * cin * layer.filters
    return int(total)


def _spatial_shapes(model, height: int, width: int) -> dict[str, tuple[int, int]]:
    """Output (H, W) of every layer for an input of ``height`` x ``width``."""
    import keras

    probe = keras.Model(model.inputs, [layer.output for layer in model.layers[1:]])
    in_ch = model.inputs[0].shape[-1]
    out_shapes = probe.compute_output_spec(keras.KerasTensor((1, height, width, in_ch)))
    return {
        layer.name: (spec.shape[1], spec.shape[2])
        for layer, spec in zip(model.layers[1:], out_shapes, strict=True)
    }


def describe(model_size: str, in_channels: int = 3, out_channels: int = 3, crop: int = 256) -> dict:
    """Parameter count and FLOPs for a preset (used by the README table and the benchmark)."""
    model = build_model(in_channels, out_channels, model_size)
    fwd = forward_flops(model, crop, crop)
    return {
        "model_size": model_size,
        "parameters": int(model.count_params()),
        "forward_gflops_per_crop": fwd / 1e9,
        "training_gflops_per_crop": 3 * fwd / 1e9,
        "divisor": PRESETS[model_size].divisor,
        "crop": crop,
    }
