"""The run table of a Data Directory (``runs.json``), as CopyCat's Progress tab shows it.

Every training (a new run, or a resume of an interrupted one) has an entry::

    {"runs": [{"id": 1, "name": "run1", "started": ISO, "ended": ISO | null,
               "status": "running|finished|interrupted|failed", "settings": {...},
               "first_step": int, "last_step": int, "last_loss": float | null,
               "total_steps": int, "best_step": int | null, "best_val_psnr": float | null,
               "rollbacks": [{"step": int, "to_step": int | null, "reason": str,
                              "lr_scale": float}],
               "steps_per_second": float | null, "stage": str, "updated": ISO,
               "seconds": {"data set": float, "frames": float, ..., "in all": float}}]}

``best_step``/``best_val_psnr`` name the run's best checkpoint, ``<run>.best.cat`` (the highest
validation PSNR, when validation frames are set); ``rollbacks`` the divergences the training
rolled back from (:mod:`ccat_tf.guard`); ``seconds`` where the training's wall time went, phase
by phase (:data:`ccat_tf.training.PHASES`), written when it ends. While a run runs, its writer
(rank 0 of a distributed training) refreshes ``last_step``, ``last_loss``, ``steps_per_second``,
``stage`` (the crop resolution: ``1/4``, ``1/2``, ``full``) and ``updated`` at least every
:data:`ccat_tf.live.INTERVAL` seconds (:class:`ccat_tf.live.LiveProgress`), so ``ccat-tf runs``
on any machine shows where it is. Older tables lack these fields: they read as none.

The file is rewritten atomically on every change. :func:`start_run` and :func:`update_run` are
called by the training process, which already holds the Data Directory's lock; :func:`rename_run`
takes the lock itself, so it refuses to rename while a training runs.

A run's files are named after it: ``<run>.step0001000.cat``, ``<run>.best.cat``,
``<run>.contact.step0000100.png``, ``<run>.preview.step0001000.png``, ``<run>.progress.ost`` and
the summary folder ``<run>/``.
Renaming a run renames all of them, as renaming a run in CopyCat's run table does.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import math
import os
import re
from pathlib import Path
from typing import Any

from ccat_tf import safe_load
from ccat_tf.atomic import (
    TEMP_MARK,
    DirectoryLock,
    atomic_write_bytes,
    atomic_write_json,
)
from ccat_tf.errors import DataDirectoryError, SettingsError
from ccat_tf.safe_text import visible

RUNS_FILE = "runs.json"
LATEST_FILE = "latest.json"
STATUSES = ("running", "finished", "interrupted", "failed")
FIELDS = (
    "id",
    "name",
    "started",
    "ended",
    "status",
    "settings",
    "first_step",
    "last_step",
    "last_loss",
    "total_steps",
    "best_step",
    "best_val_psnr",
    "rollbacks",
    "steps_per_second",
    "stage",
    "updated",
    "seconds",
)
# A run name becomes part of file names, so: a letter or digit first, then letters, digits, _ - .
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: The largest run table read (a run is ~300 bytes: this holds tens of thousands of runs).
RUNS_MAX_BYTES = 16 * 2**20
# Names whose files would collide with the Data Directory's own files (progress.ost, runs.json,
# latest.json).
_RESERVED = {"progress", "runs", "latest"}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _runs_path(data_directory) -> Path:
    return Path(data_directory) / RUNS_FILE


def load_runs(data_directory: str | os.PathLike) -> list[dict[str, Any]]:
    """The runs of a Data Directory, oldest first; ``[]`` if it has no ``runs.json`` yet."""
    path = _runs_path(data_directory)
    if not path.exists():
        return []
    try:  # bounded: a run table is a few KB; 16 MiB holds hundreds of thousands of runs
        data = safe_load.load_json_file(path, str(path), max_bytes=RUNS_MAX_BYTES, max_values=None)
    except safe_load.LoadError as err:
        raise DataDirectoryError(
            f"{err}; fix it or move it away (the run table then starts again; checkpoints are kept)"
        ) from None
    runs = data.get("runs") if isinstance(data, dict) else data
    if not isinstance(runs, list) or not all(
        isinstance(r, dict) and "id" in r and "name" in r for r in runs
    ):
        raise DataDirectoryError(
            f'{path} is not a run table (expected {{"runs": [{{"id": ..., "name": ...}}]}}); '
            "fix it or move it away"
        )
    ids, names = set(), set()
    for number, run in enumerate(runs, 1):
        problem = _entry_problem(run)
        if problem is None and run["id"] in ids:
            problem = f"id {run['id']} is used by an earlier run too"
        if problem is None and run["name"] in names:
            problem = f"name {run['name']!r} is used by an earlier run too"
        if problem is not None:
            raise DataDirectoryError(
                f"{path} is damaged: run {number}'s {problem}; fix that entry or move the file "
                "away (the run table then starts again; checkpoints are kept)"
            )
        ids.add(run["id"])
        names.add(run["name"])
    return runs


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


#: Steps and ids are int64 counters in a training; a larger number was not written by one.
_MAX_COUNT = 2**62


def _entry_problem(run: dict) -> str | None:
    """What is wrong with one entry of a run table (None if nothing): each field a training
    writes must have its type, so every reader (the table, a rename, a training) can trust it."""
    ident = run["id"]
    if type(ident) is not int or not 0 <= ident <= _MAX_COUNT:  # not bool, not 1.5, not "1"
        return f"id is {_shown(ident)}, not a whole number (0 or more)"
    try:
        check_run_name(run["name"])
    except SettingsError:
        return f"name {_shown(run['name'])} is not a run name (1-64 letters, digits, _ - .)"
    for key in ("first_step", "last_step", "total_steps", "best_step"):
        value = run.get(key)
        if value is not None and (type(value) is not int or not 0 <= value <= _MAX_COUNT):
            return f"{key} is {_shown(value)}, not a whole number (0 or more)"
    for key in ("started", "ended", "status", "stage", "updated"):
        if run.get(key) is not None and not isinstance(run[key], str):
            return f"{key} is {_shown(run[key])}, not text"
    if run.get("settings") is not None and not isinstance(run["settings"], dict):
        return f"settings is {_shown(run['settings'])}, not a mapping"
    for key in ("last_loss", "best_val_psnr", "steps_per_second"):
        value = run.get(key)
        if value is not None and (
            type(value) not in (int, float) or _finite_or_none(value) is None
        ):
            return f"{key} is {_shown(value)}, not a finite number or null"
    rollbacks = run.get("rollbacks")
    if rollbacks is not None and not (
        isinstance(rollbacks, list) and all(isinstance(r, dict) for r in rollbacks)
    ):
        return f"rollbacks is {_shown(rollbacks)}, not a list of records"
    seconds = run.get("seconds")
    if seconds is not None and not (
        isinstance(seconds, dict)
        and all(
            type(v) in (int, float) and _finite_or_none(v) is not None for v in seconds.values()
        )
    ):
        return f"seconds is {_shown(seconds)}, not a mapping of phase to seconds"
    return None


def _save_runs(data_directory, runs: list[dict[str, Any]]) -> None:
    atomic_write_json(_runs_path(data_directory), {"runs": runs})


def list_runs(data_directory: str | os.PathLike) -> list[dict[str, Any]]:
    """The run table of an existing Data Directory (``ccat-tf runs``)."""
    folder = Path(data_directory)
    if not folder.is_dir():
        raise DataDirectoryError(
            f"data directory {folder} does not exist; give the data_directory a training used"
        )
    return load_runs(folder)


def check_run_name(name: str) -> str:
    """Return ``name`` if it can name a run (and so its files); raise SettingsError otherwise."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise SettingsError(
            f"run name {name!r} is not allowed; use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    if name.lower() in _RESERVED:
        raise SettingsError(
            f"run name {name!r} is reserved for the Data Directory's own files; choose another"
        )
    return name


