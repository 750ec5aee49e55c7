"""Keep a C library's own stderr lines (``libpng error: ...``) out of the one-line errors.

libpng prints ``libpng error: <reason>`` to the process's stderr (file descriptor 2) on a
damaged PNG even though OpenImageIO also reports the reason to us, so a user would see it
before the one ``ccat-tf: error:`` line. :func:`filtered` points descriptor 2 at a temporary
file while a native call runs and afterwards writes back everything except the library lines
(nothing else written meanwhile, e.g. by another thread, is lost; it is only delayed). Nested
and concurrent uses share one redirection, which ends when the last of them leaves.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from collections.abc import Iterator

#: Lines that C libraries print themselves and that our error messages already carry.
DROPPED = (b"libpng error:", b"libpng warning:")

_lock = threading.Lock()
_users = 0
_saved_fd: int | None = None
_capture = None


def _start() -> None:
    global _saved_fd, _capture
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    _capture = tempfile.TemporaryFile()
    _saved_fd = os.dup(2)
    os.dup2(_capture.fileno(), 2)


def _stop() -> None:
    global _saved_fd, _capture
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    os.dup2(_saved_fd, 2)
    os.close(_saved_fd)
    _capture.seek(0)
    kept = [line for line in _capture.read().splitlines(True) if not line.startswith(DROPPED)]
    _capture.close()
    _saved_fd, _capture = None, None
    if kept:
        os.write(2, b"".join(kept))


@contextlib.contextmanager
def filtered() -> Iterator[None]:
    """Run the body with the native library lines in :data:`DROPPED` removed from stderr."""
    global _users
    with _lock:
        if _users == 0:
            with contextlib.suppress(OSError):  # no descriptor 2 or temp file: leave it alone
                _start()
        active = _capture is not None
        _users += active
    try:
        yield
    finally:
        if active:
            with _lock:
                _users -= 1
                if _users == 0:
                    _stop()
