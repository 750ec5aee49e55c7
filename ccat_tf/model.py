"""A trained model: the Keras network, its :class:`~ccat_tf.model_info.ModelInfo`, and the pixel
recipe that applies it.

:meth:`Model.predict` is the one way from frame pixels to output pixels, used by inference,
training previews and validation: encode the input with the stored training transform ->
reflect-pad to the divisor -> run the network, whole or in blended tiles
(:mod:`ccat_tf.tiling`; automatic tile size and overlap) -> crop the padding -> decode the output
transform. :meth:`Model.pixel_function` is the same recipe as one TensorFlow function (untiled),
which the exported SavedModel's ``serve_pixels`` and ONNX ``--pixels`` graphs carry; each step's
numpy and TensorFlow forms sit side by side in :mod:`ccat_tf.transform` and :mod:`ccat_tf.tiling`,
and a test holds every path to the same pixels. Contact sheets show training crops, which are
already encoded and divisor-sized: they use the network step alone (:meth:`Model.network_output`).

``open_model(path)`` loads a .cat (every safety check of :mod:`ccat_tf.catfile`); training wraps
its live network as ``Model(net, info)`` without a file.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ccat_tf import ensemble, tiling, transform
from ccat_tf.errors import ModelFileError
from ccat_tf.model_info import ModelInfo
from ccat_tf.models import (
    POSITION_CHANNELS,
    Architecture,
    coordinate_channels,
    coordinate_channels_tf,
)

#: What validation PSNR measures: output values as a user sees them, clipped to 0..peak.
#: Display-referred channels (and alpha, mattes) have peak 1; scene-linear colour of an HDR data
#: set (log-encoded in training) is clipped at 16 (four stops over diffuse white), its peak.
DISPLAY_PEAK = 1.0
SCENE_LINEAR_PEAK = 16.0


def output_psnr(output: np.ndarray, truth: np.ndarray, kinds) -> float:
    """PSNR in dB of output pixels against ground-truth pixels (last axis: channels).

    Each channel is clipped to 0..its peak (:data:`SCENE_LINEAR_PEAK` for ``log`` channels,
    :data:`DISPLAY_PEAK` otherwise) and divided by it, so every channel counts on 0..1; the
    PSNR is then ``10 * log10(1 / MSE)``.
    """
    peaks = np.array([SCENE_LINEAR_PEAK if k == "log" else DISPLAY_PEAK for k in kinds], np.float64)
    a = np.clip(np.asarray(output, np.float64), 0.0, peaks) / peaks
    b = np.clip(np.asarray(truth, np.float64), 0.0, peaks) / peaks
    mse = float(np.mean((a - b) ** 2))
    return 10.0 * float(np.log10(1.0 / mse)) if mse > 0 else float("inf")


@dataclass(frozen=True)
class TileSettings:
    """How :meth:`Model.predict` cuts frames: ``auto`` sizes from free memory and overlaps from
    the receptive field (tiled output then equals untiled output)."""

    tile_size: int | tuple[int, int] | str = "auto"  #: square, (height, width) or auto
    tile_overlap: int | str = "auto"
    batch_tiles: int = 1


class Model:
    """A Keras network with its metadata and its one frame-in, frame-out method."""

    def __init__(
        self,
        net,
        info: ModelInfo,
        *,
        device: str | None = None,
        tiles: TileSettings | None = None,
        precision: str = "float32",
        source: str | os.PathLike = "model",
        self_ensemble: int = 1,
    ):
        """``device`` (``/CPU:0``, ``/GPU:0``) runs the network as one traced function there;
        None calls it eagerly where it lives (a training network under its strategy).
        ``self_ensemble``: views of each tile averaged (:mod:`ccat_tf.ensemble`); 1: the plain
        network."""
        n_in, n_out = int(net.inputs[0].shape[-1]), int(net.outputs[0].shape[-1])
        want_in = network_inputs(info)
        if (n_in, n_out) != (want_in, len(info.output_channels)):
            raise ModelFileError(
                f"{source}: the network has {n_in} inputs and {n_out} outputs but its metadata "
                f"asks for {want_in} and {len(info.output_channels)}; the file is inconsistent"
            )
        self.net, self.info, self.device, self.precision = net, info, device, precision
        self.self_ensemble = self_ensemble
        self.source = os.fspath(source)
        self.tiles = tiles or TileSettings()
        self.profile = tiling.profile_model(net)
        self.divisor = max(info.divisor, self.profile.divisor)
        if self.tiles.tile_overlap == "auto":
            self.blend = tiling.default_blend(self.profile)
        else:
            self.blend = tiling.blend_for_overlap(int(self.tiles.tile_overlap), self.profile)
        self.plans: dict[tuple[int, int], tiling.TilePlan] = {}  #: by frame (height, width)
        self._coords: dict[tuple[int, ...], np.ndarray] = {}  #: the last frame size's
        self.budget_source = ""  #: where the automatic tile size's memory figure came from
        self._budget: int | None = None
        self._saved: Model | None = None  #: the float32 twin :meth:`as_saved` keeps
        self._call = self._network_call()

    # ---- the recipe ------------------------------------------------------------------------
    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """One frame, HWC float32 as read from a file -> the output frame, HWC float32."""
        h, w = pixels.shape[:2]
        encoded = transform.encode(pixels, self.info.input_transform)
        out = tiling.predict_tiled(
            self.network_output,
            self.network_input(encoded),
            self.plan_for(h, w),
            len(self.info.output_channels),
            self.tiles.batch_tiles,
        )
        return transform.decode(out[:h, :w], self.info.output_transform)

    def network_input(self, encoded: np.ndarray) -> np.ndarray:
        """An encoded frame as the network takes it: reflect-padded to the divisor, then (for a
        position-aware network) its frame coordinates, continued into the padding. The
        coordinates depend only on the frame's size: made once per size."""
        padded = tiling.pad_to_divisor(encoded, self.divisor)
        if not self.info.position:
            return padded
        key = (padded.shape[0], padded.shape[1], encoded.shape[0], encoded.shape[1])
        if key not in self._coords:
            self._coords = {key: coordinate_channels(key[0], key[1], frame_hw=key[2:])}
        return np.concatenate([padded, self._coords[key]], axis=-1)

    def network_output(self, batch: np.ndarray) -> np.ndarray:
        """The network step alone: NHWC training space in (H, W multiples of the divisor), out.
        A position-aware network's batch carries its coordinate channels (training crops do).
        With ``self_ensemble`` above 1, the average of that many views of the batch."""
        if self.self_ensemble > 1:
            return ensemble.averaged(self._network_pass, batch, self.self_ensemble)
        return self._network_pass(batch)

    def _network_pass(self, batch: np.ndarray) -> np.ndarray:
        if self.device is None:
            return np.asarray(self.net(np.asarray(batch, np.float32), training=False))
        import tensorflow as tf

        with tf.device(self.device):
            return self._call(tf.constant(batch, tf.float32)).numpy()

    def pixel_function(self):
        """:meth:`predict` (untiled) as a TensorFlow function on NHWC float32 pixels, for graphs.

        Frames must be at least ``divisor`` pixels high and wide (the padding reflects).
        """
        import tensorflow as tf

        info, net, divisor = self.info, self.net, self.divisor

        def pixels(x):
            h, w = tf.shape(x)[1], tf.shape(x)[2]
            encoded = transform.encode_tf(x, info.input_transform)
            padded = tiling.pad_to_divisor_tf(encoded, divisor)
            if info.position:
                padded = tf.concat([padded, coordinate_channels_tf(padded, (h, w))], axis=-1)
            y = net(padded, training=False)
            return transform.decode_tf(y[:, :h, :w, :], info.output_transform)

        return pixels

    # ---- tiles -----------------------------------------------------------------------------
    def plan_for(self, height: int, width: int) -> tiling.TilePlan:
        """The tile plan for frames of this size (made once per size)."""
        if (height, width) not in self.plans:
            ph, pw = height + (-height) % self.divisor, width + (-width) % self.divisor
            if self.tiles.tile_size == "auto":
                size = tiling.auto_tile_shape(
                    self.profile,
                    ph,
                    pw,
                    self.blend,
                    batch_tiles=self.tiles.batch_tiles,
                    budget_bytes=self._memory_budget(),
                    dtype_bytes=4 if self.precision == "float32" else 3,  # mixed: ~2/3 measured
                )
            elif isinstance(self.tiles.tile_size, tuple):
                size = self.tiles.tile_size
            else:
                size = int(self.tiles.tile_size)
            self.plans[(height, width)] = tiling.plan_tiles(ph, pw, size, self.blend, self.divisor)
        return self.plans[(height, width)]

    def _memory_budget(self) -> int:
        if self._budget is None:
            if self.device is None:
                import tensorflow as tf

                on_gpu = bool(tf.config.list_physical_devices("GPU"))
            else:
                on_gpu = self.device != "/CPU:0"
            self._budget, self.budget_source = tiling.free_memory_bytes(on_gpu)
        return self._budget

    # ---- variants and files ----------------------------------------------------------------
    def half_precision(self, policy: str = "mixed_float16") -> Model:
        """The same model computing in float16 (or ``mixed_bfloat16``: bfloat16), its output
        layer in float32. Raises ValueError with the reason when the network is not a preset
        :func:`ccat_tf.models.build_model` makes."""
        import tensorflow as tf

        from ccat_tf.models import PRESETS

        if self.info.model_size not in PRESETS:
            raise ValueError(f"unknown model_size {self.info.model_size!r}")
        with tf.device(self.device) if self.device else contextlib.nullcontext():
            half = self._rebuilt(policy)
        return Model(
            half,
            self.info,
            device=self.device,
            tiles=self.tiles,
            precision=policy,
            source=self.source,
            self_ensemble=self.self_ensemble,
        )

    def save(self, path: str | os.PathLike, *, weights_dtype: str = "float32") -> Path:
        """Write the network and its metadata as a .cat, atomically."""
        from ccat_tf import catfile

        net = self.as_saved().net  # the float32 network, however training computed
        return catfile.save_cat(path, net, self.info.to_json(), weights_dtype=weights_dtype)

    def as_saved(self) -> Model:
        """This model as a .cat holds it: itself when its network computes in float32, else
        the float32 network with this one's weights as they are now (made once, refreshed at
        each call), so validation and previews score what the file will give."""
        if all(layer.dtype_policy.name == "float32" for layer in self.net.layers):
            return self
        if self._saved is None:
            self._saved = Model(
                self._rebuilt(None), self.info, tiles=self.tiles, source=self.source
            )
        else:
            self._saved.net.set_weights(self.net.get_weights())
        return self._saved

    def _rebuilt(self, dtype_policy: str | None):
        """The same network (same weights) built with another Keras dtype policy."""
        from ccat_tf.models import build_model

        net = build_model(
            len(self.info.input_channels),
            len(self.info.output_channels),
            architecture(self.info),
            residual=self.info.residual,
            dtype_policy=dtype_policy,
        )
        net.set_weights(self.net.get_weights())
        return net

    def _network_call(self):
        if self.device is None:
            return None
        import tensorflow as tf

        net = self.net
        with tf.device(self.device):
            # One trace for every tile and frame size: no retracing when sizes change.
            return tf.function(
                lambda x: net(x, training=False),
                input_signature=[
                    tf.TensorSpec([None, None, None, network_inputs(self.info)], tf.float32)
                ],
            )


