"""contact_sheet.py: sheet/preview layout, display conversion, the overview of shots."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from ccat_tf.cli import main
from ccat_tf.contact_sheet import (
    newest_image,
    overview,
    render_contact_sheet,
    render_preview,
    shot_labels,
    to_display,
    to_rgb8,
)
from ccat_tf.errors import CcatError

RED, GREEN, BLUE = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)


def solid(colour, size=64, channels=3):
    a = np.zeros((size, size, channels), np.float32)
    a[..., : len(colour)] = colour
    return a


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def bbox(img, colour):
    """Bounding box (y0, y1, x0, x1) of the pixels of exactly ``colour`` (0..255)."""
    ys, xs = np.nonzero((img == colour).all(axis=-1))
    return ys.min(), ys.max() + 1, xs.min(), xs.max() + 1, len(ys)


def test_columns_hold_the_crops_in_label_order(tmp_path):
    rows = [(solid(RED), solid(GREEN), solid(BLUE)) for _ in range(3)]
    out = render_contact_sheet(
        rows, tmp_path / "run1.contact.step0000100.png", title="run1 step 100"
    )
    img = pixels(out)
    red, green, blue = (bbox(img, c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255)))
    # left to right: input, ground truth, output; each a column of 3 crops (enlarged 2x to 128)
    assert red[3] <= green[2] and green[3] <= blue[2]
    for y0, y1, x0, x1, n in (red, green, blue):
        assert x1 - x0 == 128 and n == 3 * 128 * 128
        assert y1 - y0 > 3 * 128  # three rows with gaps between
    # the header band above the crops holds light (text) pixels: labels and title were drawn
    header = img[: red[0]]
    assert (header.min(axis=-1) > 180).sum() > 100


def test_channel_counts(tmp_path):
    alpha = np.full((40, 40, 1), 0.5, np.float32)
    two = np.stack([np.full((40, 40), 0.25), np.ones((40, 40))], -1)
    rgba = solid((0.0, 0.0, 1.0, 0.0), 40, 4)
    many = solid((1.0, 0.0, 0.0, 0.3, 0.7), 40, 5)
    assert (to_rgb8(alpha)[0, 0] == 128).all()
    assert (to_rgb8(two)[0, 0] == 64).all()
    assert list(to_rgb8(rgba)[0, 0]) == [0, 0, 255]
    assert list(to_rgb8(many)[0, 0]) == [255, 0, 0]
    assert list(to_rgb8(np.full((4, 4), np.nan))[0, 0]) == [0, 0, 0]
    out = render_contact_sheet([(alpha, two, rgba, many)], tmp_path / "c.png", labels=("a", "b"))
    img = pixels(out)
    assert bbox(img, (128, 128, 128))[4] >= 128 * 128
    assert bbox(img, (0, 0, 255))[4] == 160 * 160  # 40 px enlarged 4x


def test_contact_sheet_of_full_size_crops(tmp_path):
    """Three 256x256 rows render at full size (its speed is a benchmark's job: under load on a
    2-core CI machine a 0.3 s bound here failed)."""
    rng = np.random.default_rng(0)
    rows = [tuple(rng.random((256, 256, 3), np.float32) for _ in range(3)) for _ in range(3)]
    render_contact_sheet(rows, tmp_path / "c.png", title="run1  step 300/1000  loss 0.01230")
    assert Image.open(tmp_path / "c.png").size[0] >= 3 * 256


def test_preview_stacks_frames_and_shrinks_wide_ones(tmp_path):
    wide = solid(GREEN, 8, 3).repeat(40, axis=0).repeat(300, axis=1)  # 320 x 2400
    out = render_preview(
        [wide, solid(RED, 100)], tmp_path / "p.png", labels=["frame 1001", "frame 1002"]
    )
    img = pixels(out)
    g, r = bbox(img, (0, 255, 0)), bbox(img, (255, 0, 0))
    assert g[3] - g[2] == 800 and g[1] - g[0] == 106  # reduced 3x to <= 1024 wide
    assert r[0] > g[1] and r[3] - r[2] == 100  # below it, at full size


def test_to_display_decodes_log_and_tonemaps():
    x = np.array([[[np.log1p(3.0), np.log1p(0.5), 0.25]]], np.float32)
    out = to_display(x, ["log", "log", "linear"])
    # decoded 3.0 and 0.5; max > 1 so Reinhard on the log channels; linear clipped only
    np.testing.assert_allclose(out[0, 0], [0.75, 0.5 / 1.5, 0.25], rtol=1e-5)
    low = to_display(np.array([[[np.log1p(0.5), 2.0]]], np.float32), ["log", "linear"])
    np.testing.assert_allclose(low[0, 0], [0.5, 1.0], rtol=1e-5)  # no tonemap, clip
    assert to_display(np.zeros((2, 2)), None).shape == (2, 2, 1)


def write_sheet(folder, name, colour, mtime):
    path = render_contact_sheet([(solid(colour),) * 3], folder / name)
    os.utime(path, (mtime, mtime))


def test_overview_takes_each_shots_newest_images(tmp_path, capsys):
    a, b = tmp_path / "shotA" / "train", tmp_path / "shotB" / "train"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    write_sheet(a, "run1.contact.step0000100.png", BLUE, 1000)
    write_sheet(a, "run1.contact.step0000200.png", RED, 2000)  # newest of shot A
    render_preview([solid(GREEN, 128)], a / "run1.preview.step0000200.png", labels=["frame 1"])
    write_sheet(b, "run1.contact.step0000100.png", BLUE, 3000)
    assert shot_labels([a, b]) == ["shotA/train", "shotB/train"]
    out = tmp_path / "overview.png"
    assert main(["overview", str(a), str(b), "--output", str(out)]) == 0
    img = pixels(out)
    red, green, blue = (bbox(img, c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255)))
    assert red[3] < green[2] and abs(red[0] - green[0]) < 40  # contact | preview side by side
    assert blue[0] > red[1]  # shot B's row below shot A's


def test_overview_without_contact_sheets_is_an_error(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    with pytest.raises(CcatError, match="no contact sheets"):
        overview([tmp_path / "a"], tmp_path / "o.png")
    assert main(["overview", str(tmp_path / "nope"), "--output", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert "nope does not exist" in err and "\n" not in err
    assert not (tmp_path / "o.png").exists()


# ---- which image is the newest -----------------------------------------------------------------


def stub(folder, name, mtime):
    path = folder / name
    path.write_bytes(b"png")
    os.utime(path, (mtime, mtime))
    return path


def two_runs(folder):
    """run1 (older, 900 steps) and run2 (started later, 200 steps so far), with file dates in
    the wrong order: run1's files were touched last (a copy, a restore from backup)."""
    stub(folder, "run1.contact.step0000900.png", 5000)
    stub(folder, "run1.preview.step0000900.png", 5000)
    stub(folder, "run2.contact.step0000100.png", 2000)
    stub(folder, "run2.contact.step0000200.png", 1000)
    stub(folder, ".ccat-tmp-0a1b2c3d-run2.contact.step0000300.png", 6000)  # being written


