"""summary.py: real TensorBoard event files -> DataFrame / loss.csv."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pandas as pd
import pytest

from ccat_tf.cli import main
from ccat_tf.errors import DataDirectoryError
from ccat_tf.summary import COLUMNS, read_summaries, scalar, summary_to_csv


def stage(step: int) -> float:
    return 0.25 if step <= 6 else 0.5 if step <= 13 else 1.0


def write_run(folder, steps, loss=lambda s: 1.0 / s, psnr_at=()):
    """One event file, as the trainer's writer makes it (tensor-valued scalars)."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(folder), filename_suffix=".summary")
    with writer.as_default():
        for s in steps:
            scalar("loss", loss(s), s)
            scalar("stage_scale", stage(s), s)
            scalar("steps_per_second", 10.0, s)
            if s in psnr_at:
                scalar("val_psnr", 30.0 + s, s)
    writer.close()
    files = sorted(folder.glob("*.summary"), key=lambda p: p.stat().st_mtime_ns)
    return files[-1]


@pytest.fixture
def data_dir(tmp_path):
    dd = tmp_path / "shotA"
    dd.mkdir()
    write_run(dd / "run1", range(1, 21), psnr_at=(10, 20))
    write_run(dd / "run2", range(1, 11), loss=lambda s: 2.0 / s)
    return dd


def test_reads_every_run_and_scalar(data_dir):
    df = read_summaries(data_dir)
    assert list(df.columns) == COLUMNS
    assert list(df["run"].unique()) == ["run1", "run2"]
    r1 = df[df.run == "run1"]
    assert list(r1.step) == list(range(1, 21))
    np.testing.assert_allclose(r1.loss, [1.0 / s for s in range(1, 21)], rtol=1e-6)
    np.testing.assert_allclose(r1.stage_scale, [stage(s) for s in range(1, 21)])
    assert (r1.steps_per_second == 10.0).all()
    psnr = r1.set_index("step").val_psnr
    assert psnr[10] == pytest.approx(40.0) and psnr[20] == pytest.approx(50.0)
    assert psnr.drop([10, 20]).isna().all()
    r2 = df[df.run == "run2"]
    assert len(r2) == 10 and r2.val_psnr.isna().all()
    np.testing.assert_allclose(r2.loss, [2.0 / s for s in range(1, 11)], rtol=1e-6)
    assert (df.wall_time > 1e9).all()


def test_run_table_order_wins_over_names(data_dir):
    (data_dir / "runs.json").write_text(
        json.dumps({"runs": [{"id": 1, "name": "run2"}, {"id": 2, "name": "run1"}]})
    )
    assert list(read_summaries(data_dir)["run"].unique()) == ["run2", "run1"]


def test_relogged_steps_keep_the_last_value(tmp_path):
    # A run killed after its .ost at step 8 but with steps up to 12 logged; the resume writes a
    # second event file in the same folder starting again at step 9.
    run = tmp_path / "dd" / "run1"
    write_run(run, range(1, 13))
    write_run(run, range(9, 21), loss=lambda s: 100.0 + s)
    assert len(list(run.glob("*.summary"))) == 2
    df = read_summaries(tmp_path / "dd").set_index("step")
    assert list(df.index) == list(range(1, 21))
    assert df.loss[8] == pytest.approx(1 / 8)
    assert df.loss[9] == pytest.approx(109.0) and df.loss[12] == pytest.approx(112.0)


def test_truncated_event_file_is_read_up_to_the_damage(tmp_path):
    path = write_run(tmp_path / "dd" / "run1", range(1, 11))
    data = path.read_bytes()
    path.write_bytes(data[:-5])  # a writer killed mid-record
    notices = []
    df = read_summaries(tmp_path / "dd", notices)
    assert list(df.step) == list(range(1, 11))
    assert math.isnan(df.steps_per_second.iloc[-1])  # the last record was the one cut
    assert df.loss.iloc[-1] == pytest.approx(0.1)
    assert len(notices) == 1 and path.name in notices[0]


@pytest.mark.parametrize("where", ["first", "middle"])
def test_a_damaged_record_is_skipped_and_the_rest_read(tmp_path, where):
    """TensorFlow's reader stops at the first bad checksum; one flipped byte must not hide the
    records after it (a damaged first record used to read as 'no .summary files')."""
    path = write_run(tmp_path / "dd" / "run1", range(1, 11))
    data = bytearray(path.read_bytes())
    at = 20 if where == "first" else len(data) // 2  # inside the file_version record, or later
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    notices = []
    df = read_summaries(tmp_path / "dd", notices)
    assert len(notices) == 1 and "damaged record" in notices[0] and path.name in notices[0]
    assert set(range(2, 10)) <= set(df.step)  # at most the step around the damage is lost
    assert df.loss[df.step == 9].iloc[0] == pytest.approx(1 / 9)
    out = tmp_path / "loss.csv"
    assert main(["summary-csv", str(tmp_path / "dd"), "--output", str(out)]) == 0


