"""Reading and writing frames with OpenImageIO.

Arrays are float32 numpy, shape ``(H, W, C)``, covering the image's *display window* (the
"format" in Nuke). Values are as stored in the file: 8/16-bit integer formats (PNG, TIFF, DPX,
JPEG) are normalised to 0..1 by OpenImageIO, half and float formats (EXR, float TIFF) keep their
scene-linear values, including values above 1 and below 0. No colour conversion is done.

Channels are chosen by name (:func:`resolve_channels`): ``rgb``, ``rgba``, ``alpha`` or a list of
channel names such as ``["beauty.R", "beauty.G", "beauty.B"]``. Greyscale files are accepted
where they make sense: a one-channel (``Y``) or ``Y``+``A`` image gives its grey channel three
times for ``rgb``, and a one-channel image is the matte for ``alpha``.

Every problem a user can fix is a one-line :class:`~ccat_tf.errors.CcatError` naming the file.
Only the first subimage (EXR part) of a file is read.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass

import numpy as np
import OpenImageIO as oiio

from ccat_tf import native_stderr, regular_file
from ccat_tf.atomic import atomic_path, check_free_space, full_disk_error
from ccat_tf.errors import DataDirectoryError, DataSetError, SettingsError

SUPPORTED_EXTENSIONS: tuple[str, ...] = (".exr", ".dpx", ".tif", ".tiff", ".png", ".jpg", ".jpeg")

#: ``data_type`` values each output extension accepts; the first one is the ``auto`` choice.
#: ``uint10`` is 10-bit DPX (the VFX standard, and DPX's ``auto``); ``uint16`` DPX is 16-bit.
DATA_TYPES: dict[str, tuple[str, ...]] = {
    ".exr": ("half", "float"),
    ".dpx": ("uint10", "uint16", "uint8"),
    ".tif": ("uint16", "uint8", "float"),
    ".tiff": ("uint16", "uint8", "float"),
    ".png": ("uint8", "uint16"),
    ".jpg": ("uint8",),
    ".jpeg": ("uint8",),
}

#: How many channels each format can store.
_CHANNEL_LIMITS: dict[str, tuple[int, ...] | None] = {
    ".exr": None,
    ".tif": None,
    ".tiff": None,
    ".dpx": (1, 3, 4),
    ".png": (1, 2, 3, 4),
    ".jpg": (1, 3),
    ".jpeg": (1, 3),
}

EXR_COMPRESSIONS = ("none", "rle", "zips", "zip", "piz", "pxr24", "b44", "b44a", "dwaa", "dwab")

# Logical channels and the (lower-case) names that stand for them in files.
_ALIASES: dict[str, tuple[str, ...]] = {
    "R": ("r", "red", "rgba.r", "rgba.red"),
    "G": ("g", "green", "rgba.g", "rgba.green"),
    "B": ("b", "blue", "rgba.b", "rgba.blue"),
    "A": ("a", "alpha", "rgba.a", "rgba.alpha"),
}
_KEYWORDS: dict[str, tuple[str, ...]] = {
    "rgb": ("R", "G", "B"),
    "rgba": ("R", "G", "B", "A"),
    "alpha": ("A",),
    "a": ("A",),
    "r": ("R",),
    "red": ("R",),
    "g": ("G",),
    "green": ("G",),
    "b": ("B",),
    "blue": ("B",),
}
_GREY_NAMES = ("y", "l", "luminance", "gray", "grey")
_CHANNEL_SPEC_HELP = "use rgb, rgba, alpha or a list of channel names"


@dataclass
class ImageInfo:
    """What the header of an image says. Windows are ``(x, y, width, height)``."""

    path: str
    width: int  #: display window width (Nuke's format width)
    height: int  #: display window height
    channel_names: list[str]
    format: str  #: OIIO type name of the pixels: 'half', 'float', 'uint8', 'uint16', ...
    data_window: tuple[int, int, int, int]
    display_window: tuple[int, int, int, int]
    pixel_aspect: float = 1.0
    file_format: str = ""  #: OIIO format name: 'openexr', 'png', 'tiff', 'dpx', 'jpeg'

    @property
    def nchannels(self) -> int:
        return len(self.channel_names)


# --------------------------------------------------------------------------------------------
# errors


def _clear_oiio_errors() -> None:
    """Drop any error OIIO kept from an earlier call, so it cannot leak into our next message."""
    oiio.geterror(True)


def _one_line(reason: str, path: str) -> str:
    """OIIO's (possibly multi-line, repetitive) error text as one short line without the path."""
    lines: list[str] = []
    base = os.path.basename(path)
    for raw in reason.splitlines():
        line = raw
        for p in (path, base):
            line = line.replace(f' ("{p}")', "").replace(f" ({p})", "").replace(f'"{p}"', "file")
        line = " ".join(line.split()).rstrip(".")
        if line and line not in lines:
            lines.append(line)
    text = " / ".join(lines) or "unknown error"
    return text if len(text) <= 240 else text[:237] + "..."


