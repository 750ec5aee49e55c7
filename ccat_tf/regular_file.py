"""Refusing a path that is not a regular file before anything reads it.

Every file ccat_tf reads (a .cat, ``checkpoint_file``, an .ost, ``cache_file``, a settings or
config file, ``runs.json``/``latest.json``, a frame, a hook file) is checked here first. A
character device (``/dev/zero``, ``/dev/urandom``) never ends, so a reader that searches for an
end record (zipfile) or reads to the end grows without limit; opening a named pipe (FIFO) for
reading waits for a writer forever. Both are refused in one line, as are a folder, a broken
symbolic link and a symbolic link loop, each said as what it is.

:func:`problem` only stats the path (symbolic links followed); :func:`open_regular` also opens it
without blocking and checks the open file, so a path swapped between the two is caught too.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


class NotRegularFile(OSError):
    """``path`` is not a regular file; ``str(err)`` and ``err.strerror`` say what it is."""

    def __init__(self, path: str | os.PathLike, what: str):
        super().__init__(errno.EINVAL, what)
        self.filename = str(path)

    def __str__(self) -> str:
        return str(self.strerror)


def _kind(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "it is a folder, not a file"
    if stat.S_ISFIFO(mode):
        return "it is a named pipe (FIFO), not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "it is a device, not a regular file"
    if stat.S_ISSOCK(mode):
        return "it is a socket, not a regular file"
    return "it is not a regular file"


def problem(path: str | os.PathLike) -> str | None:
    """None if ``path`` is a regular file (after following symbolic links); otherwise what it is,
    as a phrase ("it is a named pipe (FIFO), not a regular file", "it does not exist", ...)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            return f"it is a symbolic link to {target}, which does not exist"
        return "it does not exist"
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "it is a symbolic link loop (a link that leads back to itself)"
        if err.errno == errno.ENOTDIR:
            return "it does not exist (a folder on its path is a file)"
        if err.errno in (errno.EACCES, errno.EPERM):
            return "permission denied"
        if err.errno == errno.ENAMETOOLONG:
            return "its name is too long"
        return err.strerror or str(err)
    except ValueError:  # an embedded NUL
        return "its name holds a NUL character"
    return _kind(st.st_mode)


def check_regular(path: str | os.PathLike) -> None:
    """Raise :class:`NotRegularFile` unless ``path`` is a regular file (links followed)."""
    what = problem(path)
    if what is not None:
        raise NotRegularFile(path, what)


def open_regular(path: str | os.PathLike):
    """``open(path, "rb")`` for a regular file only; raise :class:`NotRegularFile` otherwise.

    A FIFO is opened without blocking (so the check cannot hang) and checked on the open file.
    """
    what = problem(path)
    if what is not None and what != "it does not exist":  # a missing file: open's own error
        raise NotRegularFile(path, what)
    fd = os.open(Path(path), os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        what = _kind(os.fstat(fd).st_mode)
        if what is not None:
            raise NotRegularFile(path, what)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")
