"""Nothing lost: one test per guarantee of README "What we guarantee" (issue 5).

1. atomic files (SIGKILL at random moments, scripts/kill_trials.py)
2. exact resume, bit for bit (checkpoint boundary, multi-resolution stage boundary)
3. corrupt .ost / .cat: fall back with a warning naming the file, or one clear error
4. NaN/Inf loss: a clear stop; the .ost and .cat from before the NaN are kept
5. one writer per Data Directory; a stale lock does not block
6. disk full (injected ENOSPC) and an unwritable Data Directory (a real EACCES)
7. preemption: SIGTERM from another process saves an .ost, exits 75, and the rerun resumes

Tiny data (4 pairs of 96x96, crop 32, the small model); CPU only.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib.util
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
from bad_inputs.corpus import run_unprivileged
from conftest import REPO, make_tiny_dataset, tiny_settings

import ccat_tf
from ccat_tf import catfile, cli, state
from ccat_tf.atomic import TEMP_MARK
from ccat_tf.errors import (
    DataDirectoryError,
    ModelFileError,
    NonFiniteLoss,
    TrainingInterrupted,
)

# 20 steps (4 pairs, batch 2, 10 epochs); stages 1/4, 1/2, full start at steps 0, 5, 10.
# Checkpoints at 6, 12, 18 and 20; contact sheets (and an .ost) every 4 steps.
EXACT = dict(epochs=10, deterministic=True, checkpoint_interval=6, contact_sheet_interval=4)


# ---- helpers ----------------------------------------------------------------------------------


def snapshot(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def changed(before: dict, after: dict, ignore=("runs.json",)) -> list[str]:
    """Files of ``before`` that changed or vanished (``ignore``: names allowed to change; the
    run table and the append-only .summary event files record the failed run)."""
    return [
        name
        for name, digest in before.items()
        if after.get(name) != digest and name not in ignore and not name.endswith(".summary")
    ]


def temps(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.startswith(TEMP_MARK)]


def weights_of(path) -> list[np.ndarray]:
    return ccat_tf.load_model(path).get_weights()


def assert_same_weights(a, b) -> None:
    assert len(a) == len(b)
    for wa, wb in zip(a, b, strict=True):
        assert np.array_equal(wa, wb)


def wait_for(predicate, timeout: float, proc=None, what="condition") -> None:
    """Poll ``predicate`` every 20 ms; fail after ``timeout`` s or if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def train_cmd(settings: dict) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ccat_tf",
        "train",
        "--no-progress",
        "--settings-json",
        json.dumps({k: v for k, v in settings.items() if k != "root"}),
    ]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("ccat-tf: error:")]