def _finite_or_none(value) -> float | None:
    """``value`` as a finite float, or None (for None, NaN, infinities, 10**400, text...)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return value if math.isfinite(value) else None


def start_run(
    data_directory: str | os.PathLike,
    settings: dict[str, Any],
    first_step: int,
    total_steps: int,
    name: str = "",
) -> dict[str, Any]:
    """Add a ``running`` entry to the run table and return it.

    The new id is the largest id + 1 and the default name ``run<id>``. A given name must be a
    safe file name (see :func:`check_run_name`) not used by another run, with one exception: a
    resume (``first_step > 0``) under the name of a run that did not finish continues that entry
    (status back to ``running``) instead of adding one.
    """
    folder = Path(data_directory)
    runs = load_runs(folder)
    if name:
        check_run_name(name)
        existing = next((r for r in runs if r.get("name") == name), None)
        if existing is not None:
            if first_step > 0 and existing.get("status") != "finished":
                existing.update(
                    status="running",
                    ended=None,
                    updated=_now(),
                    last_step=int(first_step),
                    total_steps=int(total_steps),
                    settings=dict(settings),
                )
                _save_runs(folder, runs)
                return dict(existing)
            raise SettingsError(
                f"run name {name!r} is already used in {folder / RUNS_FILE}; choose another "
                "run_name or leave it empty for the next runN"
            )
    new_id = max((int(r["id"]) for r in runs), default=0) + 1
    if not name:
        taken = {r.get("name") for r in runs}
        n = new_id
        while f"run{n}" in taken:
            n += 1
        name = f"run{n}"
    run = {
        "id": new_id,
        "name": name,
        "started": _now(),
        "ended": None,
        "status": "running",
        "settings": dict(settings),
        "first_step": int(first_step),
        "last_step": int(first_step),
        "last_loss": None,
        "total_steps": int(total_steps),
        "updated": _now(),
    }
    runs.append(run)
    _save_runs(folder, runs)
    return dict(run)


def update_run(data_directory: str | os.PathLike, run_id: int, **fields) -> dict[str, Any]:
    """Change fields of run ``run_id`` (e.g. ``status``, ``last_step``, ``last_loss``, ``ended``).

    ``id`` and ``name`` cannot be changed here (use :func:`rename_run`). A non-finite
    ``last_loss`` is stored as null. Returns the updated entry.
    """
    unknown = set(fields) - set(FIELDS) or ({"id", "name"} & set(fields))
    if unknown:
        raise TypeError(f"update_run cannot set {sorted(unknown)}")
    if "status" in fields and fields["status"] not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, not {fields['status']!r}")
    for key in ("last_loss", "best_val_psnr", "steps_per_second"):
        if key in fields:
            fields[key] = _finite_or_none(fields[key])
    folder = Path(data_directory)
    runs = load_runs(folder)
    run = next((r for r in runs if int(r["id"]) == int(run_id)), None)
    if run is None:
        raise DataDirectoryError(
            f"run id {run_id} is not in {folder / RUNS_FILE}; the run table was changed or "
            "moved away during training"
        )
    run.update(fields)
    _save_runs(folder, runs)
    return dict(run)


def add_rollback(data_directory: str | os.PathLike, run_id: int, record: dict) -> dict[str, Any]:
    """Append ``record`` (``step``, ``to_step``, ``reason``, ``lr_scale``) to run ``run_id``'s
    ``rollbacks``. Returns the updated entry."""
    runs = load_runs(data_directory)
    run = next((r for r in runs if int(r["id"]) == int(run_id)), None)
    earlier = list(run.get("rollbacks") or []) if run is not None else []
    return update_run(data_directory, run_id, rollbacks=[*earlier, dict(record)])


BEST_SUFFIX = ".best.cat"  # callbacks.best_checkpoint_path names it


def best_checkpoint(data_directory: str | os.PathLike) -> Path | None:
    """The best checkpoint (``<run>.best.cat``) of the latest run that wrote one, or None.

    The run table decides which run is latest (a resumed training that did not beat its best
    has none of its own: the run before it holds the training's best); without a table, the
    newest such file.
    """
    folder = Path(data_directory)
    try:
        names = [r["name"] for r in reversed(load_runs(folder))]
    except DataDirectoryError:
        names = []
    for name in names:
        path = folder / f"{name}{BEST_SUFFIX}"
        if path.is_file():
            return path
    found = [
        p
        for p in folder.glob(f"*{BEST_SUFFIX}")
        if p.is_file() and not p.name.startswith(TEMP_MARK)
    ]
    return max(found, key=lambda p: (p.stat().st_mtime_ns, p.name), default=None)


def _find_run(runs, key: str):
    run = next((r for r in runs if r.get("name") == key), None)
    key = str(key)
    if run is None and key.isascii() and key.isdigit() and len(key) <= 20:
        run = next((r for r in runs if r["id"] == int(key)), None)
    return run


def run_files(data_directory: str | os.PathLike, name: str, other_names=()) -> list[Path]:
    """The files and folders of run ``name``: ``<name>.*`` and ``<name>/``.

    A file of another run whose name starts with ``<name>.`` (``a.b.step0000010.cat`` when both
    ``a`` and ``a.b`` exist) is not counted as ``name``'s. A ``name`` that is not a run name
    (``""``, ``".."``, ``"runs"``) has no files: the Data Directory's own files (``runs.json``,
    the lock file, dotfiles) are never a run's.
    """
    try:
        check_run_name(name)
    except SettingsError:
        return []
    folder = Path(data_directory)
    longer = [n for n in other_names if n != name and n.startswith(name + ".")]
    found = []
    for p in sorted(folder.iterdir()):
        if p.name == name and p.is_dir():
            found.append(p)
        elif (
            p.name.startswith(name + ".")
            and not p.name.startswith(TEMP_MARK)
            and not any(p.name.startswith(n + ".") for n in longer)
            and p.is_file()
        ):
            found.append(p)
    return found


def _lock_holder(folder: Path) -> str:
    with contextlib.suppress(OSError):
        return visible((folder / ".ccat.lock").read_text().strip()) or "unknown process"
    return "unknown process"


def rename_run(data_directory: str | os.PathLike, old: str, new: str) -> dict[str, Any]:
    """Rename run ``old`` (a name, or an id) to ``new``: its entry and all of its files.

    Refuses while a training process holds the Data Directory, when ``new`` is in use (by a run
    or by files on disk) or is not a safe name. ``latest.json`` and the run name stored in the
    progress files are updated too. Returns the renamed entry.
    """
    folder = Path(data_directory)
    if not folder.is_dir():
        raise DataDirectoryError(
            f"data directory {folder} does not exist; give the data_directory a training used"
        )
    lock = DirectoryLock(folder, purpose="rename")
    try:
        lock.acquire()
    except DataDirectoryError:
        raise DataDirectoryError(
            f"cannot rename runs in {folder}: it is in use by a training process "
            f"({_lock_holder(folder)}); wait for the training to finish or stop it first"
        ) from None
    try:
        return _rename_locked(folder, old, new)
    finally:
        lock.release()


def _rename_locked(folder: Path, old: str, new: str) -> dict[str, Any]:
    runs = load_runs(folder)
    run = _find_run(runs, old)
    if run is None:
        names = ", ".join(visible(r["name"]) for r in runs) or "none"
        raise DataDirectoryError(
            f"no run {old!r} in {folder / RUNS_FILE} (runs: {names}); give one of those names"
        )
    old = run["name"]
    try:
        check_run_name(old)
    except SettingsError:
        raise DataDirectoryError(
            f"run {run['id']} in {folder / RUNS_FILE} has the name {old!r}, which is not a run "
            "name; fix it there (a name a training could have given) before renaming"
        ) from None
    check_run_name(new)
    if new == old:
        return dict(run)
    if any(r.get("name") == new for r in runs):
        raise DataDirectoryError(
            f"run name {new!r} is already used in {folder / RUNS_FILE}; choose another name"
        )
    names = [r["name"] for r in runs]
    moves = [(p, p.with_name(new + p.name[len(old) :])) for p in run_files(folder, old, names)]
    # Files already named like the new run's (strays, or a deleted run's) would be adopted.
    clash = run_files(folder, new, names) + [dst for _, dst in moves if dst.is_symlink()]
    if (folder / new).exists() and folder / new not in clash:
        clash.append(folder / new)
    if clash:
        raise DataDirectoryError(
            f"cannot rename {visible(old)} to {new}: {visible(clash[0])} already exists; move it "
            "away or choose another name"
        )
    done: list[tuple[Path, Path]] = []
    try:
        for src, dst in moves:
            os.rename(src, dst)
            done.append((src, dst))
    except OSError as err:
        for src, dst in reversed(done):
            with contextlib.suppress(OSError):
                os.rename(dst, src)
        raise DataDirectoryError(
            f"cannot rename {visible(src)} to {visible(dst)}: {err.strerror or err}; nothing was "
            "renamed, check the folder's permissions"
        ) from None
    run["name"] = new
    _save_runs(folder, runs)
    renamed = {src.name: dst.name for src, dst in moves}
    latest = folder / LATEST_FILE
    with contextlib.suppress(OSError, ValueError, AttributeError):
        data = safe_load.load_json_file(latest)
        if data.get("cat") in renamed:
            data["cat"] = renamed[data["cat"]]
            atomic_write_json(latest, data)
    for ost in sorted(folder.glob("*.ost")):
        _rename_in_progress_file(ost, old, new, run["id"])
    return dict(run)


def _rename_in_progress_file(path: Path, old: str, new: str, run_id) -> None:
    """Change the run name recorded in an .ost (so a resume continues under the new name)."""
    import h5py

    from ccat_tf import regular_file, state

    try:
        if regular_file.problem(path) is not None or path.stat().st_size > state.MAX_FILE_BYTES:
            return  # a FIFO or device named *.ost is not a progress file; neither is a huge file
        with h5py.File(path, "r") as h5:
            meta = safe_load.load_json_text(
                h5.attrs["meta"], f"{path} meta", max_bytes=4 * 2**20, max_values=None
            )
        if meta.get("run_name") != old or meta.get("run_id", run_id) != run_id:
            return
    except Exception:  # noqa: BLE001 - not ours to judge here; loading it later reports damage
        return
    meta["run_name"] = new
    # Edited in memory and written by ordinary file IO: HDF5 writing to a full disk crashes.
    image = io.BytesIO(path.read_bytes())
    with h5py.File(image, "r+") as h5:
        h5.attrs["meta"] = json.dumps(meta, default=str)
    atomic_write_bytes(path, image.getvalue())


# ---- display ---------------------------------------------------------------------------------


def _short_time(iso) -> str:
    if not iso:
        return "-"
    try:
        t = dt.datetime.fromisoformat(str(iso))
    except ValueError:
        return str(iso)
    if t.tzinfo is not None:
        t = t.astimezone()
    return t.strftime("%Y-%m-%d %H:%M")


def _setting(run, key: str) -> str:
    s = run.get("settings") if isinstance(run.get("settings"), dict) else {}
    value = s.get(key, "-")
    resolved = s.get(f"{key}_resolved")
    if resolved is not None and str(resolved) != str(value):
        return f"{value} ({resolved})"
    return str(value)


def _best(run) -> str:
    """``31.42 dB @ 2000``: the run's best checkpoint (``<run>.best.cat``), or ``-``."""
    psnr, step = _finite_or_none(run.get("best_val_psnr")), run.get("best_step")
    return "-" if psnr is None else f"{psnr:.2f} dB @ {step}"


def _rollbacks(run) -> str:
    rollbacks = run.get("rollbacks")
    return str(len(rollbacks)) if isinstance(rollbacks, list) else "0"


def format_run_table(runs: list[dict[str, Any]]) -> str:
    """A plain-text table of runs: name, status, started, steps, last loss, the best checkpoint
    (validation PSNR and step), rollbacks and the key settings."""
    header = (
        "name",
        "status",
        "started",
        "steps",
        "last loss",
        "best val PSNR",
        "rollbacks",
        "model_size",
        "batch_size",
        "crop_size",
    )
    rows = [header]
    for r in runs:
        loss = _finite_or_none(r.get("last_loss"))
        rows.append(
            (
                str(r.get("name", "-")),
                str(r.get("status", "-")),
                _short_time(r.get("started")),
                f"{r.get('first_step', 0)}-{r.get('last_step', 0)} / {r.get('total_steps', '-')}",
                "-" if loss is None else f"{loss:.6g}",
                _best(r),
                _rollbacks(r),
                _setting(r, "model_size"),
                _setting(r, "batch_size"),
                _setting(r, "crop_size"),
            )
        )
    # Every cell comes from runs.json: shown with its control characters escaped.
    rows = [tuple(visible(cell) for cell in row) for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
