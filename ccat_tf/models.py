"""The networks: fully convolutional U-Nets in three sizes, as CopyCat's Model Size knob offers.

Every model takes ``(None, None, C_in)`` images and returns ``(None, None, C_out)``, so a network
trained on crops runs on whole frames. Height and width must be a multiple of the preset's
``divisor`` (inference pads frames to it). When input and output channels are the same kind of
thing (rgb -> rgb), the network learns a residual on top of its input, which trains much faster for
the small corrections compositors paint (grades, repairs, deblur).
"""

from __future__ import annotations

from dataclasses import dataclass


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


def divisor(model_size: str) -> int:
    return PRESETS[model_size].divisor


def build_model(
    in_channels: int,
    out_channels: int,
    model_size: str = "medium",
    *,
    residual: bool | None = None,
    dtype_policy: str | None = None,
    name: str | None = None,
):
    """Build the U-Net for ``model_size`` mapping ``in_channels`` to ``out_channels``.

    ``residual`` defaults to ``in_channels == out_channels``. ``dtype_policy`` (e.g.
    ``"mixed_float16"``) is applied to every layer but the last, which stays float32 so outputs
    keep full precision.
    """
    import keras
    from keras import layers

    preset = PRESETS[model_size]
    if residual is None:
        residual = in_channels == out_channels
    if residual and in_channels != out_channels:
        raise ValueError("a residual model needs as many input channels as output channels")
    kw = {"dtype": dtype_policy} if dtype_policy else {}

    def conv(x, filters, label):
        for i in range(preset.convs_per_level):
            x = layers.Conv2D(
                filters, 3, padding="same", activation="relu", name=f"{label}_conv{i}", **kw
            )(x)
        return x

    inputs = keras.Input((None, None, in_channels), name="image")
    x = inputs
    skips = []
    # Encoder: a first convolution lifts the image to features, then conv blocks and 2x pools.
    x = layers.Conv2D(preset.filters[0], 3, padding="same", activation="relu", name="stem", **kw)(x)
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
    outputs = layers.Conv2D(out_channels, 1, padding="same", name="head", dtype="float32")(x)
    if residual:
        outputs = layers.Add(name="residual", dtype="float32")([inputs, outputs])
    return keras.Model(inputs, outputs, name=name or f"ccat_unet_{model_size}")


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
