"""ccat_tf.launch: N ranks of one training, locally on loopback or as one srun job step.

The ranks here are small Python programs standing in for ``ccat-tf train`` (what each rank is
given, and how the launch ends, does not depend on what the rank runs); the real trainings go
through the launcher in tests/test_workflow.py and tests/test_slurm.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ccat_tf import launch
from ccat_tf.errors import SettingsError

REPO = Path(__file__).resolve().parents[1]


def _rank_program(body: str) -> list[str]:
    """A rank: ``rank`` and ``out`` (a folder from argv) are defined before ``body`` runs."""
    head = "import json, os, signal, sys, time\nrank = int(os.environ['COPYCAT_RANK'])\n"
    return [sys.executable, "-c", head + textwrap.dedent(body)]


def test_each_local_rank_gets_the_loopback_variables_its_threads_and_gpus():
    base = {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "3,5,6,7", "COPYCAT_SYNC_INTERVAL": "4"}
    envs = [launch.local_env(base, r, 2, 29500, threads=8, gpus_per_task=2) for r in range(2)]
    for rank, env in enumerate(envs):
        assert env["COPYCAT_MAIN_ADDR"] == "127.0.0.1"
        assert env["COPYCAT_MAIN_PORT"] == "29500"
        assert env["COPYCAT_RANK"] == str(rank)
        assert env["COPYCAT_WORLD_SIZE"] == "2"
        assert env["OMP_NUM_THREADS"] == env["TF_NUM_INTRAOP_THREADS"] == "4"
        assert env["COPYCAT_SYNC_INTERVAL"] == "4" and env["PATH"] == "/bin"
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["3,5", "6,7"]
    # without --gpus-per-task every rank sees what the machine shows; at least one thread each
    env = launch.local_env(base, 1, 3, 1, threads=2, gpus_per_task=0)
    assert env["CUDA_VISIBLE_DEVICES"] == "3,5,6,7" and env["OMP_NUM_THREADS"] == "1"


def test_gpus_per_rank_without_a_device_list_and_with_too_short_a_list():
    assert [launch.rank_devices(None, r, 3, 1) for r in range(3)] == ["0", "1", "2"]
    with pytest.raises(SettingsError, match=r"CUDA_VISIBLE_DEVICES='0' lists 1 GPU.*need 2"):
        launch.rank_devices("0", 1, 2, 1)


def test_srun_step_runs_one_rank_per_task_and_drops_hand_set_ranks():
    call = launch.srun_command(["python", "-m", "ccat_tf", "train"], 4, 2, 3, 1)
    assert call == [
        "srun",
        "--ntasks=4",
        "--cpus-per-task=3",
        "--kill-on-bad-exit=1",
        "--nodes=2",
        "--gpus-per-task=1",
        "python",
        "-m",
        "ccat_tf",
        "train",
    ]
    assert "--nodes" not in " ".join(launch.srun_command(["x"], 2, 1, 1, 0))
    env = launch.srun_env({"COPYCAT_RANK": "0", "COPYCAT_SYNC_INTERVAL": "2", "HOME": "/h"}, 3)
    assert env == {
        "COPYCAT_SYNC_INTERVAL": "2",
        "HOME": "/h",
        "OMP_NUM_THREADS": "3",
        "TF_NUM_INTRAOP_THREADS": "3",
    }


def test_auto_is_srun_inside_a_slurm_job_only_for_several_tasks():
    assert launch.choose_via("auto", 2, {"SLURM_JOB_ID": "7"}) == "srun"
    assert launch.choose_via("auto", 1, {"SLURM_JOB_ID": "7"}) == "local"
    assert launch.choose_via("auto", 2, {}) == "local"
    assert launch.choose_via("srun", 1, {}) == "srun"


@pytest.mark.parametrize(
    "counts, message",
    [
        ((0, 1, 1, 0, "local"), "train_tasks (--tasks) is 0"),
        ((2, 0, 1, 0, "srun"), "train_nodes (--nodes) is 0"),
        ((2, 3, 1, 0, "srun"), "train_nodes 3 is more than train_tasks 2"),
        ((2, 2, 1, 0, "local"), "train_nodes 2 needs SLURM"),
        ((2, 1, 0, 0, "local"), "--threads is 0"),
        ((2, 1, 1, -1, "local"), "--gpus is -1"),
        ((2, 1, 1, 3, "srun"), "--gpus is 3; give 0, or a multiple of the 2 processes"),
    ],
)
def test_impossible_counts_are_one_line_errors(counts, message):
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        launch.check_counts(*counts)


def test_a_local_launch_runs_every_rank_and_waits_for_all(tmp_path):
    program = _rank_program(f"""
        time.sleep(0.3 * (1 - rank))  # rank 0 ends last: the launch must wait for it
        keys = ("COPYCAT_MAIN_ADDR", "COPYCAT_MAIN_PORT", "COPYCAT_RANK", "COPYCAT_WORLD_SIZE",
                "OMP_NUM_THREADS")
        seen = {{k: os.environ[k] for k in keys}}
        open(os.path.join({str(tmp_path)!r}, f"rank{{rank}}.json"), "w").write(json.dumps(seen))
    """)
    assert launch.run_local(program, tasks=2, threads=2, grace=5, say=lambda _: None) == 0
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [s["COPYCAT_RANK"] for s in seen] == ["0", "1"]
    assert {s["COPYCAT_WORLD_SIZE"] for s in seen} == {"2"}
    assert seen[0]["COPYCAT_MAIN_PORT"] == seen[1]["COPYCAT_MAIN_PORT"] != "0"
    assert {s["OMP_NUM_THREADS"] for s in seen} == {"1"}


def test_a_failing_rank_stops_the_others_and_its_status_is_the_launchs(tmp_path):
    program = _rank_program(f"""
        if rank == 1:
            sys.exit(3)
        def stop(*_):  # as a training does: save, then exit 75
            open(os.path.join({str(tmp_path)!r}, "rank0-stopped"), "w").close()
            sys.exit(75)
        signal.signal(signal.SIGTERM, stop)
        time.sleep(60)
    """)
    said = []
    start = time.monotonic()
    assert launch.run_local(program, tasks=2, threads=2, grace=20, say=said.append) == 3
    assert time.monotonic() - start < 15
    assert (tmp_path / "rank0-stopped").exists()
    assert said == ["ccat-tf launch: rank 1 of 2 exited with status 3; stopping the other ranks"]


def test_a_rank_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path):
    ready = tmp_path / "rank1-ignores-sigterm"
    program = _rank_program(f"""
        if rank == 0:
            while not os.path.exists({str(ready)!r}):
                time.sleep(0.02)
            sys.exit(1)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open({str(ready)!r}, "w").close()
        time.sleep(60)
    """)
    said = []
    start = time.monotonic()
    assert launch.run_local(program, tasks=2, threads=2, grace=1, say=said.append) == 1
    assert time.monotonic() - start < 10
    assert said[-1] == "ccat-tf launch: ranks still running 1 s later; killing them"


def _launcher(tmp_path: Path, body: str) -> subprocess.Popen:
    """A launcher process running two ranks of ``body``; each rank writes its pid first."""
    program = _rank_program(
        f"open(os.path.join({str(tmp_path)!r}, f'pid{{rank}}'), 'w').write(str(os.getpid()))\n"
        + textwrap.dedent(body)
    )
    code = (
        "import sys; from ccat_tf import launch\n"
        f"sys.exit(launch.run_local({program!r}, tasks=2, threads=2, grace=20))"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    for _ in range(200):
        if all((tmp_path / f"pid{r}").exists() for r in range(2)):
            return proc
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the ranks did not start")


def test_sigterm_to_the_launcher_reaches_every_rank_once(tmp_path):
    proc = _launcher(
        tmp_path,
        f"""
        count = 0
        def stop(*_):
            global count
            count += 1
        signal.signal(signal.SIGTERM, stop)
        for _ in range(100):
            if count:
                break
            time.sleep(0.05)
        time.sleep(0.5)  # a second SIGTERM would arrive now
        open(os.path.join({str(tmp_path)!r}, f"count{{rank}}"), "w").write(str(count))
        sys.exit(75 if count else 0)
        """,
    )
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 75  # interrupted, progress saved: Snakemake/SLURM retry
    assert [(tmp_path / f"count{r}").read_text() for r in range(2)] == ["1", "1"]


def test_a_killed_launcher_takes_its_ranks_along(tmp_path):
    proc = _launcher(tmp_path, "time.sleep(60)")
    pids = [int((tmp_path / f"pid{r}").read_text()) for r in range(2)]
    proc.kill()
    proc.wait(timeout=10)
    for _ in range(100):
        alive = [p for p in pids if _alive(p)]
        if not alive:
            break
        time.sleep(0.05)
    assert not alive, f"ranks {alive} outlived their launcher"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_the_command_line_names_the_setting_in_one_line():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "ccat_tf.launch", "--tasks", "2", "--nodes", "3", "--", "train"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "ccat-tf: error: train_nodes 3 is more than train_tasks 2; every machine needs at least "
        "one process: raise train_tasks or lower train_nodes"
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "ccat_tf.launch", "--tasks", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 2 and "launch needs the command the ranks run" in proc.stderr


@pytest.mark.slow
def test_sigterm_to_a_local_launch_saves_and_the_same_launch_resumes(tmp_path):
    """Preemption of a 2-rank local training: the launcher passes SIGTERM on, rank 0 saves the
    progress, the launch exits 75; the same command again resumes and finishes."""
    plate = REPO / "demo" / "bikes"
    data = tmp_path / "dd"
    command = [sys.executable, "-m", "ccat_tf.launch", "--tasks", "2", "--threads", "2", "--"]
    command += ["train", "--data-directory", str(data), "--output", str(tmp_path / "m.cat")]
    command += ["--input", str(plate / "plate" / "bikes.####.png")]
    command += ["--ground-truth", str(plate / "groundtruth" / "bikes.####.png")]
    command += ["--frames", "1001-1019x6", "--model-size", "small", "--crop-size", "32"]
    command += ["--batch-size", "2", "--epochs", "60", "--contact-sheet-interval", "5"]
    command += ["--no-use-gpu-if-available"]
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    first = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(1200):
            if (data / "progress.ost").exists() or first.poll() is not None:
                break
            time.sleep(0.1)
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=300)
    finally:
        first.kill()
    assert first.returncode == 75, err[-2000:]
    assert "SIGTERM received: progress saved at step" in err, err[-2000:]
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-2000:]
    assert re.search(r"resuming \S+ at step [1-9]", again.stderr), again.stderr[:2000]
    stopped, resumed = json.loads((data / "runs.json").read_text())["runs"]  # a resume: a run
    assert stopped["status"] == "interrupted" and stopped["last_step"] > 0
    assert (resumed["status"], resumed["first_step"]) == ("finished", stopped["last_step"])
    assert resumed["last_step"] == 120
