"""TensorBoard event files (``<data_directory>/<run>/events.out.tfevents.*.summary``) -> loss.csv.

The training process writes, per run, the scalars ``loss`` and ``stage_scale`` and
``steps_per_second`` every step and ``val_psnr`` at checkpoints (when validation frames are set).
:func:`read_summaries` collects them from every run of a Data Directory into one table, as
CopyCat's Graph tab shows all runs of its Data Directory; :func:`summary_to_csv` writes it.

Event files are read as they are, including those of a killed process: a truncated last record
ends that file (what came before it is kept), and a damaged record elsewhere is skipped (the
records after it are kept, see :mod:`ccat_tf.tfrecord`). A resumed run logs again the steps after its
last progress file; for a step logged twice the value written last wins.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path

from ccat_tf.atomic import TEMP_MARK, atomic_path, error_from_text
from ccat_tf.errors import DataDirectoryError

COLUMNS = [
    "run",
    "step",
    "wall_time",
    "loss",
    "val_psnr",
    "stage_scale",
    "steps_per_second",
    "rollback",
    "lr_scale",
]
#: ``rollback`` (1 where ccat_tf.guard restored an earlier state) and ``lr_scale`` (the
#: learning rate's gentleness factor after it) appear only at the steps of a rollback.
TAGS = ("loss", "val_psnr", "stage_scale", "steps_per_second", "rollback", "lr_scale")
SUFFIX = ".summary"
_DT_FLOAT, _DT_DOUBLE = 1, 2  # tensorflow.core.framework.types_pb2 DataType values


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def summary_files(data_directory: str | os.PathLike) -> dict[str, list[Path]]:
    """``{run name: [event files]}`` for every run folder holding ``*.summary`` files.

    Runs are in run-table order (``runs.json``), then any others by name.
    """
    from ccat_tf.runs import load_runs

    folder = Path(data_directory)
    found: dict[str, list[Path]] = {}
    for sub in folder.iterdir() if folder.is_dir() else ():
        if not sub.is_dir() or sub.name.startswith("."):
            continue
        files = sorted(
            p
            for p in sub.iterdir()
            if p.name.endswith(SUFFIX) and not p.name.startswith(TEMP_MARK) and p.is_file()
        )
        if files:
            found[sub.name] = files
    try:
        order = [r["name"] for r in load_runs(folder)]
    except DataDirectoryError:
        order = []  # a damaged runs.json must not hide the losses: fall back to names
    known = [n for n in order if n in found]
    rest = sorted((n for n in found if n not in order), key=_natural_key)
    return {n: found[n] for n in known + rest}


def scalar(tag: str, value: float, step: int) -> None:
    """Write one scalar to the default ``tf.summary`` writer, as ``tf.summary.scalar`` does.

    ``tf.summary.scalar`` needs the ``tensorboard`` package (TensorFlow >= 2.16 no longer
    installs it); this writes the same record (a float32 tensor marked for TensorBoard's scalars
    plugin) with TensorFlow alone.
    """
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = "scalars"
    tf.summary.write(tag, tf.constant(float(value), tf.float32), step=step, metadata=metadata)


@contextlib.contextmanager
def _disk_errors(folder: Path) -> Iterator[None]:
    """TensorFlow's event writer (C++) reports a full disk or a read-only folder as an OpError
    ("<file>; No space left on device"): make it the one-line DataDirectoryError naming the file."""
    import tensorflow as tf

    try:
        yield
    except tf.errors.OpError as err:
        text = str(err.message)
        start = text.find(str(folder))
        end = text.find(SUFFIX, start) if start >= 0 else -1
        named = text[start : end + len(SUFFIX)] if end > start else folder
        failure = error_from_text(named, text)
        if failure is None:
            raise
        raise failure from None


def open_writer(folder: str | os.PathLike):
    """The ``tf.summary`` writer of one run's folder (``<data_directory>/<run>``).

    A reader elsewhere must see a running training's losses (CopyCat's Live Updates):
    :func:`write_scalars` leaves ``as_default`` after each step, which flushes; events logged
    inside one long ``as_default`` go to disk at the first event :data:`ccat_tf.live.INTERVAL`
    seconds or more after the last flush (TensorFlow's default waits two minutes), and
    :class:`ccat_tf.live.LiveProgress` flushes on that schedule too.
    """
    import tensorflow as tf

    from ccat_tf.live import INTERVAL

    folder = Path(folder)
    with _disk_errors(folder):
        return tf.summary.create_file_writer(
            str(folder), flush_millis=int(INTERVAL * 1000), filename_suffix=SUFFIX
        )


def write_scalars(writer, folder: str | os.PathLike, step: int, values: Mapping[str, float]):
    """Log ``values`` at ``step`` with :func:`scalar`; disk errors are one-line errors."""
    with _disk_errors(Path(folder)), writer.as_default(step=step):
        for tag, value in values.items():
            scalar(tag, value, step)


def flush_writer(writer, folder: str | os.PathLike) -> None:
    """Write the queued events to disk; disk errors are one-line errors."""
    with _disk_errors(Path(folder)):
        writer.flush()


def close_writer_quietly(writer) -> None:
    """Close ``writer`` on the way out of a run that already has its outcome (finished,
    stopped, or failed with its own error): a last failed flush must not replace that."""
    import tensorflow as tf

    with contextlib.suppress(tf.errors.OpError):
        writer.flush()
    with contextlib.suppress(tf.errors.OpError):
        writer.close()


def tensor_scalar(tensor, tf=None) -> float | None:
    """The value of a one-element TensorProto (fast paths for float32/float64 scalars, the
    kinds ccat_tf writes; other kinds through TensorFlow when ``tf`` is given, else None)."""
    if not tensor.tensor_shape.dim:
        if tensor.dtype == _DT_FLOAT:
            if len(tensor.tensor_content) == 4:
                return struct.unpack("<f", tensor.tensor_content)[0]
            if len(tensor.float_val) == 1:
                return float(tensor.float_val[0])
        elif tensor.dtype == _DT_DOUBLE:
            if len(tensor.tensor_content) == 8:
                return struct.unpack("<d", tensor.tensor_content)[0]
            if len(tensor.double_val) == 1:
                return float(tensor.double_val[0])
    if tf is None:
        return None
    try:
        arr = tf.make_ndarray(tensor)
        return float(arr.reshape(())) if arr.size == 1 else None
    except (TypeError, ValueError):
        return None


_tensor_scalar = tensor_scalar  # the name tests/test_guard.py reads it by


def _read_events(path: Path, notices: list[str] | None):
    """Yield ``(step, wall_time, tag, value)`` of the scalars in one event file."""
    import tensorflow as tf

    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")  # summary_iterator's deprecation notice is not for our users
    try:
        for event in _events(path, notices, tf):
            for v in event.summary.value:
                if v.tag not in TAGS:
                    continue
                if v.HasField("tensor"):
                    value = tensor_scalar(v.tensor, tf)
                    if value is None:
                        continue
                elif v.HasField("simple_value"):
                    value = float(v.simple_value)
                else:
                    continue
                yield int(event.step), float(event.wall_time), v.tag, value
    finally:
        logger.setLevel(level)


def _events(path: Path, notices: list[str] | None, tf):
    """The events of one file: TensorFlow's fast reader, and past damage the slow one."""
    events = []
    try:
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            events.append(event)
        return events
    except tf.errors.DataLossError:
        pass
    from tensorflow.core.util import event_pb2

    from ccat_tf.tfrecord import read_records

    found = read_records(path)
    if notices is not None:
        notices.extend(_damage_notices(path, found))
    events = []
    for record in found.records:
        event = event_pb2.Event()
        try:
            event.ParseFromString(record)
        except Exception:  # noqa: BLE001 - a record with a good checksum but bad contents
            continue
        events.append(event)
    return events


def _damage_notices(path: Path, found) -> list[str]:
    notes = []
    if found.damaged_at:
        where = ", ".join(str(p) for p in found.damaged_at[:3])
        notes.append(
            f"{path} has {len(found.damaged_at)} damaged record(s) (at byte {where}); "
            "skipped them and read the records around them"
        )
    if found.truncated:
        notes.append(
            f"{path} ends in a truncated or damaged record (a killed writer?); "
            "read what came before it"
        )
    if found.gave_up_at is not None:
        notes.append(f"{path} is damaged from byte {found.gave_up_at} on; read what came before it")
    return notes


def read_summaries(data_directory: str | os.PathLike, notices: list[str] | None = None):
    """All runs' scalars as a ``pandas.DataFrame`` with columns :data:`COLUMNS`.

    One row per (run, step), NaN where a scalar was not logged at that step; sorted by run
    (run-table order) then step. ``wall_time`` is when the step's loss was written (seconds since
    the epoch). Problems that do not stop the reading (a truncated file) are appended to
    ``notices`` when a list is given.
    """
    import pandas as pd

    records = []
    order = 0
    for run, files in summary_files(data_directory).items():
        # Older files first, so that a resumed run's re-logged steps (a newer file) win.
        keyed = []
        for path in files:
            events = list(_read_events(path, notices))
            first = min((e[1] for e in events), default=float("inf"))
            keyed.append((first, path.name, events))
        keyed.sort(key=lambda k: (k[0], k[1]))
        for _, _, events in keyed:
            for step, wall, tag, value in events:
                records.append((run, step, tag, wall, value, order))
                order += 1
    if not records:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in COLUMNS}).astype(
            {"run": "object", "step": "int64"}
        )
    raw = pd.DataFrame(records, columns=["run", "step", "tag", "wall_time", "value", "order"])
    raw = raw.sort_values("order").drop_duplicates(["run", "step", "tag"], keep="last")
    values = raw.pivot(index=["run", "step"], columns="tag", values="value")
    walls = raw.pivot(index=["run", "step"], columns="tag", values="wall_time")
    wall = walls["loss"] if "loss" in walls else walls.max(axis=1)
    wall = wall.fillna(walls.max(axis=1))
    table = values.reindex(columns=list(TAGS)).astype("float64")
    table.insert(0, "wall_time", wall.astype("float64"))
    table = table.reset_index()
    run_rank = {r: i for i, r in enumerate(dict.fromkeys(raw["run"]))}
    table["_rank"] = table["run"].map(run_rank)
    table = table.sort_values(["_rank", "step"], kind="stable").drop(columns="_rank")
    table["step"] = table["step"].astype("int64")
    table["run"] = table["run"].astype("object")
    table.columns.name = None
    return table[COLUMNS].reset_index(drop=True)


def summary_to_csv(
    data_directory: str | os.PathLike,
    output: str | os.PathLike,
    notices: list[str] | None = None,
) -> Path:
    """Write :func:`read_summaries` of ``data_directory`` to ``output`` (CSV) atomically."""
    folder = Path(data_directory)
    if not folder.is_dir():
        raise DataDirectoryError(
            f"data directory {folder} does not exist; give the data_directory a training used"
        )
    table = read_summaries(folder, notices)
    if table.empty and summary_files(folder):
        raise DataDirectoryError(
            f"the .summary files in {folder} hold no readable loss records (damaged or empty); "
            "train again to log new ones"
        )
    if table.empty:
        raise DataDirectoryError(f"no .summary files in {folder}; train first")
    output = Path(output)
    # The scalars were logged as float32: write them as such (0.1, not 0.10000000149011612);
    # wall_time keeps float64's full precision.
    table = table.astype({c: "float32" for c in TAGS})
    with atomic_path(output) as tmp:
        table.to_csv(tmp, index=False)
    return output
