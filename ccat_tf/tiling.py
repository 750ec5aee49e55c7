"""Seam-free tiled inference: tile planning, feathered blending and automatic tile size.

A frame too big for memory is cut into overlapping tiles, each run through the network, and the
results blended back. Two facts make the blend invisible:

* **Margins as wide as the receptive field.** A pixel's output depends only on the input within
  the network's receptive-field radius ``R`` (walked from the layer graph by
  :func:`profile_model`). A tile whose border is at least ``R`` pixels away from a pixel computes
  that pixel from exactly the same input as the whole frame would, so it gets the same value (to
  float rounding). Each tile's weight is therefore zero within ``margin >= R`` of an edge that
  another tile covers.
* **Aligned tiles.** Tile origins and sizes are multiples of the model's ``divisor`` (2 ** number
  of poolings), so every pooling window in a tile is a pooling window of the whole frame.

Between the margin and the tile's core, weights rise along a raised-cosine ramp (``ramp``
pixels), and the accumulated result is divided by the sum of weights. Where the margin covers the
receptive field the tiles agree and the ramp changes nothing; if a user chooses a smaller overlap
the ramp hides what would otherwise be a hard seam. Adjacent tiles overlap by
``2 * margin + ramp`` pixels (rounded up to the divisor).

Frame edges are handled as the untiled network would handle them: the frame is reflect-padded to a
multiple of the divisor first, and a tile touching the frame edge has full weight up to it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ccat_tf.errors import SettingsError

#: Width of the raised-cosine blend between tiles, in pixels (beyond the receptive-field margin).
DEFAULT_RAMP = 16
#: Largest tensor TensorFlow's CPU kernels index safely (int32 element offsets).
_MAX_TENSOR_ELEMENTS = 2**31 - 1
#: Peak memory of a forward pass, as a multiple of (sum of all activation elements x 4 bytes).
#: Graph execution frees most activations as soon as they are used; what stays are the skip
#: tensors, the concatenations and convolution workspace. Measured peak RSS growth on CPU (TF 2.21,
#: oneDNN, 1024^2 and 2048^2 inputs, batch 1 and 4): 0.28 (small) to 0.37 (medium, large) of the
#: total. 0.5 leaves a safety margin.
_PEAK_FRACTION_OF_ACTIVATIONS = 0.5
#: Share of free memory inference may plan to use: the rest is for the frame queues, the
#: accumulation buffers, TensorFlow itself and whoever else shares the machine.
_CPU_MEMORY_SHARE = 0.4
_GPU_MEMORY_SHARE = 0.7


@dataclass(frozen=True)
class ModelProfile:
    """What tiling needs to know about a fully convolutional network."""

    radius: int  #: receptive-field radius in input pixels (conservative)
    divisor: int  #: H and W must be multiples of this (product of pooling strides)
    elements_per_pixel: float  #: sum over layers of output elements per input pixel
    max_tensor_elements_per_pixel: float  #: the largest single layer output per input pixel
    in_channels: int
    out_channels: int

    def bytes_per_pixel(self, dtype_bytes: int = 4) -> float:
        """Estimated peak forward-pass memory per input pixel (batch of one)."""
        return self.elements_per_pixel * dtype_bytes * _PEAK_FRACTION_OF_ACTIVATIONS


def profile_model(model) -> ModelProfile:
    """Walk a Keras functional model's layer graph: receptive field, divisor, activation sizes.

    The receptive field is computed per tensor as ``(radius, jump)`` in input pixels, where
    ``jump`` is the input-pixel spacing of the tensor's pixels: a k x k convolution adds
    ``(k - 1) / 2 * dilation * jump``, a pooling window ``(pool - 1) * jump`` (one-sided, counted
    as symmetric to stay conservative), nearest upsampling ``(size - 1) * new_jump`` (a fine pixel
    sits up to that far from the coarse pixel it copies); merges take the widest input.
    Layers this walk does not know raise ``ValueError`` (ccat_tf models use only the known ones).
    """
    from keras import layers

    def as_list(t):
        return list(t) if isinstance(t, list | tuple) else [t]

    state: dict[int, tuple[float, float]] = {}  # id(KerasTensor) -> (radius, jump)
    for t in model.inputs:
        state[id(t)] = (0.0, 1.0)
    elements = 0.0
    max_elements = 0.0
    divisor = 1.0
    for layer in model.layers:
        if isinstance(layer, layers.InputLayer):
            continue
        inputs = as_list(layer.input)
        known = [state[id(t)] for t in inputs if id(t) in state]
        if len(known) != len(inputs):
            raise ValueError(f"layer {layer.name} is not reachable from the model's inputs")
        radius = max(r for r, _ in known)
        jump = max(j for _, j in known)
        if isinstance(layer, layers.Conv2D):
            kh, kw = layer.kernel_size
            dh, dw = layer.dilation_rate
            radius += max((kh - 1) * dh, (kw - 1) * dw) / 2 * jump
            jump *= max(layer.strides)
        elif isinstance(layer, layers.MaxPooling2D | layers.AveragePooling2D):
            radius += (max(layer.pool_size) - 1) * jump
            jump *= max(layer.strides)
        elif isinstance(layer, layers.UpSampling2D):
            size = max(layer.size)
            jump /= size
            radius += (size - 1) * jump
        elif isinstance(
            layer, layers.Concatenate | layers.Add | layers.Multiply | layers.Activation
        ):
            pass
        else:
            raise ValueError(f"cannot profile layer {layer.name} of class {type(layer).__name__}")
        divisor = max(divisor, jump)
        channels = int(layer.output.shape[-1])
        per_pixel = channels / (jump * jump)
        elements += per_pixel
        max_elements = max(max_elements, per_pixel)
        for t in as_list(layer.output):
            state[id(t)] = (radius, jump)
    out_radius = max(state[id(t)][0] for t in as_list(model.outputs))
    return ModelProfile(
        radius=int(math.ceil(out_radius)),
        divisor=int(divisor),
        elements_per_pixel=elements,
        max_tensor_elements_per_pixel=max_elements,
        in_channels=int(model.inputs[0].shape[-1]),
        out_channels=int(model.outputs[0].shape[-1]),
    )


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _round_down(value: int, multiple: int) -> int:
    return (value // multiple) * multiple


@dataclass(frozen=True)
class Blend:
    """How neighbouring tiles share pixels: ``overlap = 2 * margin + ramp`` (divisor-aligned)."""

    overlap: int
    margin: int
    ramp: int


def default_blend(profile: ModelProfile, ramp: int = DEFAULT_RAMP) -> Blend:
    """The overlap that makes tiled output equal untiled output: margins cover the receptive field."""
    margin = profile.radius
    overlap = _round_up(2 * margin + ramp, profile.divisor)
    # Spend the rounding on the ramp: a wider blend is free.
    return Blend(overlap=overlap, margin=margin, ramp=overlap - 2 * margin)


def blend_for_overlap(overlap: int, profile: ModelProfile, ramp: int = DEFAULT_RAMP) -> Blend:
    """The blend for a user-chosen overlap: ramp first (it hides seams), the rest as margins."""
    if overlap < 0:
        raise SettingsError(f"tile_overlap is {overlap}; use auto or a number of pixels >= 0")
    overlap = _round_up(overlap, profile.divisor)
    ramp = min(ramp, overlap)
    margin = (overlap - ramp) // 2
    return Blend(overlap=overlap, margin=margin, ramp=overlap - 2 * margin)


def pad_to_divisor(image: np.ndarray, divisor: int) -> np.ndarray:
    """Pad an HWC image at the bottom and right to a multiple of ``divisor``.

    Reflection keeps the padded border looking like image content (zeros would be an edge the
    network never saw in training); an axis too short to reflect is edge-extended instead.
    """
    h, w = image.shape[:2]
    ph, pw = (-h) % divisor, (-w) % divisor
    if not (ph or pw):
        return image
    out = image
    if ph:
        out = np.pad(out, ((0, ph), (0, 0), (0, 0)), mode="reflect" if h > ph else "edge")
    if pw:
        out = np.pad(out, ((0, 0), (0, pw), (0, 0)), mode="reflect" if w > pw else "edge")
    return out


def pad_to_divisor_tf(images, divisor: int):
    """:func:`pad_to_divisor` for an NHWC tensor (reflection only: each padded side must be
    shorter than the frame, i.e. frames of at least ``divisor`` pixels)."""
    import tensorflow as tf

    h, w = tf.shape(images)[1], tf.shape(images)[2]
    ph, pw = (divisor - h % divisor) % divisor, (divisor - w % divisor) % divisor
    return tf.pad(images, [[0, 0], [0, ph], [0, pw], [0, 0]], mode="REFLECT")


def _starts(length: int, tile: int, overlap: int, divisor: int) -> list[int]:
    """Tile origins along one axis: evenly spread, divisor-aligned, overlapping >= ``overlap``."""
    if tile >= length:
        return [0]
    span = (length - tile) // divisor  # last origin, in divisor units
    step_max = (tile - overlap) // divisor  # largest step that keeps the overlap
    gaps = -(-span // step_max)
    # Rounding i * span / gaps gives steps of floor or ceil(span / gaps) <= step_max.
    return [round(i * span / gaps) * divisor for i in range(gaps + 1)]


def _ramp_weights(n: int, margin: int, ramp: int, lead: bool, trail: bool) -> np.ndarray:
    """1-D weights of a tile: 0 in the margins of shared edges, raised cosine, then 1."""
    w = np.ones(n, np.float64)
    d = np.arange(n, dtype=np.float64)
    if ramp > 0:
        # Pixel centres (+0.5) keep every weight inside the ramp strictly positive.
        rise = 0.5 - 0.5 * np.cos(np.pi * np.clip((d - margin + 0.5) / ramp, 0.0, 1.0))
    else:
        rise = (d >= margin).astype(np.float64)
    if lead:
        w *= rise
    if trail:
        w *= rise[::-1]
    return w.astype(np.float32)


@dataclass(frozen=True)
class TilePlan:
    """Where the tiles of one (padded) frame go and how they are weighted."""

    height: int  #: padded frame height (a multiple of the divisor)
    width: int
    tile_height: int
    tile_width: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]
    blend: Blend

    @property
    def count(self) -> int:
        return len(self.ys) * len(self.xs)

    @property
    def tiled(self) -> bool:
        return self.count > 1

    def origins(self) -> Iterator[tuple[int, int]]:
        for y in self.ys:
            for x in self.xs:
                yield y, x

    def weights(self, y: int, x: int) -> np.ndarray:
        """The (tile_height, tile_width) blend weight of the tile at ``(y, x)``."""
        b = self.blend
        wy = _ramp_weights(
            self.tile_height, b.margin, b.ramp, y > 0, y + self.tile_height < self.height
        )
        wx = _ramp_weights(
            self.tile_width, b.margin, b.ramp, x > 0, x + self.tile_width < self.width
        )
        return wy[:, None] * wx[None, :]

    def overhead(self) -> float:
        """Pixels computed per frame pixel (1.0 untiled)."""
        return self.count * self.tile_height * self.tile_width / (self.height * self.width)


def min_tile_size(blend: Blend, divisor: int) -> int:
    """Smallest tile that has a non-empty core after margins and ramps on both sides."""
    return _round_up(2 * (blend.margin + blend.ramp) + divisor, divisor)


def plan_tiles(
    height: int, width: int, tile_size: int | tuple[int, int], blend: Blend, divisor: int
) -> TilePlan:
    """Plan tiles of at most ``tile_size`` (square, or ``(height, width)``) over a padded frame.

    ``height`` and ``width`` must be multiples of ``divisor``; tile sides are rounded down to one
    and clamped to the frame. A frame that fits in one tile is one tile (untiled inference).
    """
    if height % divisor or width % divisor:
        raise ValueError(f"padded frame {width}x{height} is not a multiple of {divisor}")
    want_h, want_w = tile_size if isinstance(tile_size, tuple) else (tile_size, tile_size)
    th = min(max(divisor, _round_down(int(want_h), divisor)), height)
    tw = min(max(divisor, _round_down(int(want_w), divisor)), width)
    smallest = min_tile_size(blend, divisor)
    if (th < height and th < smallest) or (tw < width and tw < smallest):
        raise SettingsError(
            f"tile_size {tile_size} is too small for a tile_overlap of {blend.overlap} pixels; "
            f"use a tile_size of {smallest} or more (or auto)"
        )
    ys = _starts(height, th, blend.overlap, divisor)
    xs = _starts(width, tw, blend.overlap, divisor)
    return TilePlan(height, width, th, tw, tuple(ys), tuple(xs), blend)


_CGROUP_FS = Path("/sys/fs/cgroup")
#: cgroup v1 reports "no limit" as a huge number (LONG_MAX rounded to a page).
_NO_LIMIT = 2**60


def _limit_minus_usage(folder: Path, limit_name: str, usage_name: str) -> int | None:
    try:
        text = (folder / limit_name).read_text().strip()
        if text == "max":
            return None
        limit = int(text)
        if limit >= _NO_LIMIT:
            return None
        usage = int((folder / usage_name).read_text().strip())
    except (OSError, ValueError):
        return None
    # Usage counts page cache; inactive file pages are reclaimed before the OOM killer acts.
    try:
        for line in (folder / "memory.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key in ("inactive_file", "total_inactive_file"):
                usage -= int(value)
                break
    except (OSError, ValueError):
        pass
    return max(0, limit - max(usage, 0))


def cgroup_free_bytes(
    proc_cgroup: str | os.PathLike = "/proc/self/cgroup", root: Path = _CGROUP_FS
) -> int | None:
    """Memory left under the tightest cgroup limit on this process, or None when unlimited.

    A SLURM job (``--mem``), a container or a systemd slice caps memory below what /proc/meminfo
    reports as available, and exceeding the cap means the OOM killer. Both cgroup v1 and v2 are
    read, walking up from the process's own group, since SLURM puts the limit on the job and the
    process in a step below it.
    """
    try:
        lines = Path(proc_cgroup).read_text().splitlines()
    except OSError:
        return None
    free: int | None = None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        if controllers == "":
            base, names = root, ("memory.max", "memory.current")
        elif "memory" in controllers.split(","):
            base, names = root / "memory", ("memory.limit_in_bytes", "memory.usage_in_bytes")
        else:
            continue
        folder = base / rel.strip("/")
        while True:
            left = _limit_minus_usage(folder, *names)
            if left is not None:
                free = left if free is None else min(free, left)
            if folder == base or base not in folder.parents:
                break
            folder = folder.parent
    return free


def free_memory_bytes(use_gpu: bool) -> tuple[int, str]:
    """Memory inference may plan with, and where it comes from (for the notice).

    GPU: free memory reported by ``nvidia-smi`` plus what TensorFlow's allocator already holds
    (``tf.config.experimental.get_memory_info``: it is reused for our tensors). CPU:
    ``MemAvailable`` from /proc/meminfo, or what the job's cgroup limit leaves if that is less.
    """
    from ccat_tf.resources import available_memory_bytes, gpu_free_memory_bytes

    if use_gpu:
        free = gpu_free_memory_bytes()
        if free:
            held = 0
            try:
                import tensorflow as tf

                held = int(tf.config.experimental.get_memory_info("GPU:0")["current"])
            except (ImportError, ValueError, RuntimeError):
                pass
            total = free[0] + held
            return int(total * _GPU_MEMORY_SHARE), f"{total / 2**30:.1f} GiB free on GPU 0"
    avail = available_memory_bytes()
    source = f"{avail / 2**30:.1f} GiB of available RAM"
    capped = cgroup_free_bytes()
    if capped is not None and capped < avail:
        avail = capped
        source = f"{avail / 2**30:.1f} GiB left under this job's memory limit (cgroup)"
    return int(avail * _CPU_MEMORY_SHARE), source


def auto_tile_shape(
    profile: ModelProfile,
    height: int,
    width: int,
    blend: Blend,
    *,
    batch_tiles: int = 1,
    budget_bytes: int,
    dtype_bytes: int = 4,
) -> tuple[int, int]:
    """``(tile_height, tile_width)`` for a padded frame: the cheapest tiling that fits memory.

    The whole frame when it fits (untiled is fastest and exact). Otherwise ``batch_tiles`` tiles
    must fit in ``budget_bytes`` together, and among the divisor-aligned shapes that do, the one
    computing the fewest pixels (overlaps included) wins; rectangular tiles often beat square
    ones, e.g. full-height strips of a 2.35:1 frame need no horizontal seams. Never below
    :func:`min_tile_size`: when memory is that short, the smallest working tile is used and the
    OS is trusted with the rest.
    """
    d = profile.divisor
    per_pixel = profile.bytes_per_pixel(dtype_bytes)
    # Single tensors beyond int32 indexing fail inside TensorFlow whatever the free memory.
    max_pixels_tensor = _MAX_TENSOR_ELEMENTS / profile.max_tensor_elements_per_pixel
    whole = height * width
    if whole * per_pixel <= budget_bytes and whole <= max_pixels_tensor:
        return height, width
    max_pixels = min(budget_bytes / per_pixel / max(1, batch_tiles), max_pixels_tensor)
    smallest = min_tile_size(blend, d)
    best: tuple[tuple[int, int], tuple[int, int]] | None = None
    for th in range(min(smallest, height), height + 1, d):
        tw = min(width, _round_down(int(max_pixels // th), d))
        if tw < min(smallest, width):
            break  # taller tiles only get narrower from here
        plan = plan_tiles(height, width, (th, tw), blend, d)
        key = (plan.count * plan.tile_height * plan.tile_width, plan.count)
        if best is None or key < best[0]:
            best = (key, (plan.tile_height, plan.tile_width))
    if best is None:
        return min(smallest, height), min(smallest, width)
    return best[1]


def predict_tiled(
    predict: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    plan: TilePlan,
    out_channels: int,
    batch_tiles: int = 1,
) -> np.ndarray:
    """Run ``predict`` (NHWC float32 -> NHWC float32) over a padded image by ``plan``.

    Tiles go through ``predict`` ``batch_tiles`` at a time (all tiles have one shape, so batches
    stack). Returns the blended (height, width, out_channels) float32 result.
    """
    if not plan.tiled:
        return np.asarray(predict(image[None]), dtype=np.float32)[0]
    acc = np.zeros((plan.height, plan.width, out_channels), np.float32)
    wsum = np.zeros((plan.height, plan.width), np.float32)
    th, tw = plan.tile_height, plan.tile_width
    origins = list(plan.origins())
    for i in range(0, len(origins), max(1, batch_tiles)):
        chunk = origins[i : i + max(1, batch_tiles)]
        batch = np.stack([image[y : y + th, x : x + tw] for y, x in chunk])
        out = np.asarray(predict(batch), dtype=np.float32)
        for (y, x), tile in zip(chunk, out, strict=True):
            w = plan.weights(y, x)
            acc[y : y + th, x : x + tw] += tile * w[..., None]
            wsum[y : y + th, x : x + tw] += w
    # Every pixel lies in some tile's core (the planner guarantees overlap >= 2 * margin + ramp),
    # so wsum > 0; the guard only protects against a hand-made plan.
    acc /= np.maximum(wsum, 1e-12)[..., None]
    return acc
