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
from conftest import load_script, make_tiny_dataset, tiny_settings

import ccat_tf
from ccat_tf import catfile, cli, imageio, state
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


@pytest.mark.slow  # about a minute
def test_1_sigkill_at_random_moments_leaves_only_complete_files(tmp_path):
    """scripts/kill_trials.py --trials 3: SIGKILL `ccat-tf train` at seeded random moments (half
    of them the instant a temporary file appears, i.e. mid-write); every file left loads, the
    rerun removes the temporary files and finishes at the same total steps."""
    kill_trials = load_script("scripts/kill_trials.py")
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


def hostile(path: Path, kind: str) -> None:
    """Rewrite ``path`` (an .ost) as a hostile or hand-edited one of ``kind``. The arrays keep
    their Fletcher-32 checksum unless the kind is about it, so only the loader's checks of
    storage, dtype, shape, size and metadata can refuse them."""
    import h5py

    with h5py.File(path, "r+") as f:
        meta = json.loads(f.attrs["meta"])
        w0 = f["weights/00000"]
        n, shape = w0.shape[0], tuple(w0.attrs["shape"])

        def replace(name="weights/00000", **kw):
            recorded = kw.pop("recorded", shape)
            del f[name]
            d = f.create_dataset(name, **kw)
            d.attrs["shape"] = recorded

        if kind == "gzip-2GiB":  # 3.7 MB on disk, 2 GiB read
            replace(shape=(2**29,), dtype=np.float32, chunks=(2**20,), compression="gzip")
        elif kind == "2GiB-checksummed":  # the right filter, a size no model has
            replace(shape=(2**29,), dtype=np.float32, chunks=(2**20,), fletcher32=True)
        elif kind == "external-passwd":
            replace(shape=(n,), dtype=np.float32, external=[("/etc/passwd", 0, 2**20)])
        elif kind == "external-urandom":
            ext = [("/dev/urandom", 0, h5py.h5f.UNLIMITED)]
            replace(shape=(n,), dtype=np.float32, external=ext)
        elif kind == "nan-without-fletcher32":
            replace(data=np.full(n, np.nan, np.float32))
        elif kind == "external-link":
            del f["weights"]
            f["weights"] = h5py.ExternalLink("/dev/zero", "/weights")
        elif kind == "soft-link-loop":
            del f["weights/00000"]
            f["weights/00000"] = h5py.SoftLink("/weights/00000")
        elif kind == "string-dataset":
            replace(data=np.array([b"x" * 10] * n), fletcher32=True)
        elif kind == "float64-dataset":
            replace(data=np.zeros(n, np.float64), fletcher32=True)
        elif kind == "wrong-shape":  # consistent with its own record, not with the model
            replace(data=np.zeros(7, np.float32), fletcher32=True, recorded=np.array([7]))
        elif kind == "wrong-recorded-shape":
            replace(data=np.zeros(n, np.float32), fletcher32=True, recorded=np.array([n]))
        elif kind == "no-stage":
            del meta["stage"]
        elif kind == "step-text":
            meta["step"] = "four"
        elif kind == "step-negative":
            meta["step"] = -100
        elif kind == "step-huge":
            meta["step"] = 10**30
        elif kind == "step-bool":
            meta["step"] = True
        elif kind == "list-signature":
            meta["signature"] = [1, 2]
        elif kind == "text-settings":
            meta["settings"] = "x"
        elif kind == "n-weights-text":
            meta["n_weights"] = "24"
        elif kind == "run-name-path":
            meta["run_name"] = "../../escape"
        elif kind == "meta-list":
            meta = [meta]
        elif kind == "n-average-wrong":
            meta["n_average"] = 5
        elif kind == "average-external":
            m = f["average/00000"].shape[0]
            ext = [("/etc/passwd", 0, 4 * m)]
            replace("average/00000", shape=(m,), dtype=np.float32, external=ext)
        else:
            raise ValueError(kind)
        f.attrs["meta"] = json.dumps(meta)


