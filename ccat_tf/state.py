"""The ``.ost`` progress file: everything needed to resume a run exactly.

An .ost is an HDF5 file holding the model weights, every optimizer variable (Adam's moments and
iteration count), the step, the multi-resolution stage, the crop RNG's seed (crops are a pure
function of seed and step, so the seed *is* the RNG state), the run's settings and the data set
it trained on. Every array is stored with HDF5's Fletcher-32 checksum and the file is written
atomically, so a damaged file is detected on load instead of resuming from garbage.

The Data Directory keeps two: ``progress.ost`` and the one before it, ``progress.prev.ost``. If the
newest is damaged (a disk error, a hand edit), training falls back to the previous one with a
warning naming the bad file.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ccat_tf.atomic import atomic_path, hdf5_writer
from ccat_tf.errors import ModelFileError

CURRENT = "progress.ost"
PREVIOUS = "progress.prev.ost"
FORMAT = 1


@dataclass
class Progress:
    step: int
    total_steps: int
    stage: int
    run_id: int
    run_name: str
    signature: dict[str, Any]
    settings: dict[str, Any]
    dataset: dict[str, Any]
    weights: list[np.ndarray] = field(repr=False)
    optimizer: list[np.ndarray] = field(repr=False)
    last_loss: float | None = None
    path: Path | None = None


def save_progress(data_directory: str | os.PathLike, progress: Progress) -> Path:
    """Write ``progress.ost`` atomically, keeping the previous one as ``progress.prev.ost``.

    A full disk is the one-line DataDirectoryError of :func:`atomic_path` (HDF5 never sees the
    failed write, see :func:`hdf5_writer`); the previous files are left as they were.
    """
    folder = Path(data_directory)
    target = folder / CURRENT
    with atomic_path(target) as tmp:
        with hdf5_writer(tmp) as h5:
            meta = {
                "format": FORMAT,
                "step": progress.step,
                "total_steps": progress.total_steps,
                "stage": progress.stage,
                "run_id": progress.run_id,
                "run_name": progress.run_name,
                "signature": progress.signature,
                "settings": progress.settings,
                "dataset": progress.dataset,
                "last_loss": progress.last_loss,
                "n_weights": len(progress.weights),
                "n_optimizer": len(progress.optimizer),
            }
            h5.attrs["meta"] = json.dumps(meta, default=str)
            for group, arrays in (("weights", progress.weights), ("optimizer", progress.optimizer)):
                g = h5.create_group(group)
                for i, arr in enumerate(arrays):
                    arr = np.asarray(arr)
                    d = g.create_dataset(
                        f"{i:05d}", data=arr.reshape(-1), fletcher32=True, chunks=True
                    )
                    d.attrs["shape"] = arr.shape
        # Rotate only once the new file is complete and on disk (a full disk shows at fsync):
        # current -> previous, then atomic_path renames the new file into place.
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        if target.exists():
            os.replace(target, folder / PREVIOUS)
    return target


def load_progress_file(path: str | os.PathLike) -> Progress:
    """Read one .ost; raise ModelFileError (naming the file) if it is damaged."""
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as h5:
            meta = json.loads(h5.attrs["meta"])
            if meta.get("format") != FORMAT:
                raise ModelFileError(f"{path} has unsupported progress format {meta.get('format')}")
            arrays = {}
            for group, n in (("weights", meta["n_weights"]), ("optimizer", meta["n_optimizer"])):
                arrays[group] = []
                for i in range(n):
                    d = h5[group][f"{i:05d}"]
                    arrays[group].append(np.asarray(d[()]).reshape(tuple(d.attrs["shape"])))
    except ModelFileError:
        raise
    except Exception as err:  # noqa: BLE001 - h5py raises OSError, KeyError, ValueError...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelFileError(f"progress file {path} is damaged ({first})") from None
    return Progress(
        step=int(meta["step"]),
        total_steps=int(meta["total_steps"]),
        stage=int(meta["stage"]),
        run_id=int(meta["run_id"]),
        run_name=str(meta["run_name"]),
        signature=meta["signature"],
        settings=meta["settings"],
        dataset=meta["dataset"],
        weights=arrays["weights"],
        optimizer=arrays["optimizer"],
        last_loss=meta.get("last_loss"),
        path=path,
    )


def load_latest_progress(data_directory: str | os.PathLike) -> Progress | None:
    """The newest loadable .ost of a Data Directory, or None if there is none.

    A damaged newest file is skipped with a warning naming it; if every .ost present is damaged,
    ModelFileError says so (training must not silently start over on top of them).
    """
    folder = Path(data_directory)
    bad = []
    for name in (CURRENT, PREVIOUS):
        path = folder / name
        if not path.exists():
            continue
        try:
            progress = load_progress_file(path)
        except ModelFileError as err:
            bad.append(str(err))
            warnings.warn(f"{err}; falling back to the previous progress file", stacklevel=2)
            continue
        return progress
    if bad:
        raise ModelFileError(
            f"no usable progress file in {folder}: {bad[-1]}; move the damaged .ost files away to "
            "start a new run, or restore them from a backup"
        )
    return None


def set_aside(data_directory: str | os.PathLike, run_name: str) -> Path | None:
    """Keep a finished or abandoned run's progress as ``<run>.progress.ost`` (nothing is lost)."""
    folder = Path(data_directory)
    current = folder / CURRENT
    if not current.exists():
        return None
    target = folder / f"{run_name}.progress.ost"
    os.replace(current, target)
    prev = folder / PREVIOUS
    if prev.exists():
        prev.unlink()
    return target
