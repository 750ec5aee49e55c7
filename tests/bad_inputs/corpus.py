"""Generate the bad-input corpus into a folder (called by the tests' fixtures).

Every file is made on the fly: a good tiny data set to start from, then one broken variant per
kind of mistake a user (or a disk) makes. Each ``make_*`` returns the settings that point at it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
from conftest import grade, smooth_noise, write_exr, write_png

SIZE = 96
FRAMES = "1-4"


def good_pairs(root: Path, name: str = "good", n: int = 4, size: int = SIZE) -> dict:
    """``n`` good (input, ground truth) PNG pairs of ``size`` x ``size`` under ``root/name``."""
    rng = np.random.default_rng(11)
    folder = root / name
    (folder / "in").mkdir(parents=True)
    (folder / "gt").mkdir()
    for f in range(1, n + 1):
        x = smooth_noise(rng, size, size)
        write_png(folder / "in" / f"shot.{f:04d}.png", x)
        write_png(folder / "gt" / f"shot.{f:04d}.png", grade(x))
    return {
        "input": str(folder / "in" / "shot.####.png"),
        "ground_truth": str(folder / "gt" / "shot.####.png"),
        "frames": f"1-{n}",
    }


def variant(root: Path, name: str) -> dict:
    """A copy of the good data set to break."""
    src = root / "good"
    dst = root / name
    shutil.copytree(src, dst)
    return {
        "input": str(dst / "in" / "shot.####.png"),
        "ground_truth": str(dst / "gt" / "shot.####.png"),
        "frames": FRAMES,
    }


def frame(ds: dict, side: str, f: int) -> Path:
    return Path(ds[side].replace("####", f"{f:04d}"))


def exr_pairs(root: Path, name: str, poison=None) -> dict:
    """EXR pairs (scene-linear); ``poison(x, y)`` may write NaN/Inf into frame 2's arrays."""
    rng = np.random.default_rng(5)
    folder = root / name
    (folder / "in").mkdir(parents=True)
    (folder / "gt").mkdir()
    for f in range(1, 5):
        x = smooth_noise(rng, SIZE, SIZE) * 2.0
        y = x * 0.5
        if poison is not None and f == 2:
            poison(x, y)
        write_exr(folder / "in" / f"shot.{f:04d}.exr", x, dtype="float")
        write_exr(folder / "gt" / f"shot.{f:04d}.exr", y, dtype="float")
    return {
        "input": str(folder / "in" / "shot.####.exr"),
        "ground_truth": str(folder / "gt" / "shot.####.exr"),
        "frames": FRAMES,
    }


def build(root: Path) -> dict[str, dict]:
    """Write every corpus entry under ``root``; returns name -> data set settings."""
    root.mkdir(parents=True, exist_ok=True)
    c: dict[str, dict] = {"good": good_pairs(root)}

    ds = c["missing_frame"] = variant(root, "missing_frame")
    frame(ds, "ground_truth", 3).unlink()

    ds = c["mismatched_resolution"] = variant(root, "mismatched_resolution")
    write_png(frame(ds, "ground_truth", 2), np.zeros((64, 80, 3), np.float32))

    ds = c["zero_byte"] = variant(root, "zero_byte")
    frame(ds, "input", 2).write_bytes(b"")

    ds = c["truncated_png"] = variant(root, "truncated_png")
    p = frame(ds, "input", 4)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 3])

    ds = c["text_as_png"] = variant(root, "text_as_png")
    frame(ds, "ground_truth", 1).write_text("this is not an image\n")

    ds = c["garbage_exr"] = exr_pairs(root, "garbage_exr")
    frame(ds, "input", 3).write_bytes(np.random.default_rng(3).bytes(5000))

    ds = c["truncated_exr"] = exr_pairs(root, "truncated_exr")
    p = frame(ds, "ground_truth", 2)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])

    def nan(x, y):
        x[10:12, 20:23] = np.nan

    def inf(x, y):
        y[5, 5, 0] = np.inf

    c["nan_pixels"] = exr_pairs(root, "nan_pixels", poison=nan)
    c["inf_pixels"] = exr_pairs(root, "inf_pixels", poison=inf)

    ds = c["png_bomb"] = variant(root, "png_bomb")
    png_bomb(frame(ds, "input", 2), 20000, 20000)

    c["one_pixel"] = good_pairs(root, "one_pixel", size=1)
    c["small_frames"] = good_pairs(root, "small_frames", size=40)  # crop 256 does not fit
    c["two_pairs"] = good_pairs(root, "two_pairs", n=2)

    return c


def png_bomb(path: Path, width: int, height: int) -> None:
    """A valid grey PNG of ``width`` x ``height`` zeros: a few hundred KB on disk that would
    inflate to ``width * height`` bytes (and four times that as float32) if read."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    packer = zlib.compressobj(9)
    row = b"\0" * (width + 1)  # filter byte + pixels
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def without_permission_override():
    """preexec_fn that makes the kernel apply permission bits to a child process as to anyone.

    Root ignores a folder's mode (CAP_DAC_OVERRIDE), so for root the two capabilities that let
    it do so are dropped from the bounding set before exec: the child stays root (it can still
    read the venv and pytest's private folders, which it owns) but gets a real EACCES from a
    folder without write permission. For any other user nothing is needed.
    """
    if os.geteuid() != 0:
        return None

    def drop():
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
            if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")

    return drop


def run_unprivileged(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run(argv)`` under :func:`without_permission_override`; skips the test
    where capabilities cannot be dropped (e.g. a container without CAP_SETPCAP)."""
    import pytest

    try:
        return subprocess.run(argv, preexec_fn=without_permission_override(), **kwargs)
    except subprocess.SubprocessError as err:
        pytest.skip(f"cannot drop CAP_DAC_OVERRIDE for a child process here: {err}")


@contextlib.contextmanager
def read_only(folder: Path):
    """``folder`` without write permission (mode 0o555) for the duration."""
    mode = folder.stat().st_mode & 0o7777
    folder.chmod(0o555)
    try:
        yield folder
    finally:
        folder.chmod(mode)