def run_cli(argv: list[str]) -> tuple[int, str]:
    """``ccat-tf ARGV`` in this process; (exit status, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(argv)
    return code, err.getvalue()


class At(keras.callbacks.Callback):
    """Call ``action(global_step)`` at the end (or ``begin``) of the given global steps."""

    def __init__(self, steps, action, *, start=0, when="end"):
        super().__init__()
        self.steps, self.action, self.start, self.when = set(steps), action, start, when

    def on_train_batch_begin(self, batch, logs=None):
        if self.when == "begin" and self.start + batch + 1 in self.steps:
            self.action(self.start + batch + 1)

    def on_train_batch_end(self, batch, logs=None):
        if self.when == "end" and self.start + batch + 1 in self.steps:
            self.action(self.start + batch + 1)


def sigterm_self(step):
    os.kill(os.getpid(), signal.SIGTERM)


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def straight(ds, tmp_path_factory):
    """The uninterrupted deterministic run every resumed run must equal, bit for bit."""
    dd = tmp_path_factory.mktemp("straight") / "dd"
    ccat_tf.train(tiny_settings(ds, dd, **EXACT), progress_bar=False)
    weights = {step: weights_of(dd / f"run1.step{step:07d}.cat") for step in (6, 12, 18, 20)}
    return {**weights, "dd": dd}


def copy_of(dd: Path, tmp_path: Path) -> Path:
    """A copy of a Data Directory (its settings name data_directory only as a compatible key)."""
    shutil.copytree(dd, tmp_path / "dd")
    return tmp_path / "dd"


# ---- 1. atomic files ---------------------------------------------------------------------------


@pytest.mark.slow  # about a minute: CI runs it (pytest -m slow); the default run stays short
def test_1_sigkill_at_random_moments_leaves_only_complete_files(tmp_path):
    """scripts/kill_trials.py --trials 3: SIGKILL `ccat-tf train` at seeded random moments (half
    of them the instant a temporary file appears, i.e. mid-write); every file left loads, the
    rerun removes the temporary files and finishes at the same total steps."""
    spec = importlib.util.spec_from_file_location("kill_trials", REPO / "scripts/kill_trials.py")
    kill_trials = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kill_trials)
    results = kill_trials.run_trials(3, seed=1, workdir=tmp_path, log=lambda *a: None)
    assert len(results) == 3
    # The seeded trials really interrupt training part-way, with files written before the kill.
    assert all(r["what"].startswith("killed") for r in results), results
    assert all(0 < r["resumed_at"] < kill_trials.TOTAL_STEPS for r in results), results
    assert any(r["temp"] for r in results), "no trial was killed in the middle of a write"


# ---- 2. exact resume ---------------------------------------------------------------------------


def test_2_crash_right_after_a_checkpoint_resumes_bit_exact(ds, straight, tmp_path):
    """A crash (an exception, nothing saved on the way out) just after the checkpoint at step 12:
    the rerun resumes from the .ost that checkpoint wrote and ends bit-identical."""
    dd = tmp_path / "dd"
    s = tiny_settings(ds, dd, **EXACT)

    def crash(step):
        raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        ccat_tf.train(s, callbacks=[At([12], crash)], progress_bar=False)
    assert state.load_latest_progress(dd).step == 12
    final = ccat_tf.train(s, progress_bar=False)
    runs = ccat_tf.list_runs(dd)
    assert [(r["status"], r["first_step"], r["last_step"]) for r in runs] == [
        ("failed", 0, 12),
        ("finished", 12, 20),
    ]
    assert_same_weights(weights_of(dd / "run1.step0000012.cat"), straight[12])
    assert_same_weights(weights_of(final), straight[20])


@pytest.mark.parametrize("stop", [5, 10], ids=["quarter-to-half", "half-to-full"])
def test_2_sigterm_exactly_at_a_stage_boundary_resumes_bit_exact(ds, straight, tmp_path, stop):
    """Stopped at the last step of a multi-resolution stage (the next step trains on another
    level, and at 10 with another crop size): the resumed run matches at every later checkpoint."""
    dd = tmp_path / "dd"
    s = tiny_settings(ds, dd, **EXACT)
    with pytest.raises(TrainingInterrupted, match=f"progress saved at step {stop} of 20"):
        # Signalled as step `stop` begins; honoured at its end.
        ccat_tf.train(s, callbacks=[At([stop], sigterm_self, when="begin")], progress_bar=False)
    progress = state.load_progress_file(dd / "progress.ost")
    assert progress.step == stop and progress.stage == (0 if stop == 5 else 1)
    ccat_tf.train(s, progress_bar=False)
    for step in (12, 18, 20):
        assert_same_weights(weights_of(dd / f"run2.step{step:07d}.cat"), straight[step])


# ---- 3. corrupt state --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def interrupted(ds, tmp_path_factory):
    """A Data Directory stopped at step 10: progress.ost at 10, progress.prev.ost at 8."""
    dd = tmp_path_factory.mktemp("interrupted") / "dd"
    s = tiny_settings(ds, dd, **EXACT)
    with pytest.raises(TrainingInterrupted):
        ccat_tf.train(s, callbacks=[At([10], sigterm_self, when="begin")], progress_bar=False)
    assert state.load_progress_file(dd / "progress.prev.ost").step == 8
    return dd


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(len(data)))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "bitflip":
        # One byte inside a weight array: only HDF5's Fletcher-32 checksum can notice.
        import h5py

        with h5py.File(path, "r") as h5:
            offset = h5["weights/00000"].id.get_chunk_info(0).byte_offset
        flipped = bytearray(data)
        flipped[offset + 5] ^= 0x40
        path.write_bytes(bytes(flipped))
    else:
        raise ValueError(how)


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty", "bitflip"])
def test_3_damaged_progress_falls_back_to_the_previous_one(interrupted, tmp_path, how):
    dd = copy_of(interrupted, tmp_path)
    damage(dd / "progress.ost", how)
    with pytest.warns(UserWarning, match=rf"progress file {dd / 'progress.ost'} is damaged"):
        progress = state.load_latest_progress(dd)
    assert (progress.path.name, progress.step) == ("progress.prev.ost", 8)


def test_3_training_resumes_exactly_from_the_previous_progress(ds, straight, interrupted, tmp_path):
    """Via the CLI: one warning line naming the damaged file, then a resume from the older .ost
    that still ends bit-identical to the uninterrupted run."""
    dd = copy_of(interrupted, tmp_path)
    damage(dd / "progress.ost", "bitflip")
    s = tiny_settings({k: ds[k] for k in ("input", "ground_truth", "frames")}, dd, **EXACT)
    code, err = run_cli(["train", "--no-progress", "--settings-json", json.dumps(s)])
    assert code == 0, err
    warning = [line for line in err.splitlines() if line.startswith("ccat-tf: warning:")]
    assert len(warning) == 1 and f"progress file {dd / 'progress.ost'} is damaged" in warning[0]
    assert "falling back to the previous progress file" in warning[0]
    assert "resuming run1 at step 8 of 20" in err
    assert_same_weights(weights_of(dd / "run2.step0000020.cat"), straight[20])


def test_3_all_progress_files_damaged_is_one_clear_error(ds, interrupted, tmp_path):
    dd = tmp_path / "dd"
    shutil.copytree(interrupted, dd)
    damage(dd / "progress.ost", "truncated")
    damage(dd / "progress.prev.ost", "garbage")
    before = snapshot(dd)
    code, err = run_cli(
        [
            "train",
            "--no-progress",
            "--settings-json",
            json.dumps(tiny_settings({k: ds[k] for k in ("input", "ground_truth", "frames")}, dd)),
            "--epochs",
            "10",
            "--deterministic",
        ]
    )
    assert code == 2
    assert "Traceback" not in err
    (line,) = error_lines(err)
    assert "no usable progress file in" in line and "progress.prev.ost is damaged" in line
    assert "move the damaged .ost files away to start a new run" in line
    assert snapshot(dd) == before


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_3_damaged_checkpoint_file_is_a_one_line_error(ds, tmp_path, how):
    bad = _any_cat(tmp_path)
    damage(bad, how)
    dd = tmp_path / "dd"
    code, err = run_cli(
        [
            "train",
            "--no-progress",
            "--settings-json",
            json.dumps(
                tiny_settings(
                    {k: ds[k] for k in ("input", "ground_truth", "frames")},
                    dd,
                    epochs=1,
                    initial_weights="checkpoint",
                    checkpoint_file=str(bad),
                )
            ),
        ]
    )
    assert code == 2 and "Traceback" not in err
    (line,) = error_lines(err)
    assert str(bad) in line and "use another checkpoint" in line
    assert not list(dd.glob("*.cat")) and not (dd / "runs.json").exists()


def _any_cat(tmp_path) -> Path:
    from ccat_tf.models import build_model

    path = tmp_path / "bad.cat"
    catfile.save_cat(
        path,
        build_model(3, 3, "small", residual=True),
        {
            "model_size": "small",
            "input_channels": ["R", "G", "B"],
            "output_channels": ["R", "G", "B"],
        },
    )
    return path


def test_3_latest_json_naming_a_damaged_cat_falls_back(ds, straight, tmp_path):
    dd = copy_of(straight["dd"], tmp_path)
    final = dd / "run1.step0000020.cat"
    assert json.loads((dd / "latest.json").read_text())["cat"] == final.name
    damage(final, "truncated")
    with pytest.warns(UserWarning, match=r"run1\.step0000020\.cat .*skipping it"):
        assert catfile.latest_good_checkpoint(dd) == dd / "run1.step0000018.cat"
    with pytest.warns(UserWarning, match=r"run1\.step0000020\.cat"):
        net = ccat_tf.load_model(dd)
    assert_same_weights(net.get_weights(), weights_of(dd / "run1.step0000018.cat"))
    # Training again on the finished run rebuilds the damaged final model from the .ost.
    out = tmp_path / "model.cat"
    with pytest.warns(UserWarning, match=r"run1\.step0000020\.cat"):
        ccat_tf.train(tiny_settings(ds, dd, **EXACT), output=out, progress_bar=False)
    catfile.load_cat(out)
    catfile.load_cat(final)
    for cat in dd.glob("*.cat"):
        damage(cat, "garbage")
    with pytest.raises(ModelFileError, match="no usable checkpoint in"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            catfile.latest_good_checkpoint(dd)


# ---- 4. NaN/Inf loss ---------------------------------------------------------------------------


def test_4_nan_loss_stops_and_keeps_the_files_from_before(ds, tmp_path):
    """The weights are poisoned with NaN after step 11, so step 12 (a checkpoint and a contact
    sheet step) has a NaN loss: training stops with a clear message and writes nothing more."""
    dd = tmp_path / "dd"
    seen = {}

    def poison(step):
        seen["files"] = snapshot(dd)
        net = ctx_net["net"]
        net.set_weights([np.full_like(w, np.nan) for w in net.get_weights()])

    class GrabNet(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            ctx_net["net"] = self.model.network

    ctx_net: dict = {}
    with pytest.raises(NonFiniteLoss) as err:
        ccat_tf.train(
            tiny_settings(ds, dd, **EXACT),
            callbacks=[GrabNet(), At([11], poison)],
            progress_bar=False,
        )
    message = str(err.value)
    assert "\n" not in message
    assert "loss became nan at step 12" in message
    assert "last good checkpoint and progress" in message and "lower learning_rate" in message
    after = snapshot(dd)
    assert changed(seen["files"], after) == []
    assert set(after) - set(seen["files"]) == set()  # nothing new: no step-12 .cat, sheet, .ost
    progress = state.load_latest_progress(dd)
    assert progress.step == 8  # the contact sheet at step 8 (the checkpoint at 6 is prev)
    assert all(np.isfinite(w).all() for w in progress.weights + progress.optimizer)
    latest = json.loads((dd / "latest.json").read_text())
    assert latest == {"cat": "run1.step0000006.cat", "step": 6}
    assert all(np.isfinite(w).all() for w in weights_of(dd / latest["cat"]))
    (run,) = ccat_tf.list_runs(dd)
    assert (run["status"], run["last_step"]) == ("failed", 11)


def test_4_exploding_learning_rate_stops_with_one_line_via_the_cli(ds, tmp_path):
    dd = tmp_path / "dd"
    s = tiny_settings(
        {k: ds[k] for k in ("input", "ground_truth", "frames")}, dd, **EXACT, learning_rate=1e30
    )
    code, err = run_cli(["train", "--no-progress", "--settings-json", json.dumps(s)])
    assert code == 2 and "Traceback" not in err
    (line,) = error_lines(err)
    assert "training stopped: loss became" in line and "lower learning_rate" in line
    for cat in dd.glob("*.cat"):
        assert all(np.isfinite(w).all() for w in weights_of(cat))
    progress = state.load_latest_progress(dd)
    if progress is not None:
        assert all(np.isfinite(w).all() for w in progress.weights)


# ---- 5. one writer -----------------------------------------------------------------------------


def test_5_second_writer_is_refused_and_a_stale_lock_does_not_block(ds, tmp_path):
    dd = tmp_path / "dd"
    s = tiny_settings(ds, dd, epochs=1000, checkpoint_interval=4, contact_sheet_interval=2)
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(train_cmd(s), stdout=log, stderr=log)
    try:
        wait_for(lambda: any(dd.glob("*.cat")), 180, first, "the first checkpoint (step 4)")
        os.kill(first.pid, signal.SIGSTOP)  # freeze it so its files hold still
        before = snapshot(dd)
        second = subprocess.run(train_cmd(s), capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and "Traceback" not in second.stderr
        (line,) = error_lines(second.stderr)
        assert f"data directory {dd} is in use by another training process (pid {first.pid}" in line
        assert "wait for it to finish or choose another data_directory" in line
        assert snapshot(dd) == before
    finally:
        first.kill()  # SIGKILL (a stopped process dies too): the lock file stays behind
        first.wait()
        log.close()
    assert (dd / ".ccat.lock").read_text().startswith(f"pid {first.pid} ")
    step = state.load_latest_progress(dd).step
    # The stale lock does not block: the next training resumes (to a few steps further).
    ccat_tf.train({**s, "epochs": step // 2 + 2}, progress_bar=False)
    runs = ccat_tf.list_runs(dd)
    assert (runs[-1]["status"], runs[-1]["first_step"]) == ("finished", step)


# ---- 6. disk full / unwritable -----------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".cat", ".ost"])
def test_6_disk_full_during_a_checkpoint(ds, tmp_path, monkeypatch, suffix):
    """ENOSPC injected where a full disk reports it (flushing the file to disk) while the
    checkpoint at step 12 writes its .cat or its .ost: one-line DataDirectoryError, every file
    from before intact, no temporary files; training again resumes."""
    dd = tmp_path / "dd"
    s = tiny_settings(ds, dd, epochs=7, checkpoint_interval=6, contact_sheet_interval=4)
    real_fsync = os.fsync
    armed = {}

    def fsync(fd):
        if armed and os.readlink(f"/proc/self/fd/{fd}").endswith(suffix):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)

    def arm(step):
        armed["files"] = snapshot(dd)

    with pytest.raises(DataDirectoryError) as err:
        ccat_tf.train(s, callbacks=[At([11], arm)], progress_bar=False)
    message = str(err.value)
    assert "\n" not in message
    target = "run1.step0000012.cat" if suffix == ".cat" else "progress.ost"
    assert f"cannot write {dd / target}: no space left on device" in message
    assert "free some space or point the output to another disk" in message
    after = snapshot(dd)
    assert changed(armed["files"], after) == []
    assert temps(dd) == []
    if suffix == ".cat":
        assert "run1.step0000012.cat" not in after
    assert json.loads((dd / "latest.json").read_text())["step"] == 6
    monkeypatch.setattr(os, "fsync", real_fsync)
    ccat_tf.train(s, progress_bar=False)
    assert ccat_tf.list_runs(dd)[-1]["first_step"] == 8


REAL_DISK_FULL = r"""
set -u
mount -t tmpfs -o size=32m tmpfs "$1" || exit 99
shift
"$@"
echo $? > "$OUT/rc"
cp -a "$MNT/dd" "$OUT/dd"
"""

FILL_DISK_HOOK = """
import hashlib, json, pathlib
def fill(data_directory, step, **_):
    dd = pathlib.Path(data_directory)
    files = {str(p.relative_to(dd)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(dd.rglob("*")) if p.is_file()}
    (pathlib.Path(OUT) / "snapshot.json").write_text(json.dumps(files))
    with open(dd.parent / "filler", "wb") as fh:
        try:
            while True:
                fh.write(bytes(1 << 16))
                fh.flush()
        except OSError:
            pass
"""


def test_6_a_really_full_disk(ds, tmp_path):
    """A real ENOSPC from the kernel: the Data Directory is on a 32 MB tmpfs (mounted in a
    private mount namespace, so nothing outlives the test) that an on_checkpoint hook fills
    after the checkpoint at step 6; the final checkpoint (Keras' own write) then fails.
    Skipped where mount namespaces are not allowed."""
    if not shutil.which("unshare"):
        pytest.skip("needs unshare(1)")
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir()
    out.mkdir()
    (tmp_path / "fill.py").write_text(f"OUT = {str(out)!r}\n" + FILL_DISK_HOOK)
    s = tiny_settings(
        ds,
        mnt / "dd",
        epochs=5,
        checkpoint_interval=6,
        contact_sheet_interval=100,
        on_checkpoint=f"{tmp_path / 'fill.py'}:fill",
    )
    cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c", REAL_DISK_FULL, "sh"]
    proc = subprocess.run(
        [*cmd, str(mnt), *train_cmd(s)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OUT": str(out), "MNT": str(mnt)},
    )
    if proc.returncode == 99 or "unshare failed" in proc.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()[-200:]}")
    assert (out / "rc").read_text().strip() == "2", proc.stderr
    assert "Traceback" not in proc.stderr
    (line,) = error_lines(proc.stderr)
    assert f"cannot write {mnt / 'dd' / 'run1.step0000010.cat'}: no space left on device" in line
    assert "free some space or point the output to another disk" in line
    dd = out / "dd"
    before = json.loads((out / "snapshot.json").read_text())
    assert changed(before, snapshot(dd)) == [] and temps(dd) == []
    # With space again (here: the copy on the real disk), training resumes and finishes.
    ccat_tf.train({**s, "data_directory": str(dd), "on_checkpoint": []}, progress_bar=False)
    assert ccat_tf.list_runs(dd)[-1]["first_step"] == 6


def test_6_read_only_data_directory_is_refused_before_anything_is_written(ds, straight, tmp_path):
    """A read-only Data Directory holding a finished run: a real EACCES (as root, the child
    runs without CAP_DAC_OVERRIDE, see bad_inputs.corpus.without_permission_override): one
    line, exit 2, nothing changed."""
    dd = copy_of(straight["dd"], tmp_path)
    s = tiny_settings(ds, dd, **EXACT)

    def train_read_only() -> str:
        """Resume training with the Data Directory read-only; its one error line."""
        dd.chmod(0o555)
        try:
            proc = run_unprivileged(
                train_cmd({**s, "epochs": 20}), capture_output=True, text=True, timeout=120
            )
        finally:
            dd.chmod(0o755)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        (line,) = error_lines(proc.stderr)
        return line

    before = snapshot(dd)
    line = train_read_only()
    assert f"cannot write {dd}: permission denied" in line
    assert "make the folder writable or choose another location" in line
    assert snapshot(dd) == before
    # Without the earlier run's lock file the lock itself cannot be created: the same answer.
    (dd / ".ccat.lock").unlink()
    assert f"cannot write {dd / '.ccat.lock'}: permission denied" in train_read_only()


def test_6_data_directory_turning_read_only_mid_run(ds, tmp_path):
    """The Data Directory becomes read-only during training (an on_checkpoint hook chmods it
    after the checkpoint at step 6, as a read-only remount would): the next write, the
    contact sheet at step 8, fails with a real EACCES; one line, exit 2; every file from before
    intact, no temporary files; once it is writable again, training resumes."""
    dd = tmp_path / "dd"
    (tmp_path / "lockdown.py").write_text(
        "import hashlib, json, os, pathlib\n"
        "def lock_down(data_directory, step, **_):\n"
        "    dd = pathlib.Path(data_directory)\n"
        "    files = {str(p.relative_to(dd)): hashlib.sha256(p.read_bytes()).hexdigest()\n"
        "             for p in sorted(dd.rglob('*')) if p.is_file()}\n"
        "    (dd.parent / 'snapshot.json').write_text(json.dumps(files))\n"
        "    os.chmod(dd, 0o555)\n"
    )
    s = tiny_settings(
        ds,
        dd,
        epochs=5,
        checkpoint_interval=6,
        contact_sheet_interval=4,
        on_checkpoint=f"{tmp_path / 'lockdown.py'}:lock_down",
    )
    try:
        proc = run_unprivileged(
            train_cmd(s),
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        if dd.exists():
            dd.chmod(0o755)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    (line,) = error_lines(proc.stderr)
    assert f"cannot write {dd / 'run1.contact.step0000008.png'}: permission denied" in line
    assert "make the folder writable or choose another location" in line
    before = json.loads((tmp_path / "snapshot.json").read_text())
    after = snapshot(dd)
    assert changed(before, after) == [] and temps(dd) == []
    assert set(after) - set(before) <= {"run1/" + n for n in os.listdir(dd / "run1")}
    ccat_tf.train({**s, "on_checkpoint": []}, progress_bar=False)
    runs = ccat_tf.list_runs(dd)
    assert (runs[-1]["status"], runs[-1]["first_step"], runs[-1]["last_step"]) == (
        "finished",
        6,
        10,
    )


# ---- 7. preemption -----------------------------------------------------------------------------


def test_7_sigterm_from_another_process_saves_and_exits_75_then_resumes(ds, tmp_path, capsys):
    """What SLURM does on preemption or at the time limit (--signal=TERM@120): SIGTERM to the
    job's processes, possibly more than once. The .ost is saved within seconds, the exit status
    is 75 (EX_TEMPFAIL: Snakemake's --retries and SLURM requeue run it again), and the rerun
    resumes where it stopped."""
    dd = tmp_path / "dd"
    s = tiny_settings(ds, dd, epochs=5, checkpoint_interval=100, contact_sheet_interval=2)
    log_path = tmp_path / "train.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(train_cmd(s), stdout=subprocess.DEVNULL, stderr=log)
        try:
            wait_for(lambda: any(dd.glob("*.contact.*.png")), 180, proc, "the first steps")
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)  # a second SIGTERM must not spoil the save
            wait_for(lambda: "progress saved" in log_path.read_text(), 30, proc, "the save")
            saved_after = time.monotonic() - t0
            assert proc.wait(timeout=60) == 75
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stderr = log_path.read_text()
    assert "Traceback" not in stderr
    (line,) = error_lines(stderr)
    progress = state.load_progress_file(dd / "progress.ost")
    assert 2 <= progress.step < 10
    assert f"SIGTERM received: progress saved at step {progress.step} of 10" in line
    assert "train again with the same settings to resume" in line
    assert saved_after < 10, f"saving took {saved_after:.1f} s"
    ccat_tf.train(s, progress_bar=False)  # the requeued job
    assert f"resuming run1 at step {progress.step} of 10" in capsys.readouterr().err
    runs = ccat_tf.list_runs(dd)
    assert [(r["status"], r["first_step"], r["last_step"]) for r in runs] == [
        ("interrupted", 0, progress.step),
        ("finished", progress.step, 10),
    ]
    catfile.load_cat(dd / "run2.step0000010.cat")
