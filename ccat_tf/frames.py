"""Frame specs (``1001-1100``, ``1001,1010,1020``, ``1001-1100x10``) and sequence patterns.

A *frame spec* names the frames to use, as typed in Nuke's frame range fields::

    1001-1100          every frame from 1001 to 1100
    1001,1010,1020     just those frames (spaces work as separators too)
    1001-1100x10       every 10th frame: 1001, 1011, ... 1091
    1-5,10,20-30x5     any mix of the above
    -5--1              negative frames, as Nuke allows them

Order is kept as given and repeated frames are dropped (the first one wins).

A *sequence pattern* is a file name with one frame token:

* ``shot.####.exr`` -- Nuke style: the number of ``#`` is the zero-padding width (``#`` alone
  means no padding, ``####`` gives ``shot.0042.exr``);
* ``shot.%04d.exr`` / ``shot.%d.exr`` -- printf style (``%4d`` is read as ``%04d``: file names
  are never space-padded);
* ``shot.$F4.exr`` / ``shot.$F.exr`` -- Houdini style.

A pattern without a token is a still image used for every frame. Frames wider than the padding
are written in full (``####`` with frame 12345 gives ``12345``); negative frames follow printf
(``####`` with -5 gives ``-005``), like Nuke.
"""

from __future__ import annotations

import glob
import operator
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from ccat_tf.errors import SettingsError

#: Longest range one spec may expand to; a typo like ``1-10000000000`` should fail, not hang.
MAX_FRAMES = 1_000_000

_EXAMPLES = "use e.g. 1001-1100, 1001,1010 or 1001-1100x10"
_TOKEN_RE = re.compile(r"#+|%(\d*)d|\$F(\d?)(?![A-Za-z0-9_])")
_ITEM_RE = re.compile(r"^(-?\d+)(?:-(-?\d+)(?:[xX](-?\d+))?)?$")
#: The frame token's regular expression (``####``, ``%04d``, ``$F4``), for other modules.
TOKEN_PATTERN = _TOKEN_RE.pattern


def _spec_error(spec: object, why: str) -> SettingsError:
    return SettingsError(f"frames {str(spec)!r} is not a frame spec: {why}; {_EXAMPLES}")


def _as_frame(value: object, spec: object) -> int:
    if isinstance(value, bool):
        raise _spec_error(spec, f"{value!r} is not a frame number")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    try:
        return operator.index(value)  # int, numpy integers
    except TypeError:
        raise _spec_error(spec, f"{value!r} is not a frame number") from None


def _dedupe(frames: list[int]) -> list[int]:
    return list(dict.fromkeys(frames))


def parse_frames(spec: str | int | Iterable[int | str]) -> list[int]:
    """Expand a frame spec into a list of frames (order kept, duplicates dropped).

    Accepts a string (see the module docs), a single int, or a list/tuple/range/array of ints
    (list items may be specs themselves, as a YAML settings file may give them).
    Raises :class:`SettingsError` naming the spec and showing valid examples.
    """
    if isinstance(spec, Iterable) and not isinstance(spec, str | bytes):
        spec = list(spec)
        if not spec:
            raise _spec_error(spec, "it is empty")
        if all(type(value) is int for value in spec):  # the common case, fast for 10^6 frames
            return _dedupe(spec)
        frames: list[int] = []
        for value in spec:
            # A YAML list may mix numbers and specs: [1001, "1010-1020x5"].
            frames.extend(
                parse_frames(value) if isinstance(value, str) else [_as_frame(value, spec)]
            )
        return _dedupe(frames)
    if not isinstance(spec, str):
        return [_as_frame(spec, spec)]

    items = [item for item in re.split(r"[,\s]+", spec.strip()) if item]
    if not items:
        raise _spec_error(spec, "it is empty")
    frames: list[int] = []
    for item in items:
        m = _ITEM_RE.match(item)
        if not m:
            raise _spec_error(spec, f"cannot read {item!r}")
        first = int(m.group(1))
        if m.group(2) is None:
            frames.append(first)
            continue
        last = int(m.group(2))
        step = int(m.group(3)) if m.group(3) is not None else 1
        if step < 1:
            raise _spec_error(spec, f"the step in {item!r} must be 1 or more")
        if last < first:
            raise _spec_error(spec, f"{item!r} ends before it starts (write {last}-{first})")
        count = (last - first) // step + 1
        if count + len(frames) > MAX_FRAMES:
            raise _spec_error(spec, f"{item!r} has more than {MAX_FRAMES} frames")
        frames.extend(range(first, last + 1, step))
    return _dedupe(frames)


