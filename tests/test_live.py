"""live.py: a running training's progress in runs.json every few seconds, and `runs --follow`.

The writer here is :class:`ccat_tf.live.LiveProgress` driven by a thread (and a fake clock),
the way a training's callback drives it; that the .summary file is flushed on the same
schedule is tested with TensorFlow's real writer in tests/test_summary.py.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ccat_tf import live, runs
from ccat_tf.cli import main
from ccat_tf.errors import DataDirectoryError


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_progress_reaches_runs_json_once_per_interval(tmp_path):
    run = runs.start_run(tmp_path, {}, first_step=0, total_steps=1000)
    clock = Clock()
    progress = live.LiveProgress(tmp_path, run["id"], interval=10, clock=clock)
    assert not progress.step_done(1, 0.5, "1/4")  # the first step starts the speed count
    clock.now = 9.9
    assert not progress.step_done(100, 0.2, "1/4")
    assert runs.load_runs(tmp_path)[0]["last_step"] == 0  # nothing written within the interval
    clock.now = 11.0
    assert progress.step_done(221, 0.125, "1/2")
    (entry,) = runs.load_runs(tmp_path)
    assert (entry["last_step"], entry["last_loss"], entry["stage"]) == (221, 0.125, "1/2")
    assert entry["steps_per_second"] == pytest.approx(220 / 11.0)
    assert entry["status"] == "running" and entry["updated"]
    clock.now = 15.0
    assert not progress.step_done(300, 0.1, "1/2")
    clock.now = 21.0
    assert progress.step_done(421, float("nan"), "full")  # a NaN loss is stored as null
    entry = runs.load_runs(tmp_path)[0]
    assert entry["steps_per_second"] == pytest.approx(200 / 10.0) and entry["last_loss"] is None


def test_progress_line_shows_step_loss_speed_time_left_and_resolution():
    run = {
        "name": "run1",
        "status": "running",
        "last_step": 400,
        "total_steps": 1000,
        "last_loss": 0.0123456,
        "steps_per_second": 20.0,
        "stage": "1/2",
    }
    assert live.progress_line(run) == (
        "run1  step 400/1000  loss 0.01235  20.00 steps/s  left 00:30  res 1/2  running"
    )
    fresh = {"name": "run2", "status": "running", "last_step": 0, "total_steps": 10}
    assert (
        live.progress_line(fresh)
        == "run2  step 0/10  loss -  - steps/s  left --:--  res -  running"
    )
    done = dict(run, status="finished", last_step=1000)
    assert "left 00:00" in live.progress_line(done) and live.progress_line(done).endswith(
        "finished"
    )
    assert live.format_duration(3725) == "1:02:05"


def follow_while(folder, train, out) -> list[str]:
    """Runs ``train`` in a thread while ``live.follow`` follows ``folder`` into ``out``; the
    follower must return 0; its lines."""
    trainer = threading.Thread(target=train)
    trainer.start()
    try:
        assert live.follow(folder, out, poll=0.02) == 0
    finally:
        trainer.join()
    return out.getvalue().splitlines()


def wait_for(out, text: str) -> None:
    """Until the follower has printed ``text`` (a loaded machine must not make it skip one)."""
    deadline = time.monotonic() + 30
    while text not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_follow_shows_a_running_run_and_ends_with_it(tmp_path):
    """A thread plays the training: live updates, then the run ends; follow printed them all."""
    run = runs.start_run(tmp_path, {}, first_step=0, total_steps=300, name="hero")
    runs.start_run(tmp_path, {}, 0, 10, name="older")  # not running: not the one followed
    runs.update_run(tmp_path, 2, status="finished")
    clock = Clock()
    progress = live.LiveProgress(tmp_path, run["id"], interval=1, clock=clock)
    progress.step_done(1, 1.0, "1/4")

    out = io.StringIO()

    def train():
        wait_for(out, "step 0/300")
        for step in (100, 200, 300):
            clock.now += 2
            progress.step_done(step, 1.0 / step, "1/4" if step < 200 else "full")
            wait_for(out, f"step {step}/300")
        runs.update_run(tmp_path, run["id"], status="finished", last_step=300)

    lines = follow_while(tmp_path, train, out)
    assert lines[0].startswith("hero  step 0/300  loss -")
    assert "hero  step 200/300  loss 0.00500  50.00 steps/s  left 00:02  res full  running" in lines
    assert lines[-1].startswith("hero  step 300/300") and lines[-1].endswith("finished")
    assert len(lines) == len(set(lines))  # a line is printed when it changes, not every poll


def test_follow_of_a_run_that_stopped_reporting_gives_up_in_one_line(tmp_path):
    run = runs.start_run(tmp_path, {}, 0, 100)
    long_ago = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc).isoformat()
    runs.update_run(tmp_path, run["id"], started=long_ago, updated=long_ago)
    with pytest.raises(DataDirectoryError, match="has written nothing for more than 900 s"):
        live.follow(tmp_path, io.StringIO(), poll=0.01)


def test_runs_follow_on_the_command_line(tmp_path, capsys):
    assert main(["runs", str(tmp_path), "--follow"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ccat-tf: error: no run to follow in") and "\n" not in err
    runs.start_run(tmp_path, {}, 0, 100)
    runs.update_run(tmp_path, 1, status="interrupted", last_step=40, last_loss=0.25)
    assert main(["runs", str(tmp_path), "--follow"]) == 0  # an ended run: its last line
    assert capsys.readouterr().out == (
        "run1  step 40/100  loss 0.25000  - steps/s  left --:--  res -  interrupted\n"
    )
    assert main(["runs", str(tmp_path), "--follow", "--json"]) == 2
    assert "leave out --rename and --json" in capsys.readouterr().err


def _write_steps(writer, folder, steps, stage=0.5):
    from ccat_tf.summary import write_scalars

    for step in steps:
        write_scalars(writer, folder, step, {"loss": 1.0 / step, "stage_scale": stage})


def test_the_event_tail_reads_only_whole_new_records(tmp_path):
    """What a training logged since the last look, from its newest event file; a record the
    writer has not finished yet is read the next time."""
    from ccat_tf.summary import open_writer

    folder = tmp_path / "run1"
    writer = open_writer(folder)
    _write_steps(writer, folder, range(1, 6))
    writer.close()
    (events,) = folder.glob("*.summary")
    whole = events.read_bytes()
    tail = live.EventTail(folder)
    seen = tail.read()
    assert (seen["last_step"], seen["stage"]) == (5, "1/2")
    assert seen["last_loss"] == pytest.approx(0.2)  # logged as float32
    assert seen["steps_per_second"] > 0
    assert tail.offset == len(whole)  # everything so far was read, nothing twice
    assert tail.read()["last_step"] == 5
    # a resumed run writes a new file; its last record still being written is not read yet
    writer = open_writer(folder)
    _write_steps(writer, folder, [6])
    writer.close()
    newest = max(folder.glob("*.summary"), key=lambda p: p.stat().st_mtime_ns)
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) - 5])  # the last record (step 6's stage), cut short
    fresh = live.EventTail(folder)
    assert fresh.read()["last_step"] == 6 and "stage" not in fresh.read()
    newest.write_bytes(data)
    assert fresh.read()["stage"] == "1/2"


def test_follow_reads_a_training_that_only_logs_its_steps(tmp_path):
    """Without any live update of runs.json, the follower takes the steps from the event
    file the training flushes every step."""
    from ccat_tf.summary import open_writer

    run = runs.start_run(tmp_path, {}, first_step=0, total_steps=40)
    folder = tmp_path / run["name"]
    writer = open_writer(folder)

    out = io.StringIO()

    def train():
        wait_for(out, "step ")
        for start in (1, 11, 21, 31):
            _write_steps(writer, folder, range(start, start + 10), stage=1.0)
            wait_for(out, f"step {start + 9}/40")
        writer.close()
        runs.update_run(tmp_path, run["id"], status="finished", last_step=40)

    lines = follow_while(tmp_path, train, out)
    assert any(line.startswith("run1  step 20/40  loss 0.05000") for line in lines), lines
    assert all("res full" in line for line in lines[1:]), lines
    assert lines[-1].startswith("run1  step 40/40  loss 0.02500") and lines[-1].endswith("finished")


@pytest.mark.slow
def test_follow_a_real_training_to_its_end(tmp_path):
    """`ccat-tf train` in another process; the follower shows its steps while it runs, then
    its end."""
    repo = Path(__file__).resolve().parents[1]
    plate = repo / "demo" / "bikes"
    command = [sys.executable, "-m", "ccat_tf", "train", "--data-directory", str(tmp_path)]
    command += ["--input", str(plate / "plate" / "bikes.####.png")]
    command += ["--ground-truth", str(plate / "groundtruth" / "bikes.####.png")]
    command += ["--frames", "1001-1019x6", "--model-size", "small", "--crop-size", "32"]
    command += ["--batch-size", "2", "--epochs", "60", "--no-use-gpu-if-available"]
    env = dict(os.environ, PYTHONPATH=str(repo), TF_CPP_MIN_LOG_LEVEL="2")
    training = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    try:
        for _ in range(1200):
            if (tmp_path / "runs.json").exists() or training.poll() is not None:
                break
            time.sleep(0.1)
        out = io.StringIO()
        assert live.follow(tmp_path, out, poll=0.2) == 0
        assert training.wait(timeout=600) == 0
    finally:
        training.kill()
    lines = out.getvalue().splitlines()
    steps = [int(line.split()[2].split("/")[0]) for line in lines]
    assert any(0 < step < 120 for step in steps), lines  # seen while it ran
    assert lines[-1].startswith("run1  step 120/120") and lines[-1].endswith("finished"), lines
