"""Make the demo shot: the bikes plate and a ground truth a compositor could have painted.

    python demo/make_demo.py [--source ../shared/data/bikes]

Copies the 48 plate frames (640x272 PNG, real footage) to demo/bikes/plate/ and writes the
ground truth for the data-set and validation frames to demo/bikes/groundtruth/: a film-style
grade (lift/gamma/gain per channel in linear light, then less saturation) followed by an
unsharp-mask sharpen, i.e. Nuke's Grade + Saturation + Sharpen. It is a real look a network can
learn from a few frames and apply to the rest. The outputs are committed; rerun this only to
change the look (the result is deterministic: numpy + OpenImageIO, no randomness).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import OpenImageIO as oiio

HERE = Path(__file__).resolve().parent
SHOT = "bikes"
FIRST, LAST = 1001, 1048
# Data set 1001-1043x6 (8 pairs) + validation 1016,1034: the frames config.yaml trains on.
GROUND_TRUTH_FRAMES = sorted(set(range(1001, 1044, 6)) | {1016, 1034})

# The grade (Nuke Grade node semantics, per channel R, G, B, in linear light): cool shadows,
# warm highlights, a touch of contrast, then 75% saturation.
LIFT = np.array([-0.008, 0.0, 0.018], np.float32)
GAIN = np.array([1.15, 1.03, 0.85], np.float32)
GAMMA = np.array([0.95, 1.0, 1.06], np.float32)
SATURATION = 0.75
# Unsharp mask on the display-referred image: out = x + AMOUNT * (x - blur(x, SIGMA)).
SHARPEN_AMOUNT = 0.8
SHARPEN_SIGMA = 1.5

REC709_LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32)


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.maximum(x, 0.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * x ** (1 / 2.4) - 0.055)


def grade(linear: np.ndarray) -> np.ndarray:
    """Nuke Grade: A = gain - lift, out = (A * x + lift) ** (1 / gamma); then saturation."""
    out = (GAIN - LIFT) * linear + LIFT
    out = np.sign(out) * np.abs(out) ** (1.0 / GAMMA)
    luma = (out * REC709_LUMA).sum(axis=-1, keepdims=True)
    return luma + SATURATION * (out - luma)


def gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an HWC image, edges clamped."""
    radius = int(np.ceil(3 * sigma))
    t = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-0.5 * (t / sigma) ** 2)
    kernel /= kernel.sum()
    for axis in (0, 1):
        pad = [(0, 0)] * x.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(x, pad, mode="edge")
        n = x.shape[axis]
        x = sum(w * np.take(padded, np.arange(i, i + n), axis=axis) for i, w in enumerate(kernel))
    return x


def sharpen(x: np.ndarray) -> np.ndarray:
    return x + SHARPEN_AMOUNT * (x - gaussian_blur(x, SHARPEN_SIGMA))


def paint(plate: np.ndarray) -> np.ndarray:
    """The ground truth for one plate frame (float 0..1 sRGB-encoded RGB in and out)."""
    graded = linear_to_srgb(grade(srgb_to_linear(plate)))
    return np.clip(sharpen(graded), 0.0, 1.0)


def read_rgb(path: Path) -> np.ndarray:
    buf = oiio.ImageBuf(str(path))
    pixels = buf.get_pixels(oiio.FLOAT)
    if pixels is None or buf.has_error:
        raise SystemExit(f"cannot read {path}: {buf.geterror()}")
    return np.asarray(pixels, np.float32)[..., :3]


def write_png(path: Path, rgb: np.ndarray) -> None:
    h, w, c = rgb.shape
    buf = oiio.ImageBuf(oiio.ImageSpec(w, h, c, oiio.UINT8))
    buf.set_pixels(oiio.ROI(0, w, 0, h), np.ascontiguousarray(rgb, np.float32))
    path.parent.mkdir(parents=True, exist_ok=True)
    if not buf.write(str(path)):
        raise SystemExit(f"cannot write {path}: {buf.geterror()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source",
        type=Path,
        default=HERE.parent.parent / "shared" / "data" / "bikes",
        help="folder with bikes.1001.png .. bikes.1048.png",
    )
    args = parser.parse_args()
    plate_dir = HERE / SHOT / "plate"
    gt_dir = HERE / SHOT / "groundtruth"
    plate_dir.mkdir(parents=True, exist_ok=True)
    for frame in range(FIRST, LAST + 1):
        src = args.source / f"{SHOT}.{frame}.png"
        if not src.is_file():
            raise SystemExit(f"missing plate frame {src}")
        shutil.copyfile(src, plate_dir / src.name)
    for frame in GROUND_TRUTH_FRAMES:
        plate = read_rgb(plate_dir / f"{SHOT}.{frame}.png")
        write_png(gt_dir / f"{SHOT}.{frame}.png", paint(plate))
    print(
        f"{LAST - FIRST + 1} plate frames in {plate_dir}, "
        f"{len(GROUND_TRUTH_FRAMES)} ground-truth frames in {gt_dir}"
    )


if __name__ == "__main__":
    main()