def format_frames(frames: list[int] | tuple[int, ...] | range) -> str:
    """The compact spec for ``frames``: ``[1, 2, 3, 5]`` -> ``"1-3,5"``.

    Runs with a constant step of 1 become ``a-b``; runs of three or more with a larger constant
    step become ``a-bxN``. Order is kept, so ``parse_frames(format_frames(f))`` gives ``f`` back
    (without duplicates).
    """
    values = _dedupe([_as_frame(v, frames) for v in frames])
    parts: list[str] = []
    i, n = 0, len(values)
    while i < n:
        start = values[i]
        j = i
        if i + 1 < n and values[i + 1] > start:
            step = values[i + 1] - start
            while j + 1 < n and values[j + 1] - values[j] == step:
                j += 1
            if step > 1 and j - i < 2:  # two frames with a gap read better as "a,b"
                j = i
        else:
            step = 1
        if j == i:
            parts.append(str(start))
        elif step == 1:
            parts.append(f"{start}-{values[j]}")
        else:
            parts.append(f"{start}-{values[j]}x{step}")
        i = j + 1
    return ",".join(parts)


def _tokens(pattern: str) -> list[re.Match]:
    return list(_TOKEN_RE.finditer(pattern))


def _single_token(pattern: str) -> re.Match | None:
    tokens = _tokens(pattern)
    if len(tokens) > 1:
        found = ", ".join(t.group(0) for t in tokens)
        raise SettingsError(
            f"sequence {pattern!r} has {len(tokens)} frame tokens ({found}); use exactly one, "
            "e.g. shot.####.exr or shot.%04d.exr"
        )
    return tokens[0] if tokens else None


def _width(token: re.Match) -> int:
    text = token.group(0)
    if text.startswith("#"):
        return len(text)
    digits = token.group(1) if text.startswith("%") else token.group(2)
    return int(digits) if digits else 0


def has_frame_token(pattern: str | os.PathLike) -> bool:
    """True if ``pattern`` has a frame token (``####``, ``%04d``, ``$F4``); raises on several."""
    return _single_token(os.fspath(pattern)) is not None


def frame_path(pattern: str | os.PathLike, frame: int) -> str:
    """The file name of ``frame`` in ``pattern`` (a pattern without a token is returned as is)."""
    pattern = os.fspath(pattern)
    token = _single_token(pattern)
    if token is None:
        return pattern
    number = _as_frame(frame, frame)
    text = f"{number:0{_width(token)}d}"
    return pattern[: token.start()] + text + pattern[token.end() :]


def find_frames(pattern: str | os.PathLike) -> list[int]:
    """The frames of ``pattern`` that exist on disk as files, sorted.

    A file counts only if its number is written with the pattern's padding (``shot.####.exr``
    finds ``shot.1001.exr`` and ``shot.12345.exr`` but not ``shot.01001.exr``). A pattern
    without a frame token has no frame numbers: the result is ``[]``.
    """
    pattern = os.fspath(pattern)
    token = _single_token(pattern)
    if token is None:
        return []
    head, tail = pattern[: token.start()], pattern[token.end() :]
    number_re = re.compile(re.escape(head) + r"(-?\d+)" + re.escape(tail) + r"\Z")
    found = set()
    for path in glob.iglob(glob.escape(head) + "*" + glob.escape(tail)):
        m = number_re.match(path)
        if not m:
            continue
        frame = int(m.group(1))
        if frame_path(pattern, frame) == path and os.path.isfile(path):
            found.add(frame)
    return sorted(found)


