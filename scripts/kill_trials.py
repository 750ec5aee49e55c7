#!/usr/bin/env python
"""SIGKILL a training process at random moments and check the Data Directory it leaves behind.

Guarantee 1 of the README ("What we guarantee"): every file ccat_tf writes is written to a
temporary file in the same folder and renamed into place, so a process killed at any moment
leaves only complete files. Each trial:

1. starts ``python -m ccat_tf train`` on a tiny data set (4 pairs, 96x96, checkpoints, contact
   sheets, previews and validation every few steps, so writes are frequent) in a fresh Data
   Directory;
2. SIGKILLs it (seeded): either after a random delay, or the moment a temporary file appears
   (in the middle of a write);
3. checks every file left: each ``.cat`` loads (``catfile.load_cat``), each ``.ost`` loads
   (``state.load_progress_file``), each ``.png`` decodes with OpenImageIO, ``runs.json`` and
   ``latest.json`` parse and ``latest.json`` names a checkpoint that loads, the ``.summary``
   files read;
4. trains again with the same settings: it must resume, remove the temporary files the kill left
   (``remove_stale_temps``) and finish at the same total number of steps.

    python scripts/kill_trials.py --trials 20          # the full run (a few minutes)
    python scripts/kill_trials.py --trials 3 --seed 1  # what the test suite runs

Exit status 0 when every trial passes; the first failing check is printed otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 40  # 4 pairs, batch 2 -> 80 steps: longer than the kill window (at most 2 x 2 s) on a fast machine
TOTAL_STEPS = 80


def make_dataset(root: Path) -> dict:
    """6 frames of 96x96 PNG pairs (1-4 train, 5 validation, 6 preview)."""
    import OpenImageIO as oiio

    rng = np.random.default_rng(7)

    def write_png(path: Path, array: np.ndarray) -> None:
        h, w, c = array.shape
        out = oiio.ImageOutput.create(str(path))
        out.open(str(path), oiio.ImageSpec(w, h, c, "uint8"))
        out.write_image(np.clip(array, 0, 1).astype(np.float32))
        out.close()

    for side in ("in", "gt"):
        (root / side).mkdir(parents=True, exist_ok=True)
    for f in range(1, 7):
        small = rng.random((14, 14, 3)).astype(np.float32)
        x = np.kron(small, np.ones((8, 8, 1), np.float32))[:96, :96]
        write_png(root / "in" / f"shot.{f:04d}.png", x)
        write_png(root / "gt" / f"shot.{f:04d}.png", np.clip(x * 1.1, 0, 1) ** 0.8)
    return {
        "input": str(root / "in" / "shot.####.png"),
        "ground_truth": str(root / "gt" / "shot.####.png"),
    }


def trial_settings(dataset: dict, data_directory: Path) -> dict:
    return {
        "input": dataset["input"],
        "ground_truth": dataset["ground_truth"],
        "frames": "1-4",
        "validation_frames": "5",
        "preview": dataset["input"],
        "preview_frames": "6",
        "data_directory": str(data_directory),
        "model_size": "small",
        "crop_size": 32,
        "batch_size": 2,
        "epochs": EPOCHS,
        "checkpoint_interval": 4,
        "contact_sheet_interval": 2,
        "cache": "memory",
        "use_gpu_if_available": False,
    }


def check_data_directory(folder: Path) -> dict:
    """Load every file of a Data Directory; raise AssertionError naming the first bad one."""
    import OpenImageIO as oiio

    from ccat_tf import catfile, state
    from ccat_tf.atomic import TEMP_MARK
    from ccat_tf.summary import read_summaries

    counts = {"cat": 0, "ost": 0, "png": 0, "json": 0, "temp": 0}
    for path in sorted(folder.rglob("*")):
        if path.is_dir() or path.name == ".ccat.lock":
            continue
        name = path.name
        if name.startswith(TEMP_MARK):
            counts["temp"] += 1  # a write the kill interrupted: never read, removed on resume
            continue
        try:
            if name.endswith(".cat"):
                catfile.load_cat(path)
                counts["cat"] += 1
            elif name.endswith(".ost"):
                progress = state.load_progress_file(path)
                assert all(np.isfinite(w).all() for w in progress.weights), "non-finite weights"
                counts["ost"] += 1
            elif name.endswith(".png"):
                inp = oiio.ImageInput.open(str(path))
                assert inp is not None, oiio.geterror()
                pixels = inp.read_image("float")
                error = inp.geterror()
                inp.close()
                assert pixels is not None and not error, error or "no pixels"
                counts["png"] += 1
            elif name.endswith(".json"):
                data = json.loads(path.read_text())
                if name == "latest.json":
                    catfile.load_cat(folder / data["cat"])
                counts["json"] += 1
            elif name.endswith(".summary"):
                pass  # read below, all together
            else:
                raise AssertionError("unexpected file")
        except Exception as err:  # noqa: BLE001 - report which file failed and why
            raise AssertionError(f"{path} is damaged: {type(err).__name__}: {err}") from None
    read_summaries(folder)
    return counts


def _temp_file_in(folder: Path) -> bool:
    from ccat_tf.atomic import TEMP_MARK

    try:
        return any(n.startswith(TEMP_MARK) for n in os.listdir(folder))
    except OSError:
        return False


def kill_at_random(cmd: list[str], folder: Path, rng: random.Random, window: float) -> str:
    """Start ``cmd``; once training is under way, SIGKILL it. Returns what happened."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        # The first contact sheet (step 2) says the steps are under way; kills land after it.
        while not any(folder.glob("*.contact.*.png")):
            if proc.poll() is not None:
                raise AssertionError(
                    f"training exited early ({proc.returncode}): {proc.stderr.read()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError("training did not start within 120 s")
            time.sleep(0.01)
        mode = rng.choice(["time", "write"])
        delay = rng.uniform(0.0, window)
        time.sleep(delay)
        if mode == "write":
            # Kill in the middle of a write: poll for a temporary file for up to `window` s.
            end = time.monotonic() + window
            while not _temp_file_in(folder) and time.monotonic() < end and proc.poll() is None:
                time.sleep(0.0005)
        if proc.poll() is not None:
            return f"finished before the kill (exit {proc.returncode})"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return f"killed ({mode}, {delay:.2f} s after step 2)"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def run_trials(trials: int, seed: int, workdir: Path, window: float = 2.0, log=print) -> list[dict]:
    import ccat_tf
    from ccat_tf import catfile, state
    from ccat_tf.atomic import TEMP_MARK

    rng = random.Random(seed)
    dataset = make_dataset(workdir / "data")
    results = []
    for i in range(trials):
        folder = workdir / f"trial{i:02d}"
        settings = trial_settings(dataset, folder)
        cmd = [
            sys.executable,
            "-m",
            "ccat_tf",
            "train",
            "--no-progress",
            "--settings-json",
            json.dumps(settings),
        ]
        what = kill_at_random(cmd, folder, rng, window)
        counts = check_data_directory(folder)
        resumed_from = None
        try:
            resumed_from = state.load_latest_progress(folder)
        except Exception as err:  # noqa: BLE001
            raise AssertionError(f"trial {i}: no usable progress after the kill: {err}") from None
        final = ccat_tf.train(settings, progress_bar=False)
        meta = catfile.read_metadata(final)
        assert meta["step"] == meta["total_steps"] == TOTAL_STEPS, f"trial {i}: {meta['step']}"
        progress = state.load_progress_file(folder / state.CURRENT)
        assert progress.step == TOTAL_STEPS, f"trial {i}: progress at {progress.step}"
        left = [p.name for p in folder.rglob("*") if p.name.startswith(TEMP_MARK)]
        assert not left, f"trial {i}: temporary files survived the resume: {left}"
        catfile.load_cat(final)
        result = {
            "trial": i,
            "what": what,
            "resumed_at": resumed_from.step if resumed_from else 0,
            **counts,
        }
        results.append(result)
        log(
            f"trial {i}: {what}; left {counts['cat']} .cat, {counts['ost']} .ost, "
            f"{counts['png']} .png, {counts['json']} .json, {counts['temp']} temp files; "
            f"resumed at step {result['resumed_at']} and finished at {TOTAL_STEPS}: ok"
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--window", type=float, default=2.0, help="seconds to pick kills in")
    parser.add_argument("--workdir", help="where to work (default: a temporary folder)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="ccat-kill-trials-") as tmp:
        workdir = Path(args.workdir) if args.workdir else Path(tmp)
        try:
            run_trials(args.trials, args.seed, workdir, args.window)
        except AssertionError as err:
            print(f"FAILED: {err}", file=sys.stderr)
            return 1
    print(f"all {args.trials} trials passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
