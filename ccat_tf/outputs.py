"""Where a command may write: every output is checked before anything is written.

An output path is refused when it names one of the command's own inputs (a frame of an input
sequence, however the pattern is spelled, or a hard link to one; the model file; a settings
file) or an existing file of another kind (a ``--output`` that would replace a PNG with a .cat
zip). Each command lists its inputs as :class:`Input` values and calls :func:`check_output`
for each file it will write; :func:`dataset_inputs` lists a training data set's inputs once
for ``train``, ``validate`` and ``cache``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ccat_tf import frames as framespec
from ccat_tf.errors import SettingsError
from ccat_tf.regular_file import open_regular, problem


@dataclass(frozen=True)
class Kind:
    """A kind of file a command writes: its extensions and how its first bytes look."""

    what: str  #: "a .cat model", shown in errors
    suffixes: tuple[str, ...]
    magic: tuple[bytes, ...] = ()  #: any of these starts an existing file of this kind
    text: bool = False  #: an existing file of this kind is text (no NUL in its first bytes)

    def looks_like(self, path: Path) -> bool:
        """True if the existing file ``path`` may be replaced by a file of this kind."""
        try:
            with open_regular(path) as fh:
                head = fh.read(4096)
        except OSError:
            return True  # unreadable: the write itself will say why
        if not head:
            return True  # an empty file (e.g. left by a crashed tool) holds nothing to lose
        if self.magic:
            return any(head.startswith(m) for m in self.magic)
        if self.text:
            return b"\0" not in head
        return True


ZIP = (b"PK\x03\x04", b"PK\x05\x06")
KINDS = {
    "cat": Kind("a .cat model", (".cat",), ZIP),
    "png": Kind("a PNG image", (".png",), (b"\x89PNG\r\n\x1a\n",)),
    "csv": Kind("a CSV table", (".csv",), text=True),
    "json": Kind("a JSON file", (".json",), text=True),
    "h5": Kind("an HDF5 file", (".h5", ".hdf5"), (b"\x89HDF\r\n\x1a\n",)),
    "onnx": Kind("an ONNX model", (".onnx",)),
    # Output frames (infer): an existing frame of the output pattern must be an image of its type.
    "exr": Kind("an OpenEXR image", (".exr",), (b"v/1\x01",)),
    "dpx": Kind("a DPX image", (".dpx",), (b"SDPX", b"XPDS")),
    "tif": Kind("a TIFF image", (".tif", ".tiff"), (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")),
    "jpg": Kind("a JPEG image", (".jpg", ".jpeg"), (b"\xff\xd8\xff",)),
}


def kind_of(path: str | os.PathLike) -> str | None:
    """The kind whose extension ``path`` has (``None`` for an unknown extension)."""
    suffix = Path(path).suffix.lower()
    return next((name for name, k in KINDS.items() if suffix in k.suffixes), None)


def check_frame_outputs(paths: Iterable[str], setting: str = "output") -> None:
    """Refuse output frames that exist and are not images of their extension's type."""
    for path in paths:
        _refuse_special(Path(path), f"{setting} frame")
        kind = kind_of(path)
        if kind is not None and os.path.exists(path) and not KINDS[kind].looks_like(Path(path)):
            raise SettingsError(
                f"{setting} frame {path} exists and is not {KINDS[kind].what}; choose another "
                "output pattern or move that file away (nothing was written)"
            )


@dataclass(frozen=True)
class Input:
    """One input of a command: a file, a sequence pattern (every frame of it) or a folder."""

    path: str
    what: str  #: "the input sequence", "checkpoint_file", ...
    frames: tuple[int, ...] = ()  #: frames read (for the hard-link check); any frame matches
    folder: bool = False  #: every file inside ``path`` is an input

    def names(self, out: Path) -> bool:
        """True if writing ``out`` would replace this input (or a file of it)."""
        if not self.path:
            return False
        if self.folder:  # a new file in the folder is fine; replacing one of its files is not
            return out.exists() and _inside(out, Path(self.path))
        if framespec.has_frame_token(self.path):
            if _frame_of(self.path, out) is not None:
                return True
            return any(_same_inode(out, framespec.frame_path(self.path, f)) for f in self.frames)
        return _same_path(out, Path(self.path)) or _same_inode(out, self.path)