def network_inputs(info: ModelInfo) -> int:
    """The network's input channels: the image's, then the frame coordinates if position-aware."""
    return len(info.input_channels) + (POSITION_CHANNELS if info.position else 0)


def architecture(info: ModelInfo) -> Architecture:
    return Architecture(
        info.model_size,
        position=info.position,
        colour=info.colour,
        colour_input=info.colour_input,
        position_fit_only=info.position_fit_only,
    )


def open_model(
    path: str | os.PathLike,
    *,
    device: str | None = None,
    tiles: TileSettings | None = None,
    self_ensemble: int = 1,
) -> Model:
    """Load a .cat (or a Data Directory's newest intact checkpoint) as a :class:`Model`.

    Every check of :func:`ccat_tf.catfile.load_cat` runs first, then the metadata's
    (:meth:`ModelInfo.from_json`); a bad file is one line of ModelFileError. ``device`` places
    the network and ``self_ensemble`` averages views of it (see :class:`Model`).
    """
    from ccat_tf import catfile

    if Path(path).is_dir():
        path = catfile.latest_good_checkpoint(path)
    if device is None:
        net, meta = catfile.load_cat(path)
    else:
        import tensorflow as tf

        with tf.device(device):
            net, meta = catfile.load_cat(path)
    info = ModelInfo.from_json(meta, path)
    return Model(net, info, device=device, tiles=tiles, source=path, self_ensemble=self_ensemble)


def read_info(path: str | os.PathLike) -> ModelInfo:
    """A .cat's checked metadata, without loading the network (no TensorFlow needed)."""
    from ccat_tf import catfile

    return ModelInfo.from_json(catfile.read_metadata(path), path)
