"""runs.py: the run table, renaming runs with their files, and ``ccat-tf runs``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ccat_tf import runs, state
from ccat_tf.atomic import DirectoryLock
from ccat_tf.cli import main
from ccat_tf.errors import DataDirectoryError, SettingsError

SETTINGS = {"model_size": "small", "batch_size": "auto", "batch_size_resolved": 4, "crop_size": 64}


def test_start_and_update(tmp_path):
    assert runs.load_runs(tmp_path) == []
    r1 = runs.start_run(tmp_path, SETTINGS, first_step=0, total_steps=100)
    assert (r1["id"], r1["name"], r1["status"], r1["ended"]) == (1, "run1", "running", None)
    runs.update_run(tmp_path, 1, status="finished", last_step=100, last_loss=0.0123, ended="x")
    r2 = runs.start_run(tmp_path, SETTINGS, first_step=0, total_steps=50, name="sharper-v2.1")
    assert r2["id"] == 2
    table = json.loads((tmp_path / "runs.json").read_text())["runs"]
    assert [r["name"] for r in table] == ["run1", "sharper-v2.1"]
    assert table[0]["last_loss"] == 0.0123 and table[0]["status"] == "finished"
    assert table[1]["settings"] == SETTINGS and table[1]["total_steps"] == 50
    runs.update_run(tmp_path, 2, last_loss=math.nan)  # stored as null, the JSON stays valid
    assert runs.list_runs(tmp_path)[1]["last_loss"] is None
    assert runs.start_run(tmp_path, {}, 0, 10)["name"] == "run3"


@pytest.mark.parametrize("name", ["a b", "../x", ".hidden", "x/y", "progress", "é"])
def test_unsafe_names_are_refused(tmp_path, name):
    with pytest.raises(SettingsError, match="run name"):
        runs.start_run(tmp_path, {}, 0, 10, name=name)


def test_names_are_unique_but_a_resume_continues_its_run(tmp_path):
    runs.start_run(tmp_path, {}, 0, 100, name="a")
    with pytest.raises(SettingsError, match="already used"):
        runs.start_run(tmp_path, {}, 0, 100, name="a")
    runs.update_run(tmp_path, 1, status="interrupted", last_step=40)
    again = runs.start_run(tmp_path, {}, first_step=40, total_steps=100, name="a")
    assert (again["id"], again["status"], again["first_step"]) == (1, "running", 0)
    assert len(runs.load_runs(tmp_path)) == 1
    runs.update_run(tmp_path, 1, status="finished")
    with pytest.raises(SettingsError, match="already used"):
        runs.start_run(tmp_path, {}, 40, 100, name="a")


def test_corrupt_or_missing(tmp_path):
    (tmp_path / "runs.json").write_text("{not json")
    with pytest.raises(DataDirectoryError, match=r"runs.json is not valid JSON"):
        runs.load_runs(tmp_path)
    with pytest.raises(DataDirectoryError, match="does not exist"):
        runs.list_runs(tmp_path / "nope")


def make_run_files(dd, name):
    for f in (
        f"{name}.step0000010.cat",
        f"{name}.contact.step0000005.png",
        f"{name}.preview.step0000010.png",
    ):
        (dd / f).write_text(f)
    (dd / name).mkdir()
    (dd / name / "events.out.tfevents.1.host.summary").write_text("events")


def test_rename_moves_every_file_of_the_run(tmp_path):
    dd = tmp_path
    runs.start_run(dd, {}, 0, 10, name="a")
    runs.start_run(dd, {}, 0, 10, name="a.b")  # its files start with "a." too: not a's
    make_run_files(dd, "a")
    make_run_files(dd, "a.b")
    (dd / "latest.json").write_text(json.dumps({"cat": "a.step0000010.cat", "step": 10}))
    # An .ost holds the weights and Adam slots of the model its signature names.
    shapes = state.model_weight_shapes("small", 3, 3)
    rgb = {"input_channels": ["R", "G", "B"], "output_channels": ["R", "G", "B"]}
    # Format 2 records the architecture, and Adam's one scalar is its step (the rate is a
    # schedule); format 1 had the rate too.
    format_2 = state.FORMAT >= 2
    scalars = [np.zeros((), np.int64)] + ([] if format_2 else [np.zeros((), np.float32)])
    progress = state.Progress(
        step=10,
        total_steps=10,
        stage=2,
        run_id=1,
        run_name="a",
        signature={"model_size": "small", "resolved": rgb},
        settings={},
        dataset={},
        weights=[np.zeros(s, np.float32) for s in shapes],
        optimizer=scalars + [np.zeros(s, np.float32) for s in shapes for _ in (0, 1)],
        **({"architecture": {"model_size": "small"}} if format_2 else {}),
    )
    state.save_progress(dd, progress)

    renamed = runs.rename_run(dd, "a", "hero")
    assert renamed["name"] == "hero"
    names = sorted(p.name for p in dd.iterdir())
    assert "hero.step0000010.cat" in names and "hero.contact.step0000005.png" in names
    assert "hero.preview.step0000010.png" in names and "a.step0000010.cat" not in names
    assert (dd / "hero" / "events.out.tfevents.1.host.summary").read_text() == "events"
    assert not (dd / "a").exists()
    assert (dd / "a.b.step0000010.cat").exists() and (dd / "a.b").is_dir()  # untouched
    assert json.loads((dd / "latest.json").read_text()) == {
        "cat": "hero.step0000010.cat",
        "step": 10,
    }
    assert [r["name"] for r in runs.load_runs(dd)] == ["hero", "a.b"]
    assert state.load_progress_file(dd / "progress.ost").run_name == "hero"

    with pytest.raises(DataDirectoryError, match="already used"):
        runs.rename_run(dd, "hero", "a.b")
    with pytest.raises(DataDirectoryError, match="no run 'zzz'"):
        runs.rename_run(dd, "zzz", "y")
    (dd / "taken.step0000001.cat").write_text("stray")
    with pytest.raises(DataDirectoryError, match="already exists"):
        runs.rename_run(dd, "2", "taken")  # by id; a stray file has the target name
    assert runs.rename_run(dd, "2", "second")["name"] == "second"


def test_rename_refused_while_training_holds_the_lock(tmp_path, capsys):
    runs.start_run(tmp_path, {}, 0, 10)
    make_run_files(tmp_path, "run1")
    lock = DirectoryLock(tmp_path).acquire()  # its own open(): flock conflicts in-process too
    try:
        with pytest.raises(DataDirectoryError, match="in use by a training process"):
            runs.rename_run(tmp_path, "run1", "new")
        assert main(["runs", str(tmp_path), "--rename", "run1", "new"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("ccat-tf: error: cannot rename") and "\n" not in err
    finally:
        lock.release()
    assert (tmp_path / "run1.step0000010.cat").exists()
    assert main(["runs", str(tmp_path), "--rename", "run1", "new"]) == 0
    assert (tmp_path / "new.step0000010.cat").exists() and (tmp_path / "new").is_dir()


def test_table_and_cli(tmp_path, capsys):
    runs.start_run(tmp_path, SETTINGS, 0, 1000)
    runs.update_run(tmp_path, 1, status="interrupted", last_step=420, last_loss=0.0421)
    text = runs.format_run_table(runs.load_runs(tmp_path))
    header, rule, row = text.splitlines()
    assert header.split()[:4] == ["name", "status", "started", "steps"]
    assert "model_size" in header and "batch_size" in header and "crop_size" in header
    assert row.startswith("run1") and "interrupted" in row and "0-420 / 1000" in row
    assert "0.0421" in row and "small" in row and "auto (4)" in row and "64" in row

    assert main(["runs", str(tmp_path)]) == 0
    assert "0-420 / 1000" in capsys.readouterr().out
    assert main(["runs", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["runs"][0]["last_step"] == 420
    (tmp_path / "empty").mkdir()
    assert main(["runs", str(tmp_path / "empty")]) == 0
    assert "no runs" in capsys.readouterr().out


def test_best_checkpoint_and_rollbacks_in_the_table(tmp_path, capsys):
    runs.start_run(tmp_path, SETTINGS, 0, 1000)
    assert runs.best_checkpoint(tmp_path) is None
    runs.update_run(tmp_path, 1, best_step=600, best_val_psnr=31.4159)
    runs.add_rollback(tmp_path, 1, {"step": 700, "to_step": 650, "reason": "r", "lr_scale": 0.5})
    runs.add_rollback(tmp_path, 1, {"step": 900, "to_step": 880, "reason": "r", "lr_scale": 0.25})
    (run,) = runs.load_runs(tmp_path)
    assert [r["step"] for r in run["rollbacks"]] == [700, 900]
    header, _, row = runs.format_run_table([run]).splitlines()
    assert "best val PSNR" in header and "rollbacks" in header
    assert "31.42 dB @ 600" in row and "  2  " in row
    runs.start_run(tmp_path, SETTINGS, 1000, 2000)  # an old-style entry: no best, no rollbacks
    row = runs.format_run_table(runs.load_runs(tmp_path)).splitlines()[3]
    assert "  -  " in row and "  0  " in row
    assert main(["runs", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["runs"][0]["best_step"] == 600
    # The best checkpoint of the latest run that has one; a run rename takes it along.
    (tmp_path / "run1.best.cat").write_text("best")
    assert runs.best_checkpoint(tmp_path) == tmp_path / "run1.best.cat"
    (tmp_path / "run2.best.cat").write_text("best")
    assert runs.best_checkpoint(tmp_path) == tmp_path / "run2.best.cat"
    runs.rename_run(tmp_path, "run1", "hero")
    assert (tmp_path / "hero.best.cat").exists() and not (tmp_path / "run1.best.cat").exists()


@pytest.mark.parametrize(
    "field, value",
    [
        ("best_step", -1),
        ("best_step", 1.5),
        ("best_val_psnr", "high"),
        ("rollbacks", {"a": 1}),
        ("rollbacks", [1, 2]),
        ("steps_per_second", "fast"),
        ("stage", 0.5),
        ("updated", 12),
        ("seconds", [1.0]),
        ("seconds", {"training": "long"}),
        ("seconds", {"training": True}),
    ],
)
def test_bad_best_or_rollback_fields_are_damage(tmp_path, field, value):
    entry = {"id": 1, "name": "run1", field: value}
    (tmp_path / "runs.json").write_text(json.dumps({"runs": [entry]}))
    with pytest.raises(DataDirectoryError, match=f"run 1's {field} is"):
        runs.load_runs(tmp_path)