def _read_error(
    path: str, reason: str, fix: str = "check the file is a complete image"
) -> DataSetError:
    return DataSetError(f"cannot read frame {path}: {reason}; {fix}")


def _check_readable(path: str) -> None:
    """Clear, specific errors for the common cases before OIIO gives a generic one.

    A FIFO, a device or a symbolic link to one (``/dev/zero``) is refused before it is opened:
    OIIO would wait for a writer forever, or read without end.
    """
    what = regular_file.problem(path)
    if what == "it does not exist":
        raise _read_error(path, "the file does not exist", "check the path and the frame numbers")
    if what == "it is a folder, not a file":
        raise _read_error(path, "it is a folder, not an image", "check the path")
    if what is not None:
        raise _read_error(path, what, "give an image file")
    try:
        size = os.path.getsize(path)
    except OSError as err:
        raise _read_error(path, err.strerror or str(err), "check the file's permissions") from None
    if size == 0:
        raise _read_error(path, "the file is empty (0 bytes)", "render or copy the frame again")
    if not os.access(path, os.R_OK):
        raise _read_error(path, "permission denied", "make the file readable")


def _open(path: str) -> oiio.ImageInput:
    _check_readable(path)
    _clear_oiio_errors()
    # Pixels as stored: without this OIIO premultiplies PNG/TIFF colour by an unassociated alpha.
    config = oiio.ImageSpec()
    config.attribute("oiio:UnassociatedAlpha", 1)
    inp = oiio.ImageInput.open(path, config)
    if inp is None:
        message = oiio.geterror(True)
        many = re.search(r"(\d+) channels exceeds \"?limits:channels", message)
        if many or "limits:channels" in message:
            # OIIO's own limit (MAX_CHANNELS): say the count, not a global attribute to raise.
            count = f"{many.group(1)} channels" if many else f"more than {MAX_CHANNELS} channels"
            raise _read_error(
                path,
                f"it has {count} (at most {MAX_CHANNELS})",
                "write the channels the network needs to a file of their own",
            )
        raise _read_error(path, _one_line(message, path))
    return inp


# --------------------------------------------------------------------------------------------
# header


def _info_from_spec(path: str, spec: oiio.ImageSpec, file_format: str) -> ImageInfo:
    return ImageInfo(
        path=path,
        width=int(spec.full_width),
        height=int(spec.full_height),
        channel_names=[str(n) for n in spec.channelnames],
        format=str(spec.format),
        data_window=(int(spec.x), int(spec.y), int(spec.width), int(spec.height)),
        display_window=(
            int(spec.full_x),
            int(spec.full_y),
            int(spec.full_width),
            int(spec.full_height),
        ),
        pixel_aspect=float(spec.get_float_attribute("PixelAspectRatio", 1.0)) or 1.0,
        file_format=file_format,
    )


#: The largest frame read: 16384x16384 (float32 RGB is 3 GiB). A header claiming more (a
#: decompression bomb, or a damaged header) is refused before any pixel is allocated.
MAX_PIXELS = 2**28
#: More channels than any real frame has (EXR layers included); a damaged header may claim more.
MAX_CHANNELS = 1024


def _check_supported(path: str, spec: oiio.ImageSpec) -> None:
    if spec.deep:
        raise _read_error(
            path, "it is a deep image", "flatten it (e.g. DeepToImage) and write it again"
        )
    if spec.depth > 1:
        raise _read_error(path, "it is a volume image", "write a 2D image")
    if spec.full_width <= 0 or spec.full_height <= 0 or spec.nchannels <= 0:
        raise _read_error(path, "it has no pixels or no channels")
    for what, (w, h) in (
        ("data window", (spec.width, spec.height)),
        ("display window", (spec.full_width, spec.full_height)),
    ):
        if w * h > MAX_PIXELS:
            raise _read_error(
                path,
                f"its {what} is {w}x{h}, more than the {MAX_PIXELS // 2**20} million pixels "
                "ccat_tf reads (e.g. 16384x16384)",
                "reformat or crop it",
            )
    if spec.nchannels > MAX_CHANNELS:
        raise _read_error(
            path, f"it has {spec.nchannels} channels (at most {MAX_CHANNELS})", "write fewer"
        )