def test_summary_csv_on_unreadable_summaries_says_so(tmp_path, capsys):
    path = write_run(tmp_path / "dd" / "run1", range(1, 3))
    path.write_bytes(b"\xff" * 64)
    code = main(["summary-csv", str(tmp_path / "dd"), "--output", str(tmp_path / "x.csv")])
    err = capsys.readouterr().err
    assert code == 2 and "hold no readable loss records" in err and "no .summary files" not in err


def test_simple_value_events_are_accepted(tmp_path):
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2
    from tensorflow.core.util import event_pb2

    folder = tmp_path / "dd" / "old"
    folder.mkdir(parents=True)
    with tf.io.TFRecordWriter(str(folder / "events.out.tfevents.1.host.summary")) as w:
        for s in (1, 2, 3):
            value = summary_pb2.Summary.Value(tag="loss", simple_value=0.5 * s)
            event = event_pb2.Event(
                step=s, wall_time=1.7e9 + s, summary=summary_pb2.Summary(value=[value])
            )
            w.write(event.SerializeToString())
    df = read_summaries(tmp_path / "dd")
    assert list(df.loss) == [0.5, 1.0, 1.5]
    assert list(df.wall_time) == [1.7e9 + 1, 1.7e9 + 2, 1.7e9 + 3]


def test_csv_file_and_cli(data_dir, tmp_path, capsys):
    out = tmp_path / "results" / "loss.csv"
    assert main(["summary-csv", str(data_dir), "--output", str(out)]) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == COLUMNS
    assert len(table) == 30
    row = table[(table.run == "run1") & (table.step == 10)].iloc[0]
    assert row.loss == pytest.approx(0.1) and row.val_psnr == pytest.approx(40.0)
    assert table[table.run == "run2"].val_psnr.isna().all()
    # the function form returns the path
    assert summary_to_csv(data_dir, tmp_path / "b.csv") == tmp_path / "b.csv"


def test_no_summaries_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataDirectoryError, match="no .summary files in .*; train first"):
        summary_to_csv(tmp_path / "empty", tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()
    code = main(["summary-csv", str(tmp_path / "missing"), "--output", str(tmp_path / "x.csv")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "does not exist" in err


def _losses_on_disk(data_directory) -> list[int]:
    """The steps whose loss a reader elsewhere would see now (the writer still open)."""
    table = read_summaries(data_directory)
    return table.loc[table["loss"].notna(), "step"].tolist()


def test_each_step_is_on_disk_when_write_scalars_returns(tmp_path):
    """The training logs every step with write_scalars: a reader elsewhere (tensorboard,
    summary-csv, graph) sees a running training's losses up to its last step."""
    from ccat_tf.summary import open_writer, write_scalars

    folder = tmp_path / "run1"
    writer = open_writer(folder)
    for step in (1, 2, 3):
        write_scalars(writer, folder, step, {"loss": 1.0 / step})
        assert _losses_on_disk(tmp_path) == list(range(1, step + 1))
    writer.close()


def test_a_writer_kept_open_flushes_within_the_live_interval(tmp_path, monkeypatch):
    """Events logged inside one long ``as_default`` (no flush of ours) reach the disk at the
    first event logged live.INTERVAL after the last flush (TensorFlow's default: 2 minutes)."""
    from ccat_tf import live
    from ccat_tf.summary import open_writer

    monkeypatch.setattr(live, "INTERVAL", 0.5)
    writer = open_writer(tmp_path / "run1")
    with writer.as_default():
        scalar("loss", 0.5, 1)
        assert _losses_on_disk(tmp_path) == []  # queued
        time.sleep(0.7)
        scalar("loss", 0.25, 2)  # the writer looks at its clock when an event comes
        assert _losses_on_disk(tmp_path) == [1, 2]
    writer.close()


def test_live_progress_flushes_the_summary_with_the_run_table(tmp_path):
    """LiveProgress's update writes the queued events before it reports the step in runs.json,
    so the table never names a step the graph cannot show yet."""
    from ccat_tf import live, runs
    from ccat_tf.summary import open_writer

    run = runs.start_run(tmp_path, {}, 0, 100)
    folder = tmp_path / run["name"]
    writer = open_writer(folder)
    progress = live.LiveProgress(tmp_path, run["id"], writer=writer, summary_folder=folder)
    with writer.as_default():
        for step in (1, 2, 3):
            scalar("loss", 1.0 / step, step)
        assert _losses_on_disk(tmp_path) == []  # queued (the interval has not passed)
        progress.update(3, 1 / 3, "full", 12.5)
        assert _losses_on_disk(tmp_path) == [1, 2, 3]
    assert runs.load_runs(tmp_path)[0]["last_step"] == 3
    writer.close()
