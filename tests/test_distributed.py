"""Distributed training (issue 13): who a process is (settings, COPYCAT_*, SLURM, TF_CONFIG), the
ranks' rendezvous and its one-line errors, and 2 processes on loopback training the network 1
process trains."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_settings

from ccat_tf import distributed
from ccat_tf.distributed import Cluster, RankError
from ccat_tf.errors import SettingsError
from ccat_tf.settings import LAUNCH_KEYS, TrainSettings

REPO = Path(__file__).resolve().parents[1]


def settings(**kw) -> TrainSettings:
    return TrainSettings.from_mapping(kw)


COPYCAT = {
    "COPYCAT_MAIN_ADDR": "10.0.0.5",
    "COPYCAT_MAIN_PORT": "4000",
    "COPYCAT_RANK": "1",
    "COPYCAT_WORLD_SIZE": "3",
}


# ---- resolve: a pure function of (settings, environment) ----------------------------------
def test_copycat_variables_make_a_cluster():
    cluster, notices = distributed.resolve(settings(), COPYCAT)
    assert cluster == Cluster(1, 3, "10.0.0.5", 4000, "COPYCAT")
    assert not notices


def test_settings_win_over_variables_and_fill_the_missing_ones():
    env = {k: v for k, v in COPYCAT.items() if k != "COPYCAT_RANK"}
    cluster, _ = distributed.resolve(settings(rank=2, main_port=5000), env)
    assert (cluster.rank, cluster.world, cluster.main_port) == (2, 3, 5000)


def test_a_missing_variable_means_training_alone_with_a_notice():
    env = {k: v for k, v in COPYCAT.items() if k != "COPYCAT_MAIN_PORT"}
    cluster, notices = distributed.resolve(settings(), env)
    assert cluster is None
    assert len(notices) == 1 and "main_port (COPYCAT_MAIN_PORT) not set" in notices[0]
    assert distributed.resolve(settings(), {}) == (None, [])


@pytest.mark.parametrize(
    "env, message",
    [
        ({"COPYCAT_RANK": "3"}, "rank 3 is not below world_size 3; use a rank from 0 to 2"),
        ({"COPYCAT_WORLD_SIZE": "0", "COPYCAT_RANK": "0"}, "world_size is 0; use 1 or more"),
        ({"COPYCAT_WORLD_SIZE": "-2"}, "world_size is -2; use 1 or more"),
        ({"COPYCAT_RANK": "one"}, "COPYCAT_RANK is 'one'; use a whole number (rank)"),
        ({"COPYCAT_MAIN_PORT": "70000"}, "main_port is 70000; use a port from 1 to 65535"),
    ],
)
def test_impossible_launch_values_are_one_line_errors(env, message):
    with pytest.raises(SettingsError) as err:
        distributed.resolve(settings(), {**COPYCAT, **env})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_rank_beyond_world_size_from_settings_is_refused():
    with pytest.raises(SettingsError, match="rank 4 is not below world_size 2"):
        distributed.resolve(settings(main_addr="h", main_port=9, rank=4, world_size=2), {})


def test_slurm_step_with_several_tasks():
    env = {
        "SLURM_NTASKS": "4",
        "SLURM_PROCID": "2",
        "SLURM_STEP_NODELIST": "gpu[07-08],cpu1",
        "SLURM_JOB_NODELIST": "ignored",
        "SLURM_JOB_ID": "123456",
    }
    cluster, _ = distributed.resolve(settings(), env)
    assert cluster == Cluster(2, 4, "gpu07", 20000 + 123456 % 20000, "SLURM")
    cluster, _ = distributed.resolve(settings(main_port=31000), env)
    assert cluster.main_port == 31000
    # one task (sbatch's own shell, or srun -n1): training alone
    assert distributed.resolve(settings(), {**env, "SLURM_NTASKS": "1"})[0] is None


def test_slurm_node_lists_expand_as_scontrol_does():
    assert distributed.expand_nodelist("node[01-03,07],gpu5") == [
        "node01",
        "node02",
        "node03",
        "node07",
        "gpu5",
    ]
    assert distributed.expand_nodelist("a1") == ["a1"]
    assert distributed.expand_nodelist("r[9-10]x") == ["r9x", "r10x"]


def test_tf_config_is_used_as_it_is():
    config = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}
    cluster, _ = distributed.resolve(settings(), {"TF_CONFIG": json.dumps(config)})
    assert cluster == Cluster(1, 2, "", 0, "TF_CONFIG", ("a:1", "b:2"))
    with pytest.raises(SettingsError, match="TF_CONFIG is not a worker cluster"):
        distributed.resolve(settings(), {"TF_CONFIG": '{"cluster": {"ps": ["a:1"]}}'})


def test_sync_interval_other_than_one_is_refused():
    assert distributed.sync_interval(settings(), {}) == 1
    with pytest.raises(SettingsError, match="sync_interval 4 is not supported; use 1"):
        distributed.sync_interval(settings(), {"COPYCAT_SYNC_INTERVAL": "4"})
    with pytest.raises(SettingsError, match="sync_interval 2 is not supported; use 1"):
        distributed.sync_interval(settings(sync_interval=2), {})


def test_launch_settings_are_not_part_of_a_runs_signature():
    from ccat_tf.training import COMPATIBLE_KEYS

    assert LAUNCH_KEYS <= COMPATIBLE_KEYS
    assert LAUNCH_KEYS <= set(TrainSettings.__dataclass_fields__)


# ---- the rendezvous (sockets only) ----------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def distributed_free_ports(n: int) -> int:
    """A base port with ``n`` consecutive ports free now."""
    while True:
        base = free_port()
        try:
            for i in range(n):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue


def meet_all(world: int, digests: dict, timeout: float = 10.0, ranks=None):
    """Run meet() for ``ranks`` (default all) in threads; {rank: workers or the exception}."""
    port = free_port()
    out = {}

    def one(rank):
        cluster = Cluster(rank, world, "127.0.0.1", port, "COPYCAT")
        try:
            out[rank] = distributed.meet(cluster, digests.get(rank, {"a": "1"}), timeout)
        except Exception as err:  # noqa: BLE001 - returned to the test
            out[rank] = err

    threads = [threading.Thread(target=one, args=(r,)) for r in (ranks or range(world))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


def test_ranks_meet_and_learn_every_workers_address():
    out = meet_all(3, {})
    assert out[0] == out[1] == out[2]
    assert len(set(out[0])) == 3 and all(a.startswith("127.0.0.1:") for a in out[0])


def test_a_rank_with_other_settings_is_named_on_every_rank():
    out = meet_all(2, {0: {"model_size": "x", "seed": "1"}, 1: {"model_size": "y", "seed": "1"}})
    for rank in (0, 1):
        assert isinstance(out[rank], RankError)
        assert "rank 1 was started with other model_size than rank 0" in str(out[rank])


def test_a_rank_that_never_arrives_is_named_within_the_timeout():
    t0 = time.monotonic()
    out = meet_all(3, {}, timeout=1.5, ranks=[0, 1])
    assert time.monotonic() - t0 < 10
    assert isinstance(out[0], RankError)
    assert "rank 2 did not arrive within rank_timeout 1.5 s" in str(out[0])
    assert isinstance(out[1], RankError)  # told by rank 0, or its own wait ran out


def test_an_unreachable_main_address_is_a_one_line_error():
    cluster = Cluster(1, 2, "127.0.0.1", free_port(), "COPYCAT")
    t0 = time.monotonic()
    with pytest.raises(
        RankError, match="rank 0 at 127.0.0.1:.* did not answer within rank_timeout"
    ):
        distributed.meet(cluster, {}, 1.0)
    assert time.monotonic() - t0 < 10


def test_a_main_port_in_use_is_a_one_line_error():
    with socket.socket() as busy:
        busy.bind(("", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        cluster = Cluster(0, 2, "127.0.0.1", port, "COPYCAT")
        with pytest.raises(RankError, match=f"main_port {port} is already in use on this machine"):
            distributed.meet(cluster, {}, 1.0)


# ---- processes ---------------------------------------------------------------------------------
RANK = r"""
import json, sys
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
import ccat_tf
from ccat_tf.errors import CcatError
if "--die-after-meeting" in sys.argv:  # a rank that dies between the rendezvous and TensorFlow
    import os
    from ccat_tf.training import TrainingRun
    TrainingRun.load_frames = lambda self: os._exit(9)
