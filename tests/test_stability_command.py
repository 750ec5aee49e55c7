"""``ccat-tf stability``: the workflow's per-shot flicker plot from a rendered sequence.

A tiny synthetic shot (a blurred texture panning 1 px a frame): an output that adds fresh noise on
every frame is plotted above its plate; bad input is one line and writes nothing.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from ccat_tf import imageio
from ccat_tf.cli import main
from ccat_tf.commands.stability import windows
from ccat_tf.errors import SettingsError


@pytest.fixture
def shot(tmp_path):
    """plate.0001-0008.png (RGB, panning) and out.0001-0008.exr: a matte (A) with fresh noise."""
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.random((48, 80, 3)).astype(np.float32), (0, 0), 3) * 2
    for f in range(1, 9):
        plate = np.roll(base, f, axis=1).clip(0, 1)
        imageio.write_image(tmp_path / f"plate.{f:04d}.png", plate, ["R", "G", "B"])
        luma = plate.mean(-1, keepdims=True)
        out = (luma + rng.normal(0, 0.05, luma.shape)).astype(np.float32)
        imageio.write_image(tmp_path / f"out.{f:04d}.exr", out, ["A"])
    return tmp_path


def args(d, *extra, frames="1-8", output="stability.png"):
    return [
        "stability",
        str(d / "out.####.exr"),
        "--input",
        str(d / "plate.####.png"),
        "--frames",
        frames,
        "--output-channels",
        "alpha",
        "--title",
        "shotA",
        "--output",
        str(d / output),
        *extra,
    ]


def test_a_flickering_matte_is_plotted_above_its_plate(shot, capsys):
    assert main(args(shot)) == 0
    out = capsys.readouterr().out
    png = shot / "stability.png"
    assert Image.open(png).size == (1000, 360)
    rows = [line.split("\t") for line in out.splitlines()[1:] if line[:1].isdigit()]
    assert [int(r[0]) for r in rows] == list(range(2, 9))  # one value per pair, at its frame t
    assert all(float(o) > 10 * float(i) for _, o, i in rows)  # fresh noise: it flickers
    ratio = float(out.split("ratio output / input: ")[1].split()[0])
    assert ratio > 10 and "(output channel vs input luma)" in out


def test_a_long_shot_is_measured_in_a_few_windows(shot, capsys):
    assert main(args(shot, "--max-frames", "4", "--windows", "2")) == 0
    rows = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert [r for r in rows if r.isdigit()] == ["2", "8"]  # pairs 1-2 and 7-8, none across
    assert windows(range(1, 101), 48, 3) == [
        list(range(1, 17)),
        list(range(43, 59)),
        list(range(85, 101)),
    ]
    assert windows([5, 1, 3], 48, 3) == [[1, 3, 5]]  # neighbours in the rendered list
    with pytest.raises(SettingsError, match="at least 2 frames per window"):
        windows(range(10), 4, 3)


@pytest.mark.parametrize(
    "extra, frames, output, match",
    [
        ((), "3", "s.png", "--frames names 1 frame"),
        ((), "1-9", "s.png", r"cannot read frame .*plate\.0009\.png"),
        ((), "1-8", "s.jpg", "does not end in .png"),
        ((), "1-8", "plate.0001.png", "would overwrite the input sequence"),
        (("--max-frames", "3"), "1-8", "s.png", "--max-frames >= 2 x --windows"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(shot, capsys, extra, frames, output, match):
    before = sorted(p.name for p in shot.iterdir())
    assert main(args(shot, *extra, frames=frames, output=output)) == 2
    err = capsys.readouterr().err
    assert err.startswith("ccat-tf: error: ") and err.count("\n") == 1, err
    assert re.search(match, err), err
    assert sorted(p.name for p in shot.iterdir()) == before