def write_runs(folder, *names):
    runs = [{"id": i + 1, "name": n} for i, n in enumerate(names)]
    (folder / "runs.json").write_text(json.dumps({"runs": runs}))


def test_newest_image_is_the_latest_runs_highest_step(tmp_path):
    two_runs(tmp_path)
    write_runs(tmp_path, "run1", "run2")
    # latest.json still names run1's last checkpoint: run2 has not reached its first one
    (tmp_path / "latest.json").write_text('{"cat": "run1.step0000900.cat", "step": 900}')
    assert newest_image(tmp_path, "contact").name == "run2.contact.step0000200.png"
    # run2 has no preview yet: the run before it shows one
    assert newest_image(tmp_path, "preview").name == "run1.preview.step0000900.png"


def test_newest_image_without_a_run_table_follows_latest_json(tmp_path):
    two_runs(tmp_path)
    (tmp_path / "latest.json").write_text('{"cat": "run2.step0000200.cat", "step": 200}')
    assert newest_image(tmp_path, "contact").name == "run2.contact.step0000200.png"
    (tmp_path / "runs.json").write_text("{damaged")  # a damaged table is passed over
    assert newest_image(tmp_path, "contact").name == "run2.contact.step0000200.png"


def test_newest_image_of_unnamed_runs_is_the_newest_file(tmp_path):
    two_runs(tmp_path)
    assert newest_image(tmp_path, "contact").name == "run1.contact.step0000900.png"
    assert newest_image(tmp_path / "nothing", "contact") is None
    assert newest_image(tmp_path, "other") is None


def test_overview_and_the_workflow_show_the_same_image(tmp_path):
    from ccat_tf.workflow.images import copy_latest_image

    write_sheet(tmp_path, "run1.contact.step0000900.png", BLUE, 5000)
    write_sheet(tmp_path, "run2.contact.step0000200.png", RED, 1000)
    write_runs(tmp_path, "run1", "run2")
    out = overview([tmp_path], tmp_path / "overview.png", labels=["A"])
    img = pixels(out)
    assert bbox(img, (255, 0, 0))[4] > 0 and not (img == (0, 0, 255)).all(axis=-1).any()
    copied = copy_latest_image(tmp_path, "contact", tmp_path / "sheet.png")
    assert copied.name == "run2.contact.step0000200.png"