def _name_start(path: str) -> int:
    """Where the file name begins in ``path`` (after its last separator)."""
    return max(path.rfind(os.sep), path.rfind(os.altsep) if os.altsep else -1) + 1


@dataclass
class Sequence:
    """A sequence pattern and the frames used from it.

    ``frames`` may be given as any frame spec (``"1001-1100x10"``, a list, an int); it is stored
    as a list of ints.
    """

    pattern: str
    frames: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pattern = os.fspath(self.pattern)
        _single_token(self.pattern)  # fail early on a pattern with two tokens
        # An empty list is allowed (frames chosen later); anything else must be a valid spec.
        empty = isinstance(self.frames, list | tuple) and len(self.frames) == 0
        self.frames = [] if empty else parse_frames(self.frames)

    @property
    def is_still(self) -> bool:
        """True when the pattern has no frame token (one image used for every frame)."""
        return not has_frame_token(self.pattern)

    def path(self, frame: int) -> str:
        return frame_path(self.pattern, frame)

    def paths(self) -> list[str]:
        """The file of every frame, in frame order."""
        token = _single_token(self.pattern)
        if token is None:
            return [self.pattern] * len(self.frames)
        head, tail, width = (
            self.pattern[: token.start()],
            self.pattern[token.end() :],
            _width(token),
        )
        return [f"{head}{f:0{width}d}{tail}" for f in self.frames]  # frame_path, token parsed once

    def missing(self) -> list[int]:
        """Frames whose file does not exist (for a still: all frames if the image is missing),
        or is not a regular file (a folder, a FIFO, a device, a broken link): in frame order."""
        absent, other = self.scan()
        if not other:
            return absent
        odd = set(absent) | set(other)
        return [f for f in self.frames if f in odd]

    def scan(self) -> tuple[list[int], list[int]]:
        """``(absent, not_files)``: the frames with no file of their name, and those whose name
        is there but is not a regular file (a folder, FIFO, device, broken link, link loop).

        The pattern's folder is listed once (``--frames 1-1000000`` of a 4-frame shot costs one
        listing, not a million stats). Where a listing cannot be trusted (the frame token in a
        folder name, a case-insensitive file system) each frame is looked at instead.
        """
        paths = self.paths()
        listing = self._listing()
        if listing is not None:
            absent, other = [], []
            start = _name_start(self.pattern)
            for f, p in zip(self.frames, paths, strict=True):
                entry = listing.get(p[start:])
                if entry is None:
                    absent.append(f)
                    continue
                try:
                    regular = entry.is_file()  # follows a symbolic link
                except OSError:  # a link loop
                    regular = False
                if not regular:
                    other.append(f)
            # The listing spells names exactly; a file system that does not (macOS, Windows)
            # may still open a frame listed under another case: then look at every frame.
            first = {f: p for f, p in zip(self.frames, paths, strict=True) if f in absent[:1]}
            if not any(os.path.lexists(p) for p in first.values()):
                return absent, other
        absent, other = [], []
        for f, p in zip(self.frames, paths, strict=True):
            if not os.path.lexists(p):
                absent.append(f)
            elif not os.path.isfile(p):
                other.append(f)
        return absent, other

    def _listing(self) -> dict[str, os.DirEntry] | None:
        """The entries of the folder every frame is in, or None if frames are in several."""
        token = _single_token(self.pattern)
        if token is None or len(self.frames) < 2:
            return None
        if os.sep in self.pattern[token.start() :] or (
            os.altsep and os.altsep in self.pattern[token.start() :]
        ):
            return None  # the token names folders
        folder = self.pattern[: _name_start(self.pattern)] or "."
        try:
            with os.scandir(folder) as it:
                return {entry.name: entry for entry in it}
        except OSError:
            return None

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self):
        """Yield ``(frame, path)`` pairs."""
        return iter(zip(self.frames, self.paths(), strict=True))

    def __str__(self) -> str:
        return f"{self.pattern} [{format_frames(self.frames)}]" if self.frames else self.pattern
