"""Reading a TFRecord file (a TensorBoard event file) past damaged records.

TensorFlow's own readers stop at the first record whose checksum fails, so one flipped byte at
the start of a ``.summary`` file hides every loss after it. :func:`read_records` checks each
record as TensorFlow does (a length, the masked CRC-32C of the length, the data, the masked
CRC-32C of the data) and, after a damaged record, looks for the next record whose length and
length checksum are valid, within :data:`MAX_RESYNC` bytes. It is the slow path: callers use
TensorFlow's reader first and come here only when it reported damage.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

from ccat_tf.regular_file import open_regular

#: How far past a damaged record to look for the next good one before giving up on the file.
MAX_RESYNC = 1 << 20
_HEADER = 12  # uint64 length + uint32 masked CRC of the length
_FOOTER = 4  # uint32 masked CRC of the data


@dataclass
class Records:
    """The intact records of a file, and what was skipped (for a one-line notice)."""

    records: list[bytes] = field(default_factory=list)
    damaged_at: list[int] = field(default_factory=list)  #: byte offsets of damaged records
    truncated: bool = False  #: the file ends inside a record (a killed writer)
    gave_up_at: int | None = None  #: no good record within MAX_RESYNC bytes after this offset


def _record_at(data: bytes, pos: int) -> bytes | None:
    """The record starting at ``pos`` if its length and data checksums hold."""
    (length,) = struct.unpack_from("<Q", data, pos)
    if length > len(data) - pos - _HEADER - _FOOTER:
        return None
    (length_crc,) = struct.unpack_from("<I", data, pos + 8)
    if masked_crc32c(data[pos : pos + 8]) != length_crc:
        return None
    body = data[pos + _HEADER : pos + _HEADER + length]
    (data_crc,) = struct.unpack_from("<I", data, pos + _HEADER + length)
    return body if masked_crc32c(body) == data_crc else None


def read_records(path: str | Path) -> Records:
    with open_regular(path) as fh:  # a device or FIFO named .summary would never end
        data = fh.read()
    out = Records()
    pos = 0
    while pos < len(data):
        if len(data) - pos < _HEADER + _FOOTER:
            out.truncated = True
            break
        body = _record_at(data, pos)
        if body is not None:
            out.records.append(body)
            pos += _HEADER + len(body) + _FOOTER
            continue
        nxt = _resync(data, pos + 1)
        if nxt is None:
            # Nothing valid follows: a record cut short at the end, or damage we cannot skip.
            if len(data) - pos <= MAX_RESYNC:
                out.truncated = True
            else:
                out.gave_up_at = pos
            break
        out.damaged_at.append(pos)
        pos = nxt
    return out


def _resync(data: bytes, start: int) -> int | None:
    """The offset of the next intact record at or after ``start`` (within MAX_RESYNC)."""
    stop = min(len(data) - _HEADER - _FOOTER, start + MAX_RESYNC)
    for pos in range(start, stop + 1):
        if _record_at(data, pos) is not None:
            return pos
    return None
