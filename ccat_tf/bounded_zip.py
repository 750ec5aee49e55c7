"""Reading a zip archive from an untrusted file at a bounded cost.

A zip member's sizes are whatever its writer claims, and a few kilobytes of deflate stream can
inflate to gigabytes. Here every member has a cap: the sizes in the central directory are checked
against it before anything is inflated, and the inflated bytes are counted while reading, chunk by
chunk, so a header that lies is stopped at the cap too. The central directory itself is bounded
before :class:`zipfile.ZipFile` parses it (each entry costs far more in memory than on disk).
Only the two methods ccat_tf writes (stored, deflated) are accepted: deflate output is bounded
per read, bzip2 and lzma output is not.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Callable

from ccat_tf.regular_file import open_regular

CHUNK_BYTES = 1 << 20
METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}
# What reading a damaged (not hostile) archive can raise; callers report these as damage.
READ_ERRORS = (zipfile.BadZipFile, EOFError, OSError, ValueError, RuntimeError, zlib.error)


class LimitExceeded(Exception):
    """An archive needs more than its caps allow. ``str(err)`` says what, without the path."""


def size_text(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"


def open_zip(path: str | os.PathLike, max_directory_bytes: int) -> zipfile.ZipFile:
    """Open ``path`` as a zip whose central directory is at most ``max_directory_bytes``.

    Raises LimitExceeded for a larger directory, and zipfile.BadZipFile (or OSError) for a file
    that is not a zip; :class:`~ccat_tf.regular_file.NotRegularFile` (an OSError) for a device,
    FIFO or folder (zipfile's search for the end record would read ``/dev/zero`` forever).
    """
    with open_regular(path) as fh:
        # zipfile's own reader of the end-of-central-directory record (zip64 included); it reads
        # a few dozen kilobytes at the end of the file at most.
        end = zipfile._EndRecData(fh)  # noqa: SLF001 - the only way to see the size first
    if end is None:
        raise zipfile.BadZipFile("File is not a zip file")
    directory = end[zipfile._ECD_SIZE]  # noqa: SLF001
    if directory > max_directory_bytes:
        raise LimitExceeded(
            f"its table of contents takes {size_text(directory)} (a ccat_tf file needs under "
            f"{size_text(max_directory_bytes)})"
        )
    return zipfile.ZipFile(path)


def check_headers(zf: zipfile.ZipFile, caps: dict[str, int], prefix: str = "") -> None:
    """Check every member's recorded size, method and flags before anything is inflated.

    ``caps`` maps each member name to its largest inflated size; a member not in ``caps``, a
    repeated name or a missing one raises LimitExceeded with a reason, as does an encrypted
    member or one compressed other than stored or deflated.
    """
    names = [info.filename for info in zf.infolist()]
    if sorted(names) != sorted(caps):
        shown = ", ".join(repr(prefix + n) for n in names[:5]) or "none"
        expected = ", ".join(prefix + n for n in caps)
        raise LimitExceeded(f"it holds the members {shown} (a ccat_tf file holds {expected})")
    for info in zf.infolist():
        name, cap = prefix + info.filename, caps[info.filename]
        if info.file_size > cap:
            raise LimitExceeded(_too_large(name, info.file_size, cap))
        if info.compress_type not in METHODS:
            raise LimitExceeded(
                f"member {name} uses compression method {info.compress_type} (ccat_tf writes "
                "stored or deflated members only)"
            )
        if info.flag_bits & 0x1:
            raise LimitExceeded(f"member {name} is encrypted")


def _too_large(name: str, size: int | None, cap: int) -> str:
    """Why ``name`` is refused: its recorded ``size``, or (None) it inflated past ``cap``."""
    if size is None:
        return (
            f"member {name} inflates past {size_text(cap)}, more than a ccat_tf model of any "
            "size needs (a decompression bomb?)"
        )
    return (
        f"member {name} would inflate to {size_text(size)}, more than the {size_text(cap)} a "
        "ccat_tf model of any size needs (a decompression bomb?)"
    )


def stream(
    zf: zipfile.ZipFile, name: str, cap: int, sink: Callable[[bytes], object], prefix: str = ""
) -> int:
    """Inflate member ``name`` chunk by chunk into ``sink``; stop with LimitExceeded past ``cap``.

    Returns the number of bytes inflated. zipfile checks the member's CRC-32 at its end.
    """
    total = 0
    with zf.open(name) as fh:
        while chunk := fh.read(CHUNK_BYTES):
            total += len(chunk)
            if total > cap:
                raise LimitExceeded(_too_large(prefix + name, None, cap))
            sink(chunk)
    return total


def read(zf: zipfile.ZipFile, name: str, cap: int, prefix: str = "") -> bytes:
    """The whole of member ``name``, at most ``cap`` bytes (see :func:`stream`)."""
    parts: list[bytes] = []
    stream(zf, name, cap, parts.append, prefix)
    return b"".join(parts)
