"""Live updates (CopyCat's Progress tab "Live Updates"): a running training seen from anywhere.

The writing process (rank 0 of a distributed training, or a lone one) keeps two things on disk
at least every :data:`INTERVAL` seconds while it trains (:class:`LiveProgress`):

* its run's entry in ``runs.json`` (``last_step``, ``last_loss``, ``steps_per_second``,
  ``stage``, ``updated``), rewritten atomically, so ``ccat-tf runs`` shows where it is;
* its TensorBoard ``.summary`` file, flushed, so ``tensorboard --logdir``, ``ccat-tf
  summary-csv`` and ``ccat-tf graph`` show its losses (the training logs, and so flushes,
  every step: see :func:`ccat_tf.summary.open_writer`).

:func:`follow` (``ccat-tf runs DIR --follow``) shows one live line until the run ends: the run
(status, total) from ``runs.json``, its latest step, loss, speed and resolution from what was
appended to its newest event file since the last look (:class:`EventTail`), or from
``runs.json`` when there is none. It only reads, and only whole files the writer replaced
atomically or records the writer finished, so it cannot disturb the writer.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import struct
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from ccat_tf.errors import DataDirectoryError

#: Seconds between two live updates of runs.json and the .summary file (at most).
INTERVAL = 10.0
#: A followed run that has not updated runs.json for this long is taken for dead.
STALE_AFTER = 900.0


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class LiveProgress:
    """The writer's side: call :meth:`step_done` after every step; every ``interval`` seconds
    it flushes the run's summary writer and records the progress in ``runs.json``.

    ``writer`` and ``summary_folder``: the run's ``tf.summary`` writer and its folder
    (:func:`ccat_tf.summary.open_writer`), or None. ``clock``: seconds, monotonic (tests).
    """

    def __init__(
        self,
        data_directory: str | os.PathLike,
        run_id: int,
        *,
        writer: Any = None,
        summary_folder: str | os.PathLike | None = None,
        interval: float = INTERVAL,
        clock=time.monotonic,
    ):
        self.data_directory = Path(data_directory)
        self.run_id = run_id
        self.writer = writer
        self.summary_folder = summary_folder
        self.interval = interval
        self.clock = clock
        self._since = clock()
        self._since_step: int | None = None

    def step_done(self, step: int, loss: float | None, stage: str) -> bool:
        """Record step ``step`` (its loss, its stage such as ``1/4``) if ``interval`` seconds
        have passed since the last update; return whether it did."""
        now = self.clock()
        if self._since_step is None:  # the first step: speed counts from here (no tracing)
            self._since, self._since_step = now, step
            return False
        if now - self._since < self.interval:
            return False
        self.update(step, loss, stage, (step - self._since_step) / max(now - self._since, 1e-9))
        self._since, self._since_step = now, step
        return True

    def update(self, step: int, loss: float | None, stage: str, steps_per_second: float) -> None:
        """Flush the summary writer, then write the progress into the run table."""
        from ccat_tf import runs, summary

        if self.writer is not None:
            summary.flush_writer(self.writer, self.summary_folder)
        runs.update_run(
            self.data_directory,
            self.run_id,
            last_step=int(step),
            last_loss=loss,
            steps_per_second=steps_per_second,
            stage=str(stage),
            updated=_now_iso(),
        )


# ---- the follower's side -----------------------------------------------------------------------


def stage_label(scale: float | None) -> str:
    """The resolution of a stage as the progress bar shows it: ``1/4``, ``1/2``, ``full``."""
    labels = {0.25: "1/4", 0.5: "1/2", 1.0: "full"}
    return "-" if scale is None else labels.get(round(scale, 4), f"{scale:g}")


class EventTail:
    """The scalars a run's training appended to its newest event file since the last
    :meth:`read`, and from them its latest step, loss, resolution and speed (steps per second
    over the last :data:`SPEED_WINDOW` seconds of wall time). A record still being written is
    read the next time; a damaged one is skipped."""

    SPEED_WINDOW = 30.0

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path: Path | None = None
        self.offset = 0
        self.latest: dict[str, Any] = {}  # last_step, last_loss, stage, wall
        self._steps: deque = deque()  # (wall time, step) of the recent losses

    def read(self) -> dict[str, Any]:
        """Read what was appended; return ``{last_step, last_loss, stage, steps_per_second,
        wall}`` as far as known (``{}`` before the first loss)."""
        from tensorboard.compat.proto import event_pb2

        from ccat_tf.summary import SUFFIX, tensor_scalar
        from ccat_tf.tfrecord import _record_at

        newest = self._newest(SUFFIX)
        if newest is None:
            return self.progress()
        if newest != self.path:  # a resumed run writes a new file
            self.path, self.offset = newest, 0
        try:
            with open(newest, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read(64 * 2**20)
        except OSError:
            return self.progress()
        pos = 0
        while len(data) - pos >= 16:
            (length,) = struct.unpack_from("<Q", data, pos)
            end = pos + 16 + length
            if end > len(data):
                break  # the writer has not finished this record yet
            body = _record_at(data, pos)
            pos = end
            if body is None:
                continue
            event = event_pb2.Event()
            try:
                event.ParseFromString(body)
            except Exception:  # noqa: BLE001 - a record with good checksums but bad contents
                continue
            for v in event.summary.value:
                value = tensor_scalar(v.tensor) if v.HasField("tensor") else v.simple_value
                self._take(int(event.step), float(event.wall_time), v.tag, value)
        self.offset += pos
        return self.progress()

    def _newest(self, suffix: str) -> Path | None:
        try:
            files = [p for p in self.folder.iterdir() if p.name.endswith(suffix) and p.is_file()]
        except OSError:
            return None
        return max(files, key=lambda p: (p.stat().st_mtime_ns, p.name), default=None)

    def _take(self, step: int, wall: float, tag: str, value) -> None:
        if value is None:
            return
        if tag == "loss":
            self.latest.update(last_step=step, last_loss=float(value), wall=wall)
            self._steps.append((wall, step))
            while self._steps and wall - self._steps[0][0] > self.SPEED_WINDOW:
                self._steps.popleft()
        elif tag == "stage_scale":
            self.latest["stage"] = stage_label(float(value))

    def progress(self) -> dict[str, Any]:
        out = dict(self.latest)
        if len(self._steps) >= 2:
            (t0, s0), (t1, s1) = self._steps[0], self._steps[-1]
            if t1 > t0:
                out["steps_per_second"] = (s1 - s0) / (t1 - t0)
        return out


def format_duration(seconds: float) -> str:
    """``1:02:03``, ``02:03``, or ``--:--`` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "--:--"
    h, rem = divmod(int(seconds), 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def progress_line(run: dict[str, Any]) -> str:
    """``run1  step 420/1000  loss 0.01234  20.5 steps/s  left 00:28  res 1/2  running``."""
    from ccat_tf.safe_text import visible

    step, total = run.get("last_step") or 0, run.get("total_steps") or 0
    loss, rate = _number(run.get("last_loss")), _number(run.get("steps_per_second"))
    status = run.get("status")
    if status == "running":
        left = (total - step) / rate if rate else math.nan
    else:  # an ended run: nothing left when it finished, unknown when it stopped early
        left = 0.0 if status == "finished" else math.nan
    parts = [
        str(run.get("name", "-")),
        f"step {step}/{total}",
        "loss -" if loss is None else f"loss {loss:.5f}",
        "- steps/s" if rate is None else f"{rate:.2f} steps/s",
        f"left {format_duration(left)}",
        f"res {run.get('stage') or '-'}",
        str(run.get("status", "-")),
    ]
    return visible("  ".join(parts))


def _last_sign_of_life(run: dict[str, Any], live: dict[str, Any]) -> float:
    """When the run last wrote anything (its last logged step, or its run-table entry: a live
    update, else its start), in seconds since the epoch; 0 if unknown."""
    times = [live.get("wall") or 0.0]
    for key in ("updated", "started"):
        try:
            stamp = dt.datetime.fromisoformat(str(run.get(key)))
        except ValueError:
            continue
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=dt.timezone.utc)
        times.append(stamp.timestamp())
    return max(times)


