"""Crash-safe file writing and the one-writer lock on a Data Directory.

Every artefact ccat_tf produces (.cat, .ost, contact sheets, previews, output frames, JSON
reports) is written to a temporary file in the destination folder and renamed into place, so a
reader never sees a half-written file and a crash never destroys the previous good one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import os
import secrets
import shutil
from collections.abc import Container, Iterator
from pathlib import Path

from ccat_tf.errors import DataDirectoryError

TEMP_MARK = ".ccat-tmp-"
#: The one-writer lock file of a Data Directory (see :class:`DirectoryLock`).
LOCK_NAME = ".ccat.lock"


def describe_os_error(path: Path, err: OSError) -> DataDirectoryError:
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free some space or point the output to another disk"
        what = "no space left on device" if err.errno == errno.ENOSPC else "disk quota exceeded"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "make the folder writable or choose another location"
        what = "permission denied" if err.errno != errno.EROFS else "read-only file system"
    elif err.errno in (errno.ENOTDIR, errno.EEXIST):  # mkdir/open through a file
        fix = "choose another location"
        what = "a folder on its path is a file"
    else:
        fix = "check the path and the disk"
        what = err.strerror or str(err)
    return DataDirectoryError(f"cannot write {path}: {what}; {fix} (nothing was overwritten)")


_describe_os_error = describe_os_error  # the name other modules knew it by


#: How C and C++ libraries (TensorFlow, OpenImageIO) spell the errors a user can fix.
_STRERRORS = {os.strerror(n): n for n in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS)}


def error_from_text(path: str | os.PathLike, text: str) -> DataDirectoryError | None:
    """The one-line error for a library message that reports a full disk or an unwritable
    folder (``"...; No space left on device"``), or None if ``text`` reports something else."""
    for strerror, number in _STRERRORS.items():
        if strerror.lower() in text.lower():
            return describe_os_error(Path(path), OSError(number, strerror))
    return None


def full_disk_error(path: str | os.PathLike, text: str, need: int) -> DataDirectoryError | None:
    """The one-line error for a writer's failure ``text`` when it reports a full disk or an
    unwritable folder, or when ``path``'s disk has less than ``need`` bytes left (libraries that
    fail vaguely); None otherwise."""
    found = error_from_text(path, text)
    if found is None and free_bytes(path) < need:
        found = describe_os_error(Path(path), OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    return found


def free_bytes(path: str | os.PathLike) -> int:
    """Bytes an unprivileged writer may still use on the disk holding ``path`` (or its folder)."""
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        st = os.statvfs(folder)
    except OSError:
        return 2**63  # unknown: let the write itself find out
    return st.f_bavail * st.f_frsize


def check_free_space(path: str | os.PathLike, need: int) -> None:
    """Raise the one-line "no space left on device" error if ``path``'s disk has less than
    ``need`` bytes free: for writers (C libraries) that fail badly on a full disk."""
    if free_bytes(path) < need:
        raise describe_os_error(Path(path), OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))


def temp_path_for(path: str | os.PathLike) -> Path:
    """A unique temporary path beside ``path`` that keeps its extension (OIIO picks formats by it)."""
    path = Path(path)
    return path.with_name(f"{TEMP_MARK}{secrets.token_hex(4)}-{path.name}")


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is fsynced and renamed onto ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was. OS errors
    (disk full, read-only folder) become a one-line :class:`DataDirectoryError`.
    """
    path = Path(path)
    tmp = temp_path_for(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        if not tmp.exists():
            raise DataDirectoryError(f"cannot write {path}: the writer produced no file")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise describe_os_error(path, err) from err
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def temp_target_name(temp_name: str) -> str | None:
    """``.ccat-tmp-1a2b3c4d-out.0001.exr`` -> ``out.0001.exr``; None for any other name."""
    if not temp_name.startswith(TEMP_MARK):
        return None
    _, sep, target = temp_name[len(TEMP_MARK) :].partition("-")
    return target if sep and target else None


def remove_stale_temps(
    folder: str | os.PathLike, names: Container[str] | None = None
) -> list[Path]:
    """Delete temporary files a killed writer left behind in ``folder``; return what was removed.

    ``names``: remove only the temporary files of these target names (a folder other processes
    also write into, e.g. an output folder shared by parallel inference jobs).
    """
    removed = []
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.iterdir():
            target = temp_target_name(p.name)
            if target is None or (names is not None and target not in names):
                continue
            with contextlib.suppress(OSError):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
                removed.append(p)
    return removed


class _GuardedFile(io.RawIOBase):
    """A file for HDF5 (h5py's file-object driver) that never reports a write failure to it.

    HDF5 does not survive a failed write: it prints error stacks, h5py raises from object
    destructors, and closing the file crashes the process. This file writes through to disk
    until the first OSError, keeps that error, and from then on accepts writes without storing
    them; :func:`hdf5_writer` raises the error once HDF5 has closed the file.
    """

    def __init__(self, path: Path):
        super().__init__()
        self._fh = open(path, "w+b", buffering=0)  # noqa: SIM115 - closed in close()
        self._pos = self._size = 0
        self.error: OSError | None = None

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        if self.error is None:
            try:
                self._fh.seek(self._pos)
                done = 0
                while done < len(view):
                    done += self._fh.write(view[done:])
            except OSError as err:
                self.error = err
        self._pos += len(view)
        self._size = max(self._size, self._pos)
        return len(view)

    def readinto(self, buffer) -> int:
        self._fh.seek(self._pos)
        n = self._fh.readinto(buffer) or 0
        if self.error is not None:  # bytes never stored read as zeros
            want = min(len(buffer), max(self._size - self._pos, 0))
            if want > n:
                memoryview(buffer).cast("B")[n:want] = bytes(want - n)
                n = want
        self._pos += n
        return n

    def truncate(self, size: int | None = None) -> int:
        size = self._pos if size is None else size
        if self.error is None:
            try:
                self._fh.truncate(size)
            except OSError as err:
                self.error = err
        self._size = size
        return size

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if not self.closed:
            self._fh.close()
        super().close()


@contextlib.contextmanager
def hdf5_writer(path: str | os.PathLike, **kwargs) -> Iterator:
    """An ``h5py.File`` creating ``path`` whose disk errors (ENOSPC, EIO) are raised as the
    ``OSError`` once the file is closed, instead of inside HDF5 (see :class:`_GuardedFile`).

    Use it inside :func:`atomic_path`, which turns the error into the one-line message.
    """
    import h5py

    sink = _GuardedFile(Path(path))
    try:
        with h5py.File(sink, "w", **kwargs) as h5:
            yield h5
    finally:
        sink.close()
    if sink.error is not None:
        raise sink.error


class DirectoryLock:
    """An exclusive ``flock`` on ``<folder>/.ccat.lock``.

    The kernel drops the lock when the holder dies (even by SIGKILL), so a stale lock file left by
    a killed process never blocks a new run; a live holder makes :meth:`acquire` fail at once with
    a message naming its pid.
    """

    def __init__(self, folder: str | os.PathLike, purpose: str = "training"):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.purpose = purpose
        self._fh = None

    def acquire(self) -> DirectoryLock:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fh = open(self.path, "a+")
        except OSError as err:
            raise describe_os_error(self.path, err) from err
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            raise DataDirectoryError(
                f"data directory {self.folder} is in use by another {self.purpose} process "
                f"({holder}); wait for it to finish or choose another data_directory"
            ) from None
        # The lock file of an earlier run can be reopened in a folder that has since become
        # read-only: find that out now, not after minutes of set-up.
        probe = temp_path_for(self.path)
        try:
            probe.touch()
            probe.unlink()
        except OSError as err:
            fh.close()
            raise describe_os_error(self.folder, err) from err
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {os.uname().nodename}")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