try:
    print("RESULT" + str(ccat_tf.train(json.loads(sys.argv[1]), progress_bar=False)), flush=True)
except CcatError as err:
    print(f"ccat-tf: error: {err}", file=sys.stderr, flush=True)
    if err.ends_process:  # as the CLI does: a lost rank's TensorFlow cannot shut down cleanly
        import os
        sys.stdout.flush()
        os._exit(err.exit_code)
    sys.exit(err.exit_code)
"""


def launch(
    settings_: dict, world: int, port: int, ranks=None, dies=(), per_rank=None, tf_config=False
) -> list:
    """Start ranks as processes with COPYCAT_* (or, ``tf_config``, TF_CONFIG with workers on
    ``port``, ``port`` + 1, ...); ``per_rank``: {rank: settings overrides}."""
    procs = []
    for rank in ranks if ranks is not None else range(world):
        extra = ["--die-after-meeting"] if rank in dies else []
        e = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
        if tf_config:
            workers = [f"127.0.0.1:{port + i}" for i in range(world)]
            e["TF_CONFIG"] = distributed.tf_config(workers, rank)
        else:
            e.update(
                COPYCAT_MAIN_ADDR="127.0.0.1",
                COPYCAT_MAIN_PORT=str(port),
                COPYCAT_RANK=str(rank),
                COPYCAT_WORLD_SIZE=str(world),
            )
        own = {**settings_, **(per_rank or {}).get(rank, {})}
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", RANK, json.dumps(own), *extra],
                env=e,
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return procs


def finish(procs, timeout=300):
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=timeout)
        out.append((p.returncode, stdout, stderr))
    return out


def losses_of(data_directory) -> list[float]:
    from ccat_tf.summary import read_summaries

    return read_summaries(data_directory)["loss"].tolist()


@pytest.mark.slow  # two training processes on loopback, ~30 s
def test_two_processes_on_loopback_train_what_one_process_trains(tiny_dataset, tmp_path):
    """Same seed and global batch (4: 2 per rank), deterministic ops: 40 steps."""
    base = tiny_settings(
        tiny_dataset,
        tmp_path / "x",
        epochs=40,
        batch_size=4,
        deterministic=True,
        checkpoint_interval=20,
        contact_sheet_interval=20,
    )
    one = {**base, "data_directory": str(tmp_path / "one")}
    two = {**base, "data_directory": str(tmp_path / "two")}
    [(code, _, err)] = finish(launch(one, 1, free_port()))
    assert code == 0, err[-3000:]
    results = finish(launch(two, 2, free_port()))
    for code, _, err in results:
        assert code == 0, err[-3000:]
    # rank 0 returns the final .cat, rank 1 the Data Directory, which it did not write in
    assert results[0][1].strip().endswith("run1.step0000040.cat")
    assert results[1][1].strip() == "RESULT" + str(tmp_path / "two")
    assert results[1][2].count("checkpoint (rank 0 writes it)") == 1  # step 20; 40 is the end
    a, b = losses_of(tmp_path / "one"), losses_of(tmp_path / "two")
    assert len(a) == len(b) == 40
    worst = float(np.max(np.abs(np.array(b) - np.array(a)) / np.abs(np.array(a))))
    print(f"2 ranks vs 1 process: largest relative loss difference in 40 steps {worst:.2e}")
    # Only the all-reduce's float summation order differs, which Adam amplifies a little: the
    # largest difference was 1.4e-4 with the network whose U-Net sees no coordinates (under 1e-4
    # before). A wrong gradient scale (one rank's gradient, or twice it) changes the steps
    # themselves, far beyond this.
    np.testing.assert_allclose(b, a, rtol=1e-3)
    import ccat_tf

    wa = ccat_tf.load_model(tmp_path / "one" / "run1.step0000040.cat").get_weights()
    wb = ccat_tf.load_model(tmp_path / "two" / "run1.step0000040.cat").get_weights()
    assert max(float(np.max(np.abs(x - y))) for x, y in zip(wa, wb, strict=True)) < 1e-3
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == sorted(
        p.name for p in (tmp_path / "two").iterdir()
    )


def wait_for(predicate, procs, timeout=240):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        for p in procs:
            if p.poll() is not None:
                pytest.fail(f"a rank ended early: {p.communicate()[1][-3000:]}")
        time.sleep(0.2)
    pytest.fail("timed out waiting")


def long_run(tiny_dataset, tmp_path, **kw):
    return {
        **tiny_settings(
            tiny_dataset,
            tmp_path / "dd",
            epochs=2000,
            batch_size=4,
            checkpoint_interval=1000,
            contact_sheet_interval=10,  # progress every 10 steps
        ),
        **kw,
    }


@pytest.mark.slow  # two processes, then a relaunch
def test_sigterm_stops_every_rank_at_one_step_rank_0_saves_and_a_relaunch_resumes(
    tiny_dataset, tmp_path
):
    s = long_run(tiny_dataset, tmp_path)
    procs = launch(s, 2, free_port())
    wait_for(lambda: (tmp_path / "dd" / "progress.ost").exists(), procs)
    procs[1].send_signal(signal.SIGTERM)  # one rank only: the other follows at the same step
    results = finish(procs, timeout=120)
    assert [code for code, _, _ in results] == [75, 75], results[0][2][-2000:]
    saved = results[0][2].split("SIGTERM received: progress saved at step ")[1].split()[0]
    assert f"rank 1: stopped at step {saved} of 2000" in results[1][2]
    assert not any(p.name.startswith("rank") for p in (tmp_path / "dd").iterdir())
    # rank 1 not seeing the shared Data Directory: it would start at step 0, rank 0 resumes
    (tmp_path / "elsewhere").mkdir()
    other = {1: {"data_directory": str(tmp_path / "elsewhere")}}
    results = finish(launch(s, 2, distributed_free_ports(2), per_rank=other, tf_config=True))
    for code, _, err in results:
        assert code == 2
        assert "rank 1 was started with other start_step (the shared Data Directory's" in err
    assert list((tmp_path / "elsewhere").iterdir()) == []
    # the same training resumes, launched by TF_CONFIG this time (fewer epochs: a compatible
    # change, to end soon)
    resumed = {**s, "epochs": int(saved) + 6}
    base = distributed_free_ports(2)
    results = finish(launch(resumed, 2, base, tf_config=True))
    assert [code for code, _, _ in results] == [0, 0], results[0][2][-2000:]
    assert f"resuming run1 at step {saved} of {int(saved) + 6}" in results[0][2]
    assert f"resuming run1 at step {saved}" in results[1][2]
    import ccat_tf

    runs = ccat_tf.list_runs(tmp_path / "dd")
    assert [(r["status"], r["first_step"]) for r in runs] == [
        ("interrupted", 0),
        ("finished", int(saved)),
    ]


@pytest.mark.slow  # two processes, then a relaunch
def test_a_killed_rank_ends_the_others_in_bounded_time_and_a_relaunch_resumes(
    tiny_dataset, tmp_path
):
    s = long_run(tiny_dataset, tmp_path, rank_timeout=20)
    procs = launch(s, 2, free_port())
    wait_for(lambda: (tmp_path / "dd" / "progress.ost").exists(), procs)
    procs[1].kill()
    t0 = time.monotonic()
    code, _, err = finish(procs[:1], timeout=180)[0]
    waited = time.monotonic() - t0
    procs[1].wait()
    print(f"rank 0 ended {waited:.1f} s after rank 1 was killed: {err.strip().splitlines()[-1]}")
    assert code not in (0, None) and waited < 20 + 60
    assert "rank 1 stopped answering" in err.strip().splitlines()[-1]
    from ccat_tf import state

    kept = state.load_latest_progress(tmp_path / "dd")
    assert kept is not None and kept.step >= 10
    results = finish(launch({**s, "epochs": kept.step + 4}, 2, free_port()))
    assert [code for code, _, _ in results] == [0, 0], results[0][2][-2000:]
    assert f"resuming run1 at step {kept.step}" in results[0][2]


@pytest.mark.slow
def test_a_rank_that_hangs_ends_the_others_after_rank_timeout(tiny_dataset, tmp_path):
    s = long_run(tiny_dataset, tmp_path, rank_timeout=15)
    procs = launch(s, 2, free_port())
    wait_for(lambda: (tmp_path / "dd" / "progress.ost").exists(), procs)
    procs[1].send_signal(signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        code, _, err = finish(procs[:1], timeout=180)[0]
    finally:
        procs[1].kill()
        procs[1].wait()
    waited = time.monotonic() - t0
    print(f"rank 0 ended {waited:.1f} s after rank 1 hung: {err.strip().splitlines()[-1]}")
    assert code not in (0, None) and waited < 15 + 60
    assert "stopped answering" in err.strip().splitlines()[-1]


@pytest.mark.slow
def test_a_rank_that_dies_before_tensorflow_starts_ends_the_others(tiny_dataset, tmp_path):
    s = long_run(tiny_dataset, tmp_path, rank_timeout=15)
    procs = launch(s, 2, free_port(), dies=(1,))
    t0 = time.monotonic()
    results = finish(procs, timeout=180)
    waited = time.monotonic() - t0
    code, _, err = results[0]
    print(f"rank 0 ended after {waited:.1f} s: {err.strip().splitlines()[-1]}")
    assert results[1][0] == 9
    assert code not in (0, None) and waited < 15 + 90
    assert "rank 0" in err.strip().splitlines()[-1]


def test_a_data_directory_rank_0_cannot_write_ends_every_rank(tiny_dataset, tmp_path):
    (tmp_path / "file").write_text("")
    s = tiny_settings(tiny_dataset, tmp_path / "file" / "dd", rank_timeout=3)
    results = finish(launch(s, 2, free_port()), timeout=120)
    assert results[0][0] == 2
    assert "cannot write" in results[0][2] and "a folder on its path is a file" in results[0][2]
    assert results[1][0] == 2
    assert (
        "rank 0 at 127.0.0.1:" in results[1][2]
        and "did not answer within rank_timeout 3 s" in (results[1][2])
    )


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--rank", "3", "--world-size", "2"], "rank 3 is not below world_size 2"),
        (["--rank", "0", "--world-size", "2", "--sync-interval", "4"], "sync_interval 4 is not"),
        (["--rank", "0", "--world-size", "2", "--time-limit", "5"], "time_limit is not supported"),
    ],
)
def test_the_cli_says_launch_errors_in_one_line(tmp_path, flags, message):
    args = ["--input", "a.####.png", "--ground-truth", "b.####.png", "--frames", "1"]
    args += ["--data-directory", str(tmp_path / "dd"), "--main-addr", "127.0.0.1"]
    args += ["--main-port", str(free_port()), *flags]
    proc = subprocess.run(
        [sys.executable, "-m", "ccat_tf", "train", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and message in proc.stderr
    assert not (tmp_path / "dd").exists()