def image_info(path: str | os.PathLike) -> ImageInfo:
    """Read only the header of ``path``. Raises :class:`DataSetError` if it is not an image."""
    path = os.fspath(path)
    inp = _open(path)
    try:
        spec = inp.spec()
        _check_supported(path, spec)
        return _info_from_spec(path, spec, inp.format_name())
    finally:
        inp.close()
        _clear_oiio_errors()


# --------------------------------------------------------------------------------------------
# channels


def _normalise_spec(spec) -> tuple[list[str], bool]:
    """``(wanted names, from_keyword)``: keywords become logical names R/G/B/A."""
    if isinstance(spec, str):
        text = spec.strip()
        if "," in text:
            items = [t.strip() for t in text.split(",") if t.strip()]
            if not items:
                raise SettingsError(f"channels {spec!r} name no channels; {_CHANNEL_SPEC_HELP}")
            return items, False
        if not text:
            raise SettingsError(f"channels are empty; {_CHANNEL_SPEC_HELP}")
        if text.lower() in _KEYWORDS:
            return list(_KEYWORDS[text.lower()]), True
        return [text], False  # one channel by name, e.g. "Z" or "depth.Z"
    if (
        isinstance(spec, list | tuple)
        and spec
        and all(isinstance(s, str) and s.strip() for s in spec)
    ):
        return [s.strip() for s in spec], False
    raise SettingsError(f"channels {spec!r} are not a channel spec; {_CHANNEL_SPEC_HELP}")


def _logical(name: str) -> str | None:
    """'R', 'G', 'B' or 'A' if ``name`` stands for one of them (``red``, ``a``...), else None."""
    low = name.lower()
    for logical, aliases in _ALIASES.items():
        if low in aliases:
            return logical
    return None


def _find_logical(logical: str, available: list[str]) -> int | None:
    aliases = _ALIASES[logical]
    for alias in aliases:  # prefer the plainest name: "R" before "red" before "rgba.red"
        for i, name in enumerate(available):
            if name.lower() == alias:
                return i
    return None


def _grey_channel(available: list[str]) -> int | None:
    """The grey channel of a greyscale image: its only channel, ``Y``, or its only non-alpha one."""
    if len(available) == 1:
        return 0
    if any(_find_logical(c, available) is not None for c in ("R", "G", "B")):
        return None
    for i, name in enumerate(available):
        if name.lower() in _GREY_NAMES:
            return i
    non_alpha = [i for i, n in enumerate(available) if _logical(n) != "A"]
    return non_alpha[0] if len(non_alpha) == 1 else None


def _resolve(spec, available, path, setting) -> list[tuple[int, str]]:
    available = [str(n) for n in available]
    wanted, from_keyword = _normalise_spec(spec)
    alpha_only = [_logical(w) if not from_keyword else w for w in wanted] == ["A"]
    result: list[tuple[int, str]] = []
    for want in wanted:
        index: int | None = None
        name = want
        if not from_keyword:
            if want in available:  # exact first: "beauty.R", "Z"
                index = available.index(want)
            else:
                lower = [n.lower() for n in available]
                if want.lower() in lower:
                    index = lower.index(want.lower())
            if index is not None:
                result.append((index, available[index]))
                continue
        logical = want if from_keyword else _logical(want)
        if logical is not None:
            name = logical
            index = _find_logical(logical, available)
            if index is None and logical in ("R", "G", "B"):
                index = _grey_channel(available)
            if index is None and logical == "A" and alpha_only and len(available) == 1:
                index = 0  # a greyscale matte used as alpha
        if index is None:
            where = path if path is not None else "the image"
            has = ", ".join(available) if available else "no channels"
            raise DataSetError(
                f"{where} has no channel {name!r} (it has {has}); choose {setting} from those "
                "or fix the file"
            )
        result.append((index, name))
    return result


