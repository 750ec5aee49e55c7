"""graph.py: CopyCat/TensorBoard smoothing and the Graph tab PNG."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ccat_tf.cli import main
from ccat_tf.errors import CcatError, SettingsError
from ccat_tf.graph import plot_graph, smooth, stage_changes


def test_smoothing_matches_a_hand_computed_example():
    # w = 0.5: last = 0.5, 1.25, 2.125; debias by 1 - 0.5**n = 0.5, 0.75, 0.875
    np.testing.assert_allclose(smooth([1, 2, 3], 0.5), [1.0, 1.25 / 0.75, 2.125 / 0.875])
    # w = 0.6 (CopyCat's default): last = 0.4*4 = 1.6 -> /0.4 = 4; 0.96 + 0.8 = 1.76 -> /0.64
    np.testing.assert_allclose(smooth([4, 2], 0.6), [4.0, 1.76 / 0.64])
    np.testing.assert_allclose(smooth([3, 1, 2], 0.0), [3, 1, 2])
    np.testing.assert_allclose(smooth([5, 5, 5, 5]), [5, 5, 5, 5])  # debias: no ramp from 0


def test_smoothing_skips_nans():
    out = smooth([1.0, math.nan, 3.0], 0.5)
    assert math.isnan(out[1])
    np.testing.assert_allclose(out[[0, 2]], smooth([1.0, 3.0], 0.5))


def test_smoothness_out_of_range():
    with pytest.raises(SettingsError, match="smoothness 1.0"):
        smooth([1, 2], 1.0)


def test_stage_changes():
    assert stage_changes([1, 2, 3, 4, 5], [0.25, 0.25, 0.5, 0.5, 1.0]) == [(3, "1/2"), (5, "full")]
    assert stage_changes([1, 2], [1.0, 1.0]) == []


def loss_table(path, psnr=True):
    rows = []
    for run, scale in (("run1", 1.0), ("run2", 0.5)):
        for s in range(1, 61):
            rows.append(
                dict(
                    run=run,
                    step=s,
                    wall_time=1.7e9 + s,
                    loss=scale * (0.5 / s + 0.01 * ((s * 7919) % 13) / 13),
                    val_psnr=(20 + s / 3) if psnr and s % 20 == 0 else np.nan,
                    stage_scale=0.25 if s <= 15 else 0.5 if s <= 30 else 1.0,
                    steps_per_second=5.0,
                )
            )
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def non_blank(png) -> bool:
    a = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return a.std() > 5 and len(np.unique(a.reshape(-1, 3), axis=0)) > 20


def test_graph_png_with_psnr_panel(tmp_path):
    (tmp_path / "shot1").mkdir()
    csv = loss_table(tmp_path / "shot1" / "loss.csv")
    out = plot_graph(csv, tmp_path / "graph.png")
    assert out == tmp_path / "graph.png"
    img = Image.open(out)
    assert img.size == (1000, 3 * 360)  # linear + log + PSNR panels
    assert non_blank(out)
    assert not list(tmp_path.glob(".ccat-tmp-*"))


def test_graph_cli_two_panels_without_psnr(tmp_path, capsys):
    csv = loss_table(tmp_path / "loss.csv", psnr=False)
    out = tmp_path / "g.png"
    code = main(
        ["graph", str(csv), "--output", str(out), "--smoothness", "0.9", "--no-show-original"]
    )
    assert code == 0
    assert Image.open(out).size == (1000, 2 * 360) and non_blank(out)
    assert main(["graph", str(csv), "--output", str(out), "--log-scale", "log"]) == 0
    assert Image.open(out).size == (1000, 360)


@pytest.mark.parametrize(
    "content, match",
    [
        (None, "does not exist"),
        ("", "not a readable CSV"),
        ("a,b\n1,2\n", "no column run, step, loss"),
        ("run,step,loss\nrun1,1,\n", "no loss values"),
    ],
)
def test_bad_csv_is_a_one_line_error(tmp_path, capsys, content, match):
    csv = tmp_path / "loss.csv"
    if content is not None:
        csv.write_text(content)
    with pytest.raises(CcatError, match=match):
        plot_graph(csv, tmp_path / "g.png")
    assert main(["graph", str(csv), "--output", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ccat-tf: error:") and "\n" not in err and str(csv) in err
    assert not (tmp_path / "g.png").exists()
