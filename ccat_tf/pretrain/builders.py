"""tensorflow-datasets builders over local folders, so pretraining corpora are versioned and cached.

* :class:`LocalImages`: a folder of images (the pretraining corpus from
  :func:`ccat_tf.pretrain.sources.gather`, or any folder of PNG/JPEG/TIFF/EXR). The degradations
  are applied on the fly later, so only clean images are stored.
* :class:`PairedImages`: a studio's own corpus, ``<folder>/input/<name>.<ext>`` with
  ``<folder>/ground_truth/<name>.<ext>`` (same stem), for retraining the initial weights on its
  own (input, ground truth) pairs.

Each builder's config name is a hash of the folder's file names and contents, so adding or
changing a file builds a new cached version instead of silently reusing a stale one; ``VERSION``
changes when the stored features change. Images are read with OpenImageIO (ccat_tf.imageio) and
stored as float32 (zlib-compressed), so EXR corpora keep their values.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".exr", ".dpx"}


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def folder_digest(*folders: Path) -> str:
    """Short hash of the names and bytes of every image in ``folders``."""
    h = hashlib.sha256()
    for folder in folders:
        for p in _images_in(folder):
            h.update(p.name.encode())
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()[:12]


def _read(path: Path, channels) -> np.ndarray:
    from ccat_tf import imageio

    return imageio.read_image(path, channels).astype(np.float32)


class LocalImages(tfds.core.GeneratorBasedBuilder):
    """Clean RGB images from one local folder (one ``train`` split)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "RGB float32 images and their file names."}

    def __init__(self, *, folder: str | Path, **kwargs):
        self._folder = Path(folder)
        if not self._folder.is_dir() or not _images_in(self._folder):
            raise FileNotFoundError(
                f"{self._folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        config = tfds.core.BuilderConfig(name=f"d{folder_digest(self._folder)}")
        super().__init__(config=config, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=f"Images from {self._folder}",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(
                        shape=(None, None, 3), dtype=np.float32, encoding="zlib"
                    ),
                    "name": tfds.features.Text(),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for path in _images_in(self._folder):
            yield path.name, {"image": _read(path, "rgb"), "name": path.name}


class PairedImages(tfds.core.GeneratorBasedBuilder):
    """(input, ground truth) pairs from ``<folder>/input`` and ``<folder>/ground_truth``.

    ``ground_truth_channels`` is ``rgb`` (deblur, upscale) or ``alpha`` (matting); the input is
    always RGB.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "RGB input, rgb or alpha ground truth, float32."}

    def __init__(self, *, folder: str | Path, ground_truth_channels: str = "rgb", **kwargs):
        self._folder = Path(folder)
        self._gt_channels = ground_truth_channels
        inputs, truths = self._folder / "input", self._folder / "ground_truth"
        for sub in (inputs, truths):
            if not sub.is_dir():
                raise FileNotFoundError(
                    f"{sub} is missing; a paired corpus is <folder>/input/<name>.png with "
                    "<folder>/ground_truth/<name>.png"
                )
        self._pairs = self._match(inputs, truths)
        digest = folder_digest(inputs, truths)
        config = tfds.core.BuilderConfig(name=f"{ground_truth_channels}_d{digest}")
        super().__init__(config=config, **kwargs)

    @staticmethod
    def _match(inputs: Path, truths: Path) -> list[tuple[Path, Path]]:
        gt = {p.stem: p for p in _images_in(truths)}
        pairs = [(p, gt[p.stem]) for p in _images_in(inputs) if p.stem in gt]
        if not pairs:
            raise FileNotFoundError(
                f"no input in {inputs} has a ground truth of the same name in {truths}"
            )
        return pairs

    def _info(self) -> tfds.core.DatasetInfo:
        n_gt = 1 if self._gt_channels == "alpha" else 3
        return self.dataset_info_from_configs(
            description=f"(input, ground truth) pairs from {self._folder}",
            features=tfds.features.FeaturesDict(
                {
                    "input": tfds.features.Tensor(
                        shape=(None, None, 3), dtype=np.float32, encoding="zlib"
                    ),
                    "ground_truth": tfds.features.Tensor(
                        shape=(None, None, n_gt), dtype=np.float32, encoding="zlib"
                    ),
                    "name": tfds.features.Text(),
                }
            ),
            supervised_keys=("input", "ground_truth"),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for inp, gt in self._pairs:
            x, y = _read(inp, "rgb"), _read(gt, self._gt_channels)
            if x.shape[:2] != y.shape[:2]:
                raise ValueError(
                    f"{inp.name}: input {x.shape[:2]} and ground truth {y.shape[:2]} differ in size"
                )
            yield inp.stem, {"input": x, "ground_truth": y, "name": inp.stem}


def load_images(folder: str | Path, data_dir: str | Path):
    """Build (once, cached in ``data_dir``) and return the ``train`` split of a LocalImages folder."""
    builder = LocalImages(folder=folder, data_dir=str(data_dir))
    builder.download_and_prepare()
    return builder.as_dataset(split="train", shuffle_files=False), builder


def load_pairs(folder: str | Path, data_dir: str | Path, ground_truth_channels: str = "rgb"):
    """Build (once, cached) and return the ``train`` split of a PairedImages folder."""
    builder = PairedImages(
        folder=folder, ground_truth_channels=ground_truth_channels, data_dir=str(data_dir)
    )
    builder.download_and_prepare()
    return builder.as_dataset(split="train", shuffle_files=False), builder
