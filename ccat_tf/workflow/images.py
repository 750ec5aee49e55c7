"""Jobs of the workflow that handle images: the latest contact sheet / preview, gathering the
inference chunks' frames into one folder, and the output_samples rule's oiiotool line.

``gather_frames`` runs inside the Snakemake process (the infer rule's ``run:``), so this module
imports nothing heavy; the contact_sheet and preview rules run
``python -m ccat_tf.workflow.images DIR KIND OUTPUT`` (:func:`main`) in their environment.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ccat_tf.workflow import ConfigError
from ccat_tf.workflow.shots import frame_path


def copy_latest_image(
    directory: str | os.PathLike,
    kind: str,
    output: str | os.PathLike,
    error: type[Exception] = ConfigError,
) -> Path:
    """Copy the Data Directory's newest ``kind`` image (``contact`` or ``preview``) to ``output``;
    return the image copied.

    "Newest" is :func:`ccat_tf.contact_sheet.newest_image`, the same image ``ccat-tf overview``
    shows: the latest run's highest step. Raises ``error`` when the Data Directory holds no such
    image.
    """
    from ccat_tf.contact_sheet import newest_image  # numpy: only when the job runs

    src = newest_image(directory, kind)
    if src is None:
        raise error(f"no {kind} image (*.{kind}.step*.png) in {directory}")
    shutil.copyfile(src, output)
    return src


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ccat_tf.workflow.images DIR KIND OUTPUT``: copy the newest image (see
    :func:`copy_latest_image`), report it on stdout; a problem is one line on stderr, exit 2."""
    parser = argparse.ArgumentParser(
        prog="python -m ccat_tf.workflow.images", description=main.__doc__
    )
    parser.add_argument("data_directory")
    parser.add_argument("kind", choices=("contact", "preview"))
    parser.add_argument("output")
    args = parser.parse_args(argv)
    try:
        src = copy_latest_image(args.data_directory, args.kind, args.output)
    except (ConfigError, OSError) as err:
        print(f"ccat-tf: error: {err}", file=sys.stderr)
        return 2
    print(f"copied {src} to {args.output}")
    return 0


def gather_frames(
    chunk_directories: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    expected: int,
    log: str | os.PathLike,
    error: type[Exception] = ConfigError,
) -> list[str]:
    """Hard-link (or copy) every chunk's frames into one folder; check none is missing.

    Returns the gathered file names; raises ``error`` when their count is not ``expected``.
    """
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    frames = []
    for directory in chunk_directories:
        for src in sorted(Path(directory).iterdir()):
            if src.name.startswith("."):  # .snakemake_timestamp
                continue
            dst = out / src.name
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)
            frames.append(dst.name)
    Path(log).write_text(f"{len(frames)} frames in {out}\n" + "\n".join(frames) + "\n")
    if len(frames) != expected:
        raise error(f"{out}: expected {expected} frames, the chunks hold {len(frames)}")
    return frames


def display_channels(spec: Any) -> str:
    """oiiotool --ch argument showing a channel spec as RGB (alpha and mattes as grey)."""
    if isinstance(spec, str) and "," in spec:
        spec = [c.strip() for c in spec.split(",") if c.strip()]
    if spec in ("rgb", "rgba"):
        return "R,G,B"
    if spec == "alpha":
        return "A,A,A"
    names = list(spec)
    names = (names + [names[-1]] * 3)[:3] if len(names) < 3 else names[:3]
    return ",".join(names)


def samples_command(
    settings: dict[str, Any], frames: Sequence[int], output_frame: str, png: str
) -> str:
    """oiiotool line: a row of plate frames over a row of output frames, 480 px wide each.

    ``settings`` are the shot's (``input``, ``input_channels``, ``output_channels``);
    ``output_frame`` is the output file of a frame with a ``{frame}`` field
    (``results/A/output/A.{frame:04d}.exr``).
    """
    rows = (
        [(frame_path(settings["input"], f), settings["input_channels"]) for f in frames],
        [(output_frame.format(frame=f), settings["output_channels"]) for f in frames],
    )
    # Output frames hold values in the plate's encoding (ccat_tf does not convert colour), so
    # the plate decides: scene-linear plates (EXR/HDR) are shown through the sRGB curve.
    linear = settings["input"].lower().endswith((".exr", ".hdr"))
    args = []
    for row in rows:
        for path, channels in row:
            args += ["-i", path, "--ch", display_channels(channels)]
            if linear:
                args += ["--colorconvert", "linear", "sRGB"]
            args += ["--resize", "480x0"]
    args += ["--mosaic:pad=4", f"{len(frames)}x2", "-d", "uint8", "-o", png]
    return shlex.join(["oiiotool"] + args)


if __name__ == "__main__":
    sys.exit(main())