HOSTILE_OST = [
    ("gzip-2GiB", "no Fletcher-32 checksum"),
    # The default network's first weights are its colour branch's fixed pair selection: each of
    # the 21 products of two of its 6 inputs (rgb, u, v, r^2), 1x1x6x21 = 126 values.
    ("2GiB-checksummed", "not 126 for this model"),
    ("external-passwd", "reads its data from another file"),
    ("external-urandom", "reads its data from another file"),
    ("nan-without-fletcher32", "no Fletcher-32 checksum"),
    ("external-link", "weights is a link to another file"),
    ("soft-link-loop", "weights/00000 is a link"),
    ("string-dataset", "holds |S10, not float32"),
    ("float64-dataset", "holds float64, not float32"),
    ("wrong-shape", "records a shape this model does not have"),
    ("wrong-recorded-shape", "records a shape this model does not have"),
    ("no-stage", "stage is None"),
    ("step-text", "step is 'four'"),
    ("step-negative", "step is -100"),
    ("step-huge", "step is 1000000000000000000000000000000, not a whole number from 0 to 20"),
    ("step-bool", "step is True"),
    ("list-signature", "signature is not a JSON object"),
    ("text-settings", "settings is not a JSON object"),
    ("n-weights-text", "n_weights is '24'"),
    ("run-name-path", "is not a run name"),
    ("meta-list", "its metadata is not a JSON object"),
    ("n-average-wrong", "it holds 5 weight averages, not"),
    ("average-external", "average/00000 reads its data from another file"),
]


@pytest.mark.parametrize("kind,reason", HOSTILE_OST, ids=[k for k, _ in HOSTILE_OST])
def test_3_hostile_progress_is_refused_before_reading_and_falls_back(
    interrupted, tmp_path, kind, reason
):
    """A hand-made .ost (issue: hostile files) is refused from its headers and metadata, before
    any array is read, and handled as a damaged one: the previous .ost is used, with a warning
    naming the file and why. Reading it costs no memory worth measuring (the 2 GiB kinds used
    2.75 GB before)."""
    import resource

    dd = copy_of(interrupted, tmp_path)
    hostile(dd / "progress.ost", kind)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.warns(UserWarning) as record:
        progress = state.load_latest_progress(dd)
    assert (progress.path.name, progress.step) == ("progress.prev.ost", 8)
    (warning,) = [str(w.message) for w in record]
    assert f"progress file {dd / 'progress.ost'} is damaged" in warning
    assert reason in warning and "\n" not in warning
    # ru_maxrss is in KB: a 2 GiB array read would add 2 000 000.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 200_000


def test_3_hostile_progress_and_previous_both_refused_is_one_line(ds, interrupted, tmp_path):
    dd = copy_of(interrupted, tmp_path)
    hostile(dd / "progress.ost", "external-passwd")
    hostile(dd / "progress.prev.ost", "step-negative")
    before = snapshot(dd)
    settings = tiny_settings({k: ds[k] for k in ("input", "ground_truth", "frames")}, dd, **EXACT)
    code, err = run_cli(["train", "--no-progress", "--settings-json", json.dumps(settings)])
    assert code == 2 and "Traceback" not in err
    (line,) = error_lines(err)
    assert "no usable progress file in" in line and "step is -100" in line
    assert snapshot(dd) == before


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_3_progress_file_that_is_not_a_regular_file_falls_back(interrupted, tmp_path, kind):
    """A FIFO named progress.ost would block HDF5's open forever, a device never end."""
    dd = copy_of(interrupted, tmp_path)
    (dd / "progress.ost").unlink()
    if kind == "fifo":
        os.mkfifo(dd / "progress.ost")
        what = r"named pipe \(FIFO\)"
    else:
        (dd / "progress.ost").symlink_to("/dev/zero")
        what = "it is a device"
    with pytest.warns(UserWarning, match=r"progress\.ost is damaged or not a progress file"):
        progress = state.load_latest_progress(dd)
    assert (progress.path.name, progress.step) == ("progress.prev.ost", 8)
    with pytest.raises(ModelFileError, match=what):
        state.load_progress_file(dd / "progress.ost")


@pytest.mark.parametrize("size", ["small", "medium", "large"])
def test_3_progress_loader_knows_the_shapes_of_every_model(size):
    """The loader checks an .ost's arrays against model_weight_shapes, which must stay what
    build_model makes."""
    from ccat_tf.models import Architecture, build_model

    for n_in, n_out in ((3, 3), (4, 1), (1, 7)):
        net = build_model(n_in, n_out, size)
        assert state.model_weight_shapes(size, n_in, n_out) == [
            tuple(w.shape) for w in net.get_weights()
        ]
        # Position-aware and colour-branch networks: the same shapes, in Keras' own order.
        for position, colour, seen, fit_only in (
            (True, True, True, True),
            (True, True, True, False),
            (True, True, False, False),
            (True, False, False, False),
            (False, True, True, False),
        ):
            flags = dict(
                position=position, colour=colour, colour_input=seen, position_fit_only=fit_only
            )
            net = build_model(n_in, n_out, Architecture(size, **flags))
            flags["residual"] = n_in == n_out
            assert sorted(state.model_weight_shapes(size, n_in, n_out, **flags)) == sorted(
                tuple(w.shape) for w in net.get_weights()
            )
            assert sorted(
                state.model_weight_shapes(size, n_in, n_out, **flags, trainable_only=True)
            ) == sorted(tuple(w.shape) for w in net.trainable_weights)


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