def check_output(
    path: str | os.PathLike, kind: str, inputs: Iterable[Input] = (), setting: str = "output"
) -> Path:
    """Return ``path`` if a ``kind`` file may be written there; raise SettingsError if not."""
    out = Path(path)
    k = KINDS[kind]
    clash = next((i for i in inputs if i.names(out)), None)
    if clash is not None:
        raise SettingsError(
            f"{setting} {out} would overwrite {clash.what} ({clash.path}), an input of this "
            "command; choose another path (nothing was written)"
        )
    if out.is_dir():
        raise SettingsError(f"{setting} {out} is a folder; give the path of {k.what}")
    _refuse_special(out, setting)
    if out.suffix.lower() not in k.suffixes:
        raise SettingsError(
            f"{setting} {out} does not end in {' or '.join(k.suffixes)}; give a path for "
            f"{k.what}, e.g. {out.with_suffix(k.suffixes[0]).name}"
        )
    if out.exists() and not k.looks_like(out):
        raise SettingsError(
            f"{setting} {out} exists and is not {k.what}; choose another path or move that "
            "file away (nothing was written)"
        )
    return out


def check_savedmodel_output(
    path: str | os.PathLike, inputs: Iterable[Input] = (), setting: str = "output"
) -> Path:
    """A SavedModel folder is replaced whole, so only an empty folder or an earlier SavedModel
    (it holds ``saved_model.pb``) may be there, and no input may be inside it."""
    out = Path(path)
    for i in inputs:
        if i.path and (_inside(Path(i.path), out) or _same_path(out, Path(i.path))):
            raise SettingsError(
                f"{setting} {out} would replace a folder holding {i.what} ({i.path}); choose "
                "another folder (nothing was written)"
            )
    if out.exists() and not out.is_dir():
        raise SettingsError(f"{setting} {out} exists and is a file; give a folder path")
    if out.is_dir() and any(out.iterdir()) and not (out / "saved_model.pb").is_file():
        raise SettingsError(
            f"{setting} {out} is a folder that holds other files, not a SavedModel; give a new "
            "or empty folder (nothing was written)"
        )
    return out


def _refuse_special(out: Path, setting: str) -> None:
    """An existing device, FIFO or socket is never replaced (renaming a file onto /dev/null as
    root would replace the device itself)."""
    if not out.exists():
        return
    what = problem(out)
    if what is not None and not out.is_dir():
        raise SettingsError(
            f"{setting} {out} cannot be written: {what}; give the path of a file (nothing was "
            "written)"
        )


def dataset_inputs(settings) -> list[Input]:
    """The files a training data set reads (TrainSettings): its sequences and side files."""

    def frames_of(*specs: str) -> tuple[int, ...]:
        out: list[int] = []
        for spec in specs:
            if str(spec).strip():
                out += framespec.parse_frames(spec)
        return tuple(out)

    pairs = frames_of(settings.frames, settings.validation_frames)
    found = [
        Input(settings.input, "the input sequence", pairs),
        Input(settings.ground_truth, "the ground-truth sequence", pairs),
        Input(settings.preview, "the preview sequence", frames_of(settings.preview_frames)),
        Input(settings.checkpoint_file, "checkpoint_file"),
        Input(settings.cache_file, "cache_file"),
    ]
    return [i for i in found if str(i.path).strip()]


def _frame_of(pattern: str, out: Path) -> int | None:
    """The frame number if ``out`` is a file of the sequence ``pattern`` (any spelling)."""
    head, tail = os.path.split(pattern)
    if framespec.has_frame_token(head):  # a token in a folder name: compare whole paths
        return _match_name(pattern, os.path.abspath(out), whole=True)
    if not _same_path(out.parent, Path(head or ".")):
        return None
    return _match_name(tail, out.name, whole=False)


def _match_name(pattern: str, name: str, whole: bool) -> int | None:
    pattern = os.path.abspath(pattern) if whole else pattern
    token = re.search(framespec.TOKEN_PATTERN, pattern)
    if token is None:
        return None
    head, tail = pattern[: token.start()], pattern[token.end() :]
    m = re.fullmatch(re.escape(head) + r"(-?\d+)" + re.escape(tail), name)
    if not m:
        return None
    frame = int(m.group(1))
    # Only the spelling the pattern gives (its zero padding) is a frame of it.
    return frame if framespec.frame_path(pattern, frame) == name else None


def _same_path(a: Path, b: Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _same_inode(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _inside(out: Path, folder: Path) -> bool:
    real_out, real_folder = os.path.realpath(out), os.path.realpath(folder)
    return os.path.commonpath([real_out, real_folder]) == real_folder
