"""Shared fixtures: tiny data sets made on the fly with OpenImageIO (no binaries in the repo)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def load_script(relative: str):
    """Import a script of the repository (``benchmarks/bench_quality.py``, ``scripts/...``) as
    a module named after its file; registered in ``sys.modules`` so its dataclasses resolve."""
    import importlib.util
    import sys

    path = REPO / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def write_png(path: Path, array: np.ndarray, bits: int = 8) -> None:
    import OpenImageIO as oiio

    array = np.clip(array, 0, 1).astype(np.float32)
    h, w, c = array.shape
    spec = oiio.ImageSpec(w, h, c, "uint8" if bits == 8 else "uint16")
    out = oiio.ImageOutput.create(str(path))
    assert out is not None, oiio.geterror()
    assert out.open(str(path), spec), out.geterror()
    assert out.write_image(array), out.geterror()
    out.close()


def write_exr(path: Path, array: np.ndarray, names=None, dtype="half") -> None:
    import OpenImageIO as oiio

    h, w, c = array.shape
    spec = oiio.ImageSpec(w, h, c, dtype)
    if names:
        spec.channelnames = tuple(names)
    out = oiio.ImageOutput.create(str(path))
    assert out.open(str(path), spec), out.geterror()
    assert out.write_image(array.astype(np.float32)), out.geterror()
    out.close()


def grade(x: np.ndarray) -> np.ndarray:
    """The 'paint fix' the tiny data sets learn: a warm grade with a gamma, channel-wise."""
    gain = np.array([1.15, 1.0, 0.8], dtype=np.float32)
    return np.clip((x * gain) ** 0.8, 0, 1)


def smooth_noise(rng, h, w, c=3):
    """Natural-ish images: low-frequency noise plus a little detail."""
    small = rng.random((h // 8 + 2, w // 8 + 2, c)).astype(np.float32)
    big = np.kron(small, np.ones((8, 8, 1), np.float32))[:h, :w]
    return np.clip(0.8 * big + 0.2 * rng.random((h, w, c)).astype(np.float32), 0, 1)


def make_tiny_dataset(root: Path) -> dict:
    """4 pairs of 96x96 PNGs (frames 1-4) + 2 more frames (5-6) for preview/validation."""
    rng = np.random.default_rng(7)
    (root / "in").mkdir(parents=True)
    (root / "gt").mkdir()
    for f in range(1, 7):
        x = smooth_noise(rng, 96, 96)
        write_png(root / "in" / f"shot.{f:04d}.png", x)
        write_png(root / "gt" / f"shot.{f:04d}.png", grade(x))
    return {
        "input": str(root / "in" / "shot.####.png"),
        "ground_truth": str(root / "gt" / "shot.####.png"),
        "frames": "1-4",
        "root": root,
    }


@pytest.fixture
def tiny_dataset(tmp_path):
    return make_tiny_dataset(tmp_path)


def tiny_settings(ds, data_directory, **overrides):
    s = dict(
        input=ds["input"],
        ground_truth=ds["ground_truth"],
        frames=ds["frames"],
        data_directory=str(data_directory),
        model_size="small",
        crop_size=32,
        batch_size=2,
        epochs=10,
        checkpoint_interval=10,
        contact_sheet_interval=5,
        use_gpu_if_available=False,
    )
    s.update(overrides)
    return s


def run_two_replicas(script: str, settings: dict) -> dict:
    """Run ``script`` (it trains on 2 logical CPUs) with ``settings`` as JSON in a fresh process
    (logical devices must be set before TensorFlow starts); return the JSON it prints after
    ``RESULT``."""
    import json
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps(settings)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "training on 2 replicas: /cpu:0, /cpu:1" in proc.stderr
    return json.loads(proc.stdout.split("RESULT")[1])
