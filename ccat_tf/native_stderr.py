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
import re
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


# ---- TensorFlow's C++ log lines ----------------------------------------------------------------

#: TensorFlow/XLA/absl log lines (``I0000 00:00:1796011681.85 123 cudart_stub.cc:31] ...`` as
#: printed before absl is initialised, ``I1130 03:58:01.85 ...`` after), the older
#: ``2024-01-01 12:00:00.000000: I tensorflow/...cc:42] ...``, absl's pre-initialisation notice).
#: TF_CPP_MIN_LOG_LEVEL does not reach the ones printed before absl is initialised.
_TF_LOG = re.compile(
    rb"^(?:[IWEF]\d{4} \d+:\d+:\d+\.\d+\s+\d+ \S+:\d+\] "
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] \S+:\d+\] "
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR)"
)
#: The start of such a line, to recognise one cut short when the process ends.
_LOG_START = re.compile(rb"^(?:[IWEF]\d{4} \d+:\d+|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] )")
#: A line start that may still become one of those (held back until its line is complete).
_MAYBE_LOG = re.compile(rb"^(?:[IWEF]\d|\d{4}-|WARNING: All log|W?$)")


def _pump(read_fd: int, out_fd: int) -> None:
    """Copy ``read_fd`` to ``out_fd`` line by line, leaving out library log lines. A partial
    line (a progress bar's ``\\r`` update) is passed on at once unless it may be a log line."""
    pending = b""
    while True:
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        kept = [line + b"\n" for line in lines if not _drop(line)]
        if pending and not _MAYBE_LOG.match(pending):
            kept.append(pending)
            pending = b""
        if kept:
            os.write(out_fd, b"".join(kept))
    if pending and not (_drop(pending) or _LOG_START.match(pending)):
        os.write(out_fd, pending)  # the last, unfinished line (unless a log line cut short)
    os.close(read_fd)


def _drop(line: bytes) -> bool:
    text = line.lstrip(b"\r")
    return bool(_TF_LOG.match(text)) or text.startswith(DROPPED)


@contextlib.contextmanager
def without_library_logs() -> Iterator[None]:
    """Run the body with TensorFlow's (and libpng's) own log lines removed from stderr, as
    they pass: the CLI's default; ``--debug`` shows everything."""
    try:
        read_fd, write_fd = os.pipe()
        saved = os.dup(2)
    except OSError:
        yield
        return
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    pump = threading.Thread(target=_pump, args=(read_fd, saved), name="stderr-filter", daemon=True)
    pump.start()
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last writer closes: the pump reads the rest and stops
        pump.join(timeout=5)
        os.close(saved)