def resolve_channels(
    spec,
    available: list[str],
    *,
    path: str | os.PathLike | None = None,
    setting: str = "input_channels/output_channels",
) -> list[int]:
    """Indices into ``available`` for the channel ``spec``.

    ``spec``: ``rgb``, ``rgba``, ``alpha``/``a``, ``r``/``g``/``b``, one channel name, a
    comma-separated string or a list of channel names. Names match exactly first, then without
    regard to case; ``R``/``G``/``B``/``A`` also match ``red``/``green``/``blue``/``alpha``.
    A greyscale image (``Y`` or ``Y``+``A``) repeats its grey channel for R, G and B; a
    one-channel image serves as the alpha for ``alpha``. A channel that is not there raises
    :class:`DataSetError` naming ``path``, the channels it has and ``setting``.
    """
    where = os.fspath(path) if path is not None else None
    return [i for i, _ in _resolve(spec, available, where, setting)]


def channel_names_for(
    spec,
    available: list[str],
    *,
    path: str | os.PathLike | None = None,
    setting: str = "input_channels/output_channels",
) -> list[str]:
    """The names of the channels :func:`resolve_channels` picks, as the network sees them.

    Keywords give the logical names (``rgb`` -> ``['R', 'G', 'B']`` even when a greyscale ``Y``
    channel supplies them); listed names give the file's spelling (``beauty.R``).
    """
    where = os.fspath(path) if path is not None else None
    return [n for _, n in _resolve(spec, available, where, setting)]


# --------------------------------------------------------------------------------------------
# reading


def read_image_with_info(path: str | os.PathLike, channels="rgb") -> tuple[np.ndarray, ImageInfo]:
    """Pixels of ``channels`` over the display window, float32 ``(H, W, C)``, and the header.

    Pixels of the data window land at their offset in the display window; the rest is zero, and
    data outside the display window (overscan) is cropped away.
    """
    path = os.fspath(path)
    inp = _open(path)
    try:
        spec = inp.spec()
        _check_supported(path, spec)
        info = _info_from_spec(path, spec, inp.format_name())
        indices = resolve_channels(channels, info.channel_names, path=path)
        chbegin, chend = min(indices), max(indices) + 1
        _clear_oiio_errors()
        quiet = native_stderr.filtered() if info.file_format == "png" else contextlib.nullcontext()
        with quiet:  # libpng prints its own "libpng error:" line on a damaged file
            data = inp.read_image(0, 0, chbegin, chend, "float")
        # A truncated JPEG reads "successfully" with an error set: treat every error as fatal.
        reason = inp.geterror() or oiio.geterror(True)
        if data is None or reason:
            raise _read_error(path, _one_line(reason or "the pixels could not be read", path))
    finally:
        inp.close()
        _clear_oiio_errors()

    data = np.asarray(data, dtype=np.float32).reshape(spec.height, spec.width, chend - chbegin)
    pixels = data[:, :, [i - chbegin for i in indices]]

    dx, dy, dw, dh = info.data_window
    fx, fy, fw, fh = info.display_window
    if (dx, dy, dw, dh) == (fx, fy, fw, fh):
        return np.ascontiguousarray(pixels), info
    out = np.zeros((fh, fw, len(indices)), dtype=np.float32)
    x0, x1 = max(dx, fx), min(dx + dw, fx + fw)
    y0, y1 = max(dy, fy), min(dy + dh, fy + fh)
    if x0 < x1 and y0 < y1:
        out[y0 - fy : y1 - fy, x0 - fx : x1 - fx] = pixels[y0 - dy : y1 - dy, x0 - dx : x1 - dx]
    return out, info


def read_image(path: str | os.PathLike, channels="rgb") -> np.ndarray:
    """Pixels of ``channels`` over the display window as float32 ``(H, W, C)``."""
    return read_image_with_info(path, channels)[0]


# --------------------------------------------------------------------------------------------
# writing


