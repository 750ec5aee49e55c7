"""Crash-safe file writing and the one-writer lock on a Data Directory.

Every artefact ccat_tf produces (.cat, .ost, contact sheets, previews, output frames, JSON
reports) is written to a temporary file in the destination folder and renamed into place, so a
reader never sees a half-written file and a crash never destroys the previous good one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from ccat_tf.errors import DataDirectoryError

TEMP_MARK = ".ccat-tmp-"


def _describe_os_error(path: Path, err: OSError) -> DataDirectoryError:
    if err.errno == errno.ENOSPC:
        fix = "free some space or point the output to another disk"
        what = "no space left on device"
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
        raise _describe_os_error(path, err) from err
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


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete temporary files a killed writer left behind in ``folder``; return what was removed."""
    removed = []
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name.startswith(TEMP_MARK):
                with contextlib.suppress(OSError):
                    if p.is_dir():
                        import shutil

                        shutil.rmtree(p)
                    else:
                        p.unlink()
                    removed.append(p)
    return removed


class DirectoryLock:
    """An exclusive ``flock`` on ``<folder>/.ccat.lock``.

    The kernel drops the lock when the holder dies (even by SIGKILL), so a stale lock file left by
    a killed process never blocks a new run; a live holder makes :meth:`acquire` fail at once with
    a message naming its pid.
    """

    def __init__(self, folder: str | os.PathLike, purpose: str = "training"):
        self.folder = Path(folder)
        self.path = self.folder / ".ccat.lock"
        self.purpose = purpose
        self._fh = None

    def acquire(self) -> DirectoryLock:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fh = open(self.path, "a+")
        except OSError as err:
            raise _describe_os_error(self.path, err) from err
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
            raise _describe_os_error(self.folder, err) from err
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