def test_4_exploding_network_stops_with_one_line_via_the_cli(ds, tmp_path):
    """Training blows up (here: started from a checkpoint whose weights are 1e20, so the
    activations overflow float32; learning_rate is capped at 1, which does not diverge in 20
    steps): one line via the CLI, and every file written holds finite numbers."""
    start = _any_cat(tmp_path)
    net = catfile.load_cat(start)[0]
    net.set_weights([np.full_like(w, 1e20) for w in net.get_weights()])
    catfile.save_cat(start, net, catfile.read_metadata(start))
    dd = tmp_path / "dd"
    s = tiny_settings(
        {k: ds[k] for k in ("input", "ground_truth", "frames")},
        dd,
        **EXACT,
        initial_weights="checkpoint",
        checkpoint_file=str(start),
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


@pytest.mark.slow  # two training processes
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


@pytest.mark.slow  # trainings on a small filesystem, ~20 s
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


@pytest.mark.slow  # a training process, ~20 s
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


@pytest.mark.slow  # a training process, then a resume
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


# ---- 8. a really full disk everywhere (issue 10) -----------------------------------------------
# The Data Directory (or an output) on a small tmpfs: the kernel's own ENOSPC, as the hostile
# report had it, through every writer: HDF5 (.ost, frame cache), Keras (.cat), PIL (contact
# sheets), TensorFlow's C++ event writer (.summary), OpenImageIO (output frames), TensorFlow's
# SavedModel writer and ONNX. Each must end with one line and exit 2: no traceback, no HDF5
# error stack, no crash.


@pytest.fixture
def small_disk(tmp_path):
    """``mount(size)`` -> a fresh tmpfs of ``size`` (e.g. "2m") under ``tmp_path``, unmounted
    at the end; skips where mounting is not permitted (not root)."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
        )
        if proc.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()[-200:]}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill ``disk`` with one file, then give ``leave`` bytes back; the file is returned."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as fh:
        with contextlib.suppress(OSError):
            while True:
                fh.write(bytes(1 << 12))
    os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


def assert_one_disk_full_line(code: int, stderr: str, path) -> None:
    """Exit 2, nothing but one ``ccat-tf: error:`` line about ``path``; no native noise."""
    assert code == 2, f"exit {code} (139 is a segfault)\n{stderr[-3000:]}"
    for noise in ("Traceback", "HDF5-DIAG", "Exception ignored", "unexpected"):
        assert noise not in stderr, stderr[-3000:]
    (line,) = error_lines(stderr)
    assert f"cannot write {path}: no space left on device" in line, line
    assert "free some space or point the output to another disk" in line


def test_8_training_on_a_2mb_tmpfs_is_one_line_not_a_crash(ds, small_disk):
    """The report verbatim: a Data Directory on a 2 MB tmpfs. The first progress file (3.7 MB)
    cannot fit; HDF5 used to print ~100 tracebacks and segfault (exit 139)."""
    dd = small_disk("2m") / "dd"
    s = tiny_settings(ds, dd, epochs=10, checkpoint_interval=10, contact_sheet_interval=5)
    proc = subprocess.run(train_cmd(s), capture_output=True, text=True, timeout=300)
    assert_one_disk_full_line(proc.returncode, proc.stderr, dd / "progress.ost")
    assert temps(dd) == [] and not (dd / "progress.ost").exists()


@pytest.mark.slow  # two trainings; CI runs it
def test_8_full_disk_mid_training_keeps_every_file_and_training_resumes(ds, small_disk):
    """Train 6 steps on a tmpfs, fill it, train on: the next progress file fails with one line,
    exit 2, every file from before unchanged; once space is freed training resumes at step 6."""
    disk = small_disk("24m")  # two .ost of 4.9 MB (weights, Adam, averages), .cat files
    dd = disk / "dd"
    s = tiny_settings(ds, dd, epochs=3, checkpoint_interval=6, contact_sheet_interval=100)
    ccat_tf.train(s, progress_bar=False)
    filler = fill(disk, leave=400_000)  # room for a contact sheet, not for a 4.9 MB .ost
    before = snapshot(dd)
    longer = {**s, "epochs": 5, "contact_sheet_interval": 4}
    proc = subprocess.run(train_cmd(longer), capture_output=True, text=True, timeout=300)
    assert_one_disk_full_line(proc.returncode, proc.stderr, dd / "progress.ost")
    assert changed(before, snapshot(dd), ignore=("runs.json", ".ccat.lock")) == []
    assert temps(dd) == [] and state.load_latest_progress(dd).step == 6
    filler.unlink()  # "free some space"
    ccat_tf.train(longer, progress_bar=False)
    runs = ccat_tf.list_runs(dd)
    assert (runs[-1]["status"], runs[-1]["first_step"], runs[-1]["last_step"]) == (
        "finished",
        6,
        10,
    )


def test_8_summary_events_on_a_full_disk_are_one_line(small_disk):
    """TensorFlow's C++ event writer reports ENOSPC as a ResourceExhaustedError at a flush:
    it becomes the one-line error naming the .summary file."""
    from ccat_tf import summary

    disk = small_disk("1m")
    writer = summary.open_writer(disk / "run1")
    fill(disk)
    with pytest.raises(DataDirectoryError) as err:
        for step in range(200):  # more than the 4 KiB page the file already has
            summary.write_scalars(writer, disk / "run1", step, {"loss": 0.5, "val_psnr": 20.0})
        summary.flush_writer(writer, disk / "run1")
    (events,) = (disk / "run1").glob("*.summary")
    assert f"cannot write {events}: no space left on device" in str(err.value)
    summary.close_writer_quietly(writer)


def test_8_hdf5_on_a_full_disk_raises_once_and_leaves_nothing(small_disk, capfd):
    """HDF5 itself never sees the failed write (atomic.hdf5_writer): no error stack, no crash
    when the file is closed, one OSError afterwards, the temporary file removed."""
    from ccat_tf.atomic import atomic_path, hdf5_writer

    disk = small_disk("1m")
    target = disk / "big.h5"
    with pytest.raises(DataDirectoryError, match=f"cannot write {target}: no space left"):
        with atomic_path(target) as tmp, hdf5_writer(tmp) as h5:
            for i in range(8):
                h5.create_dataset(f"a/{i}", data=np.ones((256, 256), np.float32), fletcher32=True)
    assert os.listdir(disk) == []
    err = capfd.readouterr().err
    assert "HDF5-DIAG" not in err and "Exception ignored" not in err


def test_8_frame_cache_on_a_full_disk(ds, small_disk):
    """`ccat-tf cache` and training's own frame_cache.h5 on a disk without room for it."""
    disk = small_disk("1m")
    s = tiny_settings({k: ds[k] for k in ("input", "ground_truth", "frames")}, disk / "dd")
    code, err = run_cli(["cache", "--settings-json", json.dumps(s), "--output", str(disk / "c.h5")])
    assert_one_disk_full_line(code, err, disk / "c.h5")
    code, err = run_cli(
        ["train", "--no-progress", "--settings-json", json.dumps(s), "--cache", "hdf5"]
    )
    assert_one_disk_full_line(code, err, disk / "dd" / "frame_cache.h5")
    assert temps(disk) == [] and not list(disk.rglob("*.h5"))


def infer_args(model: Path, ds: dict, output, *extra) -> list[str]:
    return [
        "infer",
        str(model),
        "--input",
        ds["input"],
        "--output",
        str(output),
        "--no-progress",
        *extra,
    ]


@pytest.mark.parametrize("ext", ["exr", "png"])
def test_8_infer_into_a_full_disk_keeps_whole_frames(ds, small_disk, tmp_path, ext):
    """Output frames onto a disk with room for about two: the frames written are whole, the
    next one is one line, no half frame and no temporary file. PNG is the hard case: libpng
    writes a cut-short file without an error (and libjpeg exits the process)."""
    model = _any_cat(tmp_path)
    disk = small_disk("2m")
    fill(disk, leave={"exr": 260_000, "png": 100_000}[ext])
    out = disk / "out"
    code, err = run_cli(infer_args(model, ds, out / f"o.####.{ext}", "--frames", "1-6"))
    written = sorted(out.glob(f"o.*.{ext}"))
    assert_one_disk_full_line(code, err, out / f"o.{len(written) + 1:04d}.{ext}")
    assert 1 <= len(written) < 6 and temps(disk) == []
    for frame in written:
        assert imageio.read_image(frame).shape == (96, 96, 3)


@pytest.mark.parametrize("ext", ["png", "dpx", "exr"])
def test_8_disk_filling_up_while_a_frame_is_written(ds, small_disk, monkeypatch, ext):
    """Another process takes the space between the free-space check and the write: a frame
    cut short without an error (libpng, DPX) is found by reading it back and removed."""
    from ccat_tf import inference

    monkeypatch.setattr(inference, "check_free_space", lambda path, need: None)
    disk = small_disk("1m")
    fill(disk, leave=12_000)
    info = imageio.image_info(ds["input"].replace("####", "0001"))
    pixels = np.random.default_rng(0).random((96, 96, 3), np.float32)
    data_type = {"png": "uint8", "dpx": "uint10", "exr": "half"}[ext]
    target = disk / f"o.0001.{ext}"
    with pytest.raises(DataDirectoryError, match=f"cannot write {target}: no space left on device"):
        inference._write_checked(str(target), pixels, ["R", "G", "B"], data_type, info)
    assert sorted(os.listdir(disk)) == ["filler"]


@pytest.mark.parametrize("fmt", ["savedmodel", "onnx"])
def test_8_export_into_a_full_disk(small_disk, tmp_path, fmt):
    """Also: what an export killed mid-write left for the same output is removed."""
    from ccat_tf.atomic import temp_path_for

    model = _any_cat(tmp_path)
    disk = small_disk("2m")
    out = disk / ("model.onnx" if fmt == "onnx" else "model_savedmodel")
    (disk / f"{TEMP_MARK}4242-{out.name}").mkdir()  # a killed SavedModel export's folder
    temp_path_for(out).write_bytes(b"half a model")
    fill(disk, leave=100_000)
    code, err = run_cli(["export", str(model), "--format", fmt, "--output", str(out)])
    assert_one_disk_full_line(code, err, out)
    assert sorted(os.listdir(disk)) == ["filler"]


# ---- 9. interrupted inference ------------------------------------------------------------------


def test_9_next_infer_removes_a_killed_infers_partial_frame(ds, tmp_path):
    """What a render killed mid-write leaves (a temporary file of one of its frames) is removed
    by the next render of those frames; anyone else's files stay."""
    from ccat_tf.atomic import temp_path_for

    model = _any_cat(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    partial = temp_path_for(out / "o.0002.exr")
    partial.write_bytes(b"half a frame")
    others = [
        temp_path_for(out / "other.0002.exr"),
        temp_path_for(out / "o.0009.exr"),
        out / "notes.txt",
    ]
    for path in others:
        path.write_bytes(b"not ours")
    code, err = run_cli(infer_args(model, ds, out / "o.####.exr", "--frames", "1-4"))
    assert code == 0, err
    assert not partial.exists() and all(p.exists() for p in others)
    assert sorted(p.name for p in out.glob("o.*.exr")) == [f"o.{f:04d}.exr" for f in range(1, 5)]


SLOW_FRAME_HOOK = "import time\ndef nap(**_):\n    time.sleep(0.25)\n"


@pytest.mark.slow  # a real process per signal; CI runs it
@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 75), (signal.SIGINT, 130)])
def test_9_signal_during_infer_keeps_whole_frames_and_says_what_to_do(ds, tmp_path, sig, status):
    """SIGTERM (preemption) or Ctrl-C during `python -m ccat_tf infer`: the frame in hand is
    finished, the render stops with one line and exit 75 (130 for Ctrl-C); every written frame
    loads, no temporary file; the line's --frames renders exactly the rest."""
    model = _any_cat(tmp_path)
    seq = tmp_path / "seq"
    seq.mkdir()
    first = Path(ds["input"].replace("####", "0001"))
    for f in range(1, 41):
        (seq / f"s.{f:04d}.png").symlink_to(first)
    (tmp_path / "slow.py").write_text(SLOW_FRAME_HOOK)
    out = tmp_path / "out"
    argv = infer_args(model, {"input": str(seq / "s.####.png")}, out / "o.####.exr")
    argv += ["--frames", "1-40", "--before-frame-render", f"{tmp_path / 'slow.py'}:nap"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ccat_tf", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: len(list(out.glob("o.*.exr"))) >= 2, 120, proc, "two frames")
        proc.send_signal(sig)
        if sig == signal.SIGTERM:
            proc.send_signal(sig)  # a repeated SIGTERM changes nothing
        stderr = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == status, stderr
    assert "Traceback" not in stderr
    written = sorted(out.glob("o.*.exr"))
    (line,) = error_lines(stderr)
    n = len(written)
    assert 2 <= n < 40
    assert (
        f"{sig.name} received: wrote {n} of 40 frames to {out / 'o.####.exr'}, each complete"
        in line
    )
    assert f"render the other {40 - n} with --frames {n + 1}-40" in line
    assert [p.name for p in written] == [f"o.{f:04d}.exr" for f in range(1, n + 1)]
    for frame in written:
        assert imageio.read_image(frame).shape == (96, 96, 3)
    assert temps(out) == []