def _extension(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise SettingsError(
            f"cannot write {path}: unsupported extension {ext or '(none)'!r}; use one of "
            + ", ".join(SUPPORTED_EXTENSIONS)
        )
    return ext


def _choose_data_type(path: str, ext: str, data_type: str) -> str:
    allowed = DATA_TYPES[ext]
    chosen = allowed[0] if data_type in (None, "", "auto") else str(data_type).lower()
    if chosen not in allowed:
        raise SettingsError(
            f"data_type {data_type!r} cannot be written to {path}; use auto or one of "
            + ", ".join(allowed)
            + f" for {ext} files"
        )
    return chosen


def _exr_compression(path: str, compression: str | None) -> str:
    if compression in (None, ""):
        return "zip"
    text = str(compression).lower()
    method, _, level = text.partition(":")
    if method not in EXR_COMPRESSIONS or (level and not level.isdigit()):
        raise SettingsError(
            f"compression {compression!r} is not an EXR compression for {path}; use one of "
            + ", ".join(EXR_COMPRESSIONS)
        )
    return text


class _WriteFailed(Exception):
    """OIIO reported an error while writing; ``args[0]`` is its message."""


def _write_pixels(tmp: str, pixels: np.ndarray, spec: oiio.ImageSpec) -> None:
    """Write ``pixels`` with OIIO to ``tmp`` (split out so tests can make it fail midway)."""
    _clear_oiio_errors()
    out = oiio.ImageOutput.create(tmp)
    if out is None:
        raise _WriteFailed(oiio.geterror(True) or "no writer for this format")
    try:
        # Never call write_image after a failed open: some OIIO writers crash on that.
        if not out.open(tmp, spec) or not out.write_image(pixels):
            raise _WriteFailed(out.geterror() or oiio.geterror(True) or "the writer failed")
    finally:
        out.close()
        _clear_oiio_errors()


#: Bytes per stored value of each output data type (for the free-space check).
_BYTES = {"uint8": 1, "uint10": 2, "uint16": 2, "half": 2, "float": 4}


def frame_bytes(height: int, width: int, channels: int, data_type: str) -> int:
    """The most a written frame can take: its raw pixels, half again for a compression that
    expands them (LZW on noise), and 16 KiB of headers."""
    return int(height * width * channels * _BYTES.get(data_type, 4) * 1.5) + 2**14


def write_image(
    path: str | os.PathLike,
    array: np.ndarray,
    channel_names: list[str],
    *,
    data_type: str = "auto",
    template: ImageInfo | None = None,
    compression: str | None = None,
) -> None:
    """Write a float ``(H, W, C)`` array to ``path`` atomically, the format chosen by extension.

    ``data_type`` (``auto`` picks the first of each list):

    * ``.exr``: ``half`` (default) or ``float``; values are written as they are (half turns
      values beyond +-65504 into infinity);
    * ``.dpx``: ``uint10`` (default, 10-bit), ``uint16`` or ``uint8``;
    * ``.tif``/``.tiff``: ``uint16`` (default), ``uint8`` or ``float``;
    * ``.png``: ``uint8`` (default) or ``uint16``; ``.jpg``/``.jpeg``: ``uint8``.

    Integer types clip values to 0..1 (NaN becomes 0) before quantising to the nearest code,
    since they cannot hold anything else. Pixels are written as given: colour is never
    premultiplied or divided by alpha. TIFF and DPX keep only R/G/B/A-style channel names (other
    names read back as ``channel4``...); use EXR to keep layer names. ``template`` (an :class:`ImageInfo`, usually of the input frame) gives an EXR
    its display window origin and pixel aspect ratio; the array must be the template's display
    window size and is written as both data and display window. Other formats take only its
    pixel aspect. ``compression`` is an OIIO compression name (EXR default ``zip``).

    The file appears complete or not at all; an existing file is replaced only on success.
    """
    path = os.fspath(path)
    ext = _extension(path)
    pixels = np.asarray(array, dtype=np.float32)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[0] == 0 or pixels.shape[1] == 0 or pixels.shape[2] == 0:
        raise ValueError(f"write_image needs a non-empty (H, W, C) array, got shape {pixels.shape}")
    height, width, nch = pixels.shape
    names = [str(n) for n in channel_names]
    if len(names) != nch:
        raise ValueError(f"write_image got {nch} channels but {len(names)} channel names {names}")
    limits = _CHANNEL_LIMITS[ext]
    if limits is not None and nch not in limits:
        counts = ", ".join(str(n) for n in limits)
        raise SettingsError(
            f"cannot write {path}: {ext} files hold {counts} channels, not {nch} "
            f"({', '.join(names)}); write .exr or .tif, or choose fewer channels"
        )
    dtype = _choose_data_type(path, ext, data_type)

    spec = oiio.ImageSpec(width, height, nch, "uint16" if dtype == "uint10" else dtype)
    spec.channelnames = tuple(names)
    # Write pixels as given: PNG/TIFF would otherwise un-premultiply colour by alpha.
    spec.attribute("oiio:UnassociatedAlpha", 1)
    if names and _logical(names[-1]) == "A":
        spec.alpha_channel = nch - 1
    if dtype.startswith("uint"):
        pixels = np.clip(np.nan_to_num(pixels, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    if dtype == "uint10":
        spec.attribute("oiio:BitsPerSample", 10)
        # OIIO makes 10-bit DPX by truncating 16-bit codes; snapping to the 10-bit grid first
        # makes that exact, so values round to the nearest code instead of always down.
        pixels = np.round(pixels * 1023.0) / 1023.0
    if ext == ".exr":
        spec.attribute("compression", _exr_compression(path, compression))
    elif compression:
        spec.attribute("compression", str(compression))
    if template is not None:
        if template.pixel_aspect and template.pixel_aspect != 1.0:
            spec.attribute("PixelAspectRatio", float(template.pixel_aspect))
        if ext == ".exr":
            fx, fy, fw, fh = template.display_window
            if (fw, fh) != (width, height):
                raise ValueError(
                    f"write_image: array is {width}x{height} but the template {template.path} "
                    f"display window is {fw}x{fh}"
                )
            spec.x, spec.y = fx, fy
            spec.full_x, spec.full_y, spec.full_width, spec.full_height = fx, fy, fw, fh
    pixels = np.ascontiguousarray(pixels, dtype=np.float32)

    # Image libraries fail badly on a full disk (a cut-short PNG or DPX reported as written,
    # libjpeg exiting the process): make sure an uncompressed frame fits before writing.
    need = frame_bytes(height, width, nch, dtype)
    check_free_space(path, need)
    with atomic_path(path) as tmp:
        try:
            _write_pixels(str(tmp), pixels, spec)
        except _WriteFailed as err:
            reason = _one_line(str(err.args[0]), str(tmp))
            full = full_disk_error(path, reason, need)
            if full is not None:
                raise full from None
            raise DataDirectoryError(
                f"cannot write {path}: {reason}; check the folder and the free disk space "
                "(nothing was overwritten)"
            ) from None


# --------------------------------------------------------------------------------------------
# helpers


def resize(array: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize a float ``(H, W, C)`` array to ``width`` x ``height`` with OIIO.

    Shrinking uses a box filter, i.e. each output pixel is the area average of the input pixels
    it covers: the mean is kept and HDR values cause no ringing (1/2 and 1/4 sizes are exact 2x2
    and 4x4 averages). Enlarging uses a triangle (bilinear) filter. Any channel count works.
    """
    width, height = int(width), int(height)
    if width < 1 or height < 1:
        raise ValueError(f"resize needs a positive size, got {width}x{height}")
    src = np.asarray(array, dtype=np.float32)
    squeeze = src.ndim == 2
    if squeeze:
        src = src[:, :, None]
    if src.ndim != 3:
        raise ValueError(f"resize needs an (H, W, C) array, got shape {src.shape}")
    h, w, c = src.shape
    if (w, h) == (width, height):
        out = src.copy()
    else:
        buf = oiio.ImageBuf(np.ascontiguousarray(src))
        filtername = "box" if width <= w and height <= h else "triangle"
        roi = oiio.ROI(0, width, 0, height, 0, 1, 0, c)
        result = oiio.ImageBufAlgo.resize(buf, filtername, 0.0, roi)
        if result.has_error:
            raise RuntimeError(f"OpenImageIO resize failed: {result.geterror()}")
        out = np.asarray(result.get_pixels(oiio.FLOAT), dtype=np.float32).reshape(height, width, c)
        _clear_oiio_errors()
    return out[:, :, 0] if squeeze else np.ascontiguousarray(out)


def is_finite_report(array: np.ndarray) -> tuple[int, int]:
    """``(number of NaN values, number of +-infinite values)`` in ``array``."""
    a = np.asarray(array)
    if not np.issubdtype(a.dtype, np.floating):
        return 0, 0
    return int(np.count_nonzero(np.isnan(a))), int(np.count_nonzero(np.isinf(a)))


__all__ = [
    "DATA_TYPES",
    "EXR_COMPRESSIONS",
    "SUPPORTED_EXTENSIONS",
    "ImageInfo",
    "channel_names_for",
    "image_info",
    "is_finite_report",
    "read_image",
    "read_image_with_info",
    "resize",
    "resolve_channels",
    "write_image",
]