def _pick(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run to follow: the newest running one, else the newest."""
    running = [r for r in runs if r.get("status") == "running"]
    return (running or runs)[-1]


def follow(
    data_directory: str | os.PathLike,
    out=None,
    *,
    poll: float = 1.0,
    stale_after: float = STALE_AFTER,
    clock=time.time,
    sleep=time.sleep,
) -> int:
    """Show the progress of the Data Directory's running run (the newest run if none runs) as
    one live line, until the run ends; return 0. One-line errors: no run to follow, or a run
    that stopped reporting for ``stale_after`` seconds (its process died)."""
    from ccat_tf.runs import RUNS_FILE, list_runs, load_runs

    out = out or sys.stdout
    folder = Path(data_directory)
    runs = list_runs(folder)
    if not runs:
        raise DataDirectoryError(
            f"no run to follow in {folder} ({RUNS_FILE} is missing or empty); start a training "
            "with this data_directory first (it adds its run when it starts)"
        )
    run_id = _pick(runs)["id"]
    tail = EventTail(folder / str(_pick(runs)["name"]))
    tty = hasattr(out, "isatty") and out.isatty()
    shown = ""
    while True:
        run = next((r for r in runs if r["id"] == run_id), None)
        if run is None:
            raise DataDirectoryError(
                f"run {run_id} left {folder / RUNS_FILE} while followed (renamed table or moved "
                "away); follow again"
            )
        live = tail.read()
        if live.get("last_step", -1) >= (run.get("last_step") or 0):  # the events are newer
            run = {**run, **{k: v for k, v in live.items() if k != "wall"}}
        line = progress_line(run)
        if line != shown:
            out.write(f"\r{line}\x1b[K" if tty else line + "\n")
            out.flush()
            shown = line
        if run.get("status") != "running":
            if tty:
                out.write("\n")
            return 0
        if clock() - _last_sign_of_life(run, live) > stale_after:
            if tty:
                out.write("\n")
            raise DataDirectoryError(
                f"run {run.get('name')} in {folder} has written nothing for more than "
                f"{stale_after:g} s (a training logs every step and updates {RUNS_FILE} every "
                f"{INTERVAL:g} s): its process may have died; train again to resume it"
            )
        sleep(poll)
        try:
            runs = load_runs(folder)
        except DataDirectoryError:
            pass  # read mid-way through a replacement on a shared file system: next time
