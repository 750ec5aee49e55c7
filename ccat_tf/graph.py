"""CopyCat's Graph tab as a PNG: loss against step for every run, linear and log scale.

Each run gets one colour: its smoothed loss solid, the original curve faint behind it (CopyCat's
Show Original Curve). Smoothing is TensorBoard's (and CopyCat's Smoothness): a debiased
exponential moving average. Dotted vertical lines mark the multi-resolution stage changes
(1/4 -> 1/2 -> full resolution). When validation PSNR was logged, a third panel plots it.

Matplotlib is used through its Agg canvas directly (no pyplot, no global backend state), so
plotting works headless and inside other applications.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np

from ccat_tf.atomic import atomic_path
from ccat_tf.errors import DataDirectoryError, SettingsError

LOG_SCALES = ("both", "linear", "log")
WIDTH_IN = 10.0
PANEL_HEIGHT_IN = 3.6
DPI = 100
STAGE_NAMES = {0.25: "1/4", 0.5: "1/2", 1.0: "full"}
#: The longest --title drawn (a title is one line above the plot; matplotlib lays out long text
#: slowly: 100 000 characters took 33 s).
MAX_TITLE = 200
#: Values a training can log. A row outside them (a hand-edited or damaged table: 1e308) is not
#: plotted: matplotlib cannot lay out an axis spanning it. Steps are int64 counters; a loss
#: (an error per pixel) or a PSNR in dB beyond these is not a measurement.
MAX_STEP = 2**53
MAX_LOSS = 1e15
MAX_PSNR = 1e4
MAX_STAGE_SCALE = 16.0


def check_smoothness(smoothness: float) -> float:
    s = float(smoothness)
    if not (0.0 <= s < 1.0) or math.isnan(s):
        raise SettingsError(f"smoothness {smoothness} is out of range; use 0 (none) to 0.99")
    return s


def smooth(values, smoothness: float = 0.6) -> np.ndarray:
    """TensorBoard's smoothing: a debiased exponential moving average; NaN/inf pass through.

    ``last = last * w + (1 - w) * v`` over the finite values ``v`` (``w`` = smoothness), each
    output being ``last / (1 - w ** n)`` with ``n`` the number of finite values so far. Non-finite
    values are returned unchanged and do not enter the average. ``smoothness=0`` returns the
    values themselves.
    """
    w = check_smoothness(smoothness)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    out = values.copy()
    last = 0.0
    n = 0
    for i, v in enumerate(values):
        if not math.isfinite(v):
            continue
        last = last * w + (1.0 - w) * v
        n += 1
        out[i] = last / (1.0 - w**n) if w > 0 else last
    return out


def stage_name(scale: float) -> str:
    for k, name in STAGE_NAMES.items():
        if abs(float(scale) - k) < 1e-6:
            return name
    return f"x{float(scale):g}"


def stage_changes(steps, scales) -> list[tuple[int, str]]:
    """``[(step, stage name)]`` where the stage scale differs from the previous row's."""
    changes = []
    prev = None
    for step, scale in zip(steps, scales, strict=True):
        if scale is None or not math.isfinite(scale):
            continue
        if prev is not None and abs(scale - prev) > 1e-9:
            changes.append((int(step), stage_name(scale)))
        prev = scale
    return changes


def read_loss_csv(csv_path: str | os.PathLike):
    """Read a loss.csv written by ``ccat-tf summary-csv``; raise a one-line error if it is not."""
    import pandas as pd

    from ccat_tf import regular_file

    path = Path(csv_path)
    fix = "make it with: ccat-tf summary-csv DATA_DIRECTORY --output " + str(path)
    what = regular_file.problem(path)
    if what == "it does not exist":
        raise DataDirectoryError(f"loss table {path} does not exist; {fix}")
    if what is not None:  # a FIFO would block the read, a device never end
        raise DataDirectoryError(f"loss table {path} cannot be read: {what}; {fix}")
    try:
        table = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataDirectoryError(f"{path} is not a readable CSV ({first}); {fix}") from None
    missing = [c for c in ("run", "step", "loss") if c not in table.columns]
    if missing:
        raise DataDirectoryError(
            f"{path} has no column {', '.join(missing)} (it is not a loss table); {fix}"
        )
    for col in ("step", "loss", "val_psnr", "stage_scale"):
        if col in table.columns:
            table[col] = pd.to_numeric(table[col], errors="coerce")
    table = _plottable(table)
    if not np.isfinite(table["loss"].to_numpy(dtype=float)).any():
        raise DataDirectoryError(
            f"{path} has no loss values (a finite loss of at most {MAX_LOSS:g} at a step from 0 "
            f"to 2**53); train longer, then {fix}"
        )
    table["run"] = table["run"].astype(str)
    return table


def _plottable(table):
    """Rows with a step a training can reach; values outside what a training logs become NaN
    (not plotted), as a missing value is."""
    steps = table["step"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        table = table[np.isfinite(steps) & (steps >= 0) & (steps <= MAX_STEP)].copy()
    for col, low, high in (
        ("loss", -MAX_LOSS, MAX_LOSS),
        ("val_psnr", -MAX_PSNR, MAX_PSNR),
        ("stage_scale", 1e-6, MAX_STAGE_SCALE),
    ):
        if col in table.columns:
            values = table[col].to_numpy(dtype=float)
            with np.errstate(invalid="ignore"):
                bad = ~(np.isfinite(values) & (values >= low) & (values <= high))
            table[col] = np.where(bad, np.nan, values)
    return table


def _plain(text: str) -> str:
    """``text`` drawn as typed: matplotlib reads ``$...$`` as math (and fails on bad math)."""
    return str(text).replace("$", r"\$")


def plot_graph(
    csv_path: str | os.PathLike,
    output: str | os.PathLike,
    smoothness: float = 0.6,
    show_original: bool = True,
    log_scale: str = "both",
    title: str | None = None,
) -> Path:
    """Plot a loss.csv as CopyCat's Graph and write it to ``output`` (PNG) atomically.

    ``log_scale``: ``"both"`` (a linear and a log panel), ``"linear"`` or ``"log"`` (one panel).
    A third panel shows validation PSNR if the table has any. The title defaults to the name of
    the folder holding the CSV (the shot, in the workflow's ``results/<shot>/loss.csv``).
    The image is 1000 pixels wide and 360 pixels high per panel.
    """

    smoothness = check_smoothness(smoothness)
    if title is not None and len(str(title)) > MAX_TITLE:
        raise SettingsError(f"title is {len(str(title))} characters long; give at most {MAX_TITLE}")
    if log_scale not in LOG_SCALES:
        raise SettingsError(f"log_scale {log_scale!r} is not one of {', '.join(LOG_SCALES)}")
    path = Path(csv_path)
    table = read_loss_csv(path)
    # Nothing of matplotlib's or numpy's reaches stderr: the command's output is its one line.
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return _draw(table, path, output, smoothness, show_original, log_scale, title)


def _draw(table, path: Path, output, smoothness, show_original, log_scale, title) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    runs = list(dict.fromkeys(table["run"]))
    scales = {"both": ["linear", "log"], "linear": ["linear"], "log": ["log"]}[log_scale]
    has_psnr = "val_psnr" in table.columns and np.isfinite(table["val_psnr"].to_numpy()).any()
    n_panels = len(scales) + int(has_psnr)

    fig = Figure(figsize=(WIDTH_IN, PANEL_HEIGHT_IN * n_panels), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_panels, 1, sharex=True, squeeze=False)[:, 0]
    colours = [f"C{i % 10}" for i in range(len(runs))]
    changes: dict[tuple[int, str], tuple[str, bool]] = {}
    for run, colour in zip(runs, colours, strict=True):
        part = table[table["run"] == run].sort_values("step")
        steps = part["step"].to_numpy(dtype=float)
        loss = part["loss"].to_numpy(dtype=float)
        ok = np.isfinite(loss)
        smoothed = smooth(loss[ok], smoothness)
        for ax, scale in zip(axes, scales, strict=False):
            keep = ok & (loss > 0) if scale == "log" else ok
            sm = smoothed[(loss[ok] > 0)] if scale == "log" else smoothed
            if show_original:
                ax.plot(steps[keep], loss[keep], color=colour, alpha=0.25, linewidth=0.8)
            ax.plot(steps[keep], sm, color=colour, linewidth=1.6, label=_plain(run))
        if has_psnr:
            psnr = part["val_psnr"].to_numpy(dtype=float)
            good = np.isfinite(psnr)
            if good.any():
                axes[-1].plot(
                    steps[good],
                    psnr[good],
                    color=colour,
                    marker="o",
                    markersize=3,
                    label=_plain(run),
                )
        if "stage_scale" in part.columns:
            scale = part["stage_scale"].to_numpy(dtype=float)
            marks = stage_changes(steps, scale)
            if marks:  # name the first stage too (no line: the curve starts there)
                first = np.flatnonzero(np.isfinite(scale))[0]
                changes.setdefault((int(steps[first]), stage_name(scale[first])), (colour, False))
            for step, name in marks:
                changes.setdefault((step, name), (colour, True))

    for ax, scale in zip(axes, scales, strict=False):
        ax.set_yscale(scale)
        ax.set_ylabel("loss" + (" (log scale)" if scale == "log" else ""))
        ax.grid(True, which="major", alpha=0.3)
    if has_psnr:
        axes[-1].set_ylabel("validation PSNR (dB)")
        axes[-1].grid(True, alpha=0.3)
    for ax in axes:
        for (step, name), (colour, line) in changes.items():
            if line:
                ax.axvline(step, color=colour, linestyle=":", linewidth=1.2)
            ax.text(
                step,
                0.98,
                f" {name}",
                color=colour,
                transform=ax.get_xaxis_transform(),
                va="top",
                ha="left",
                fontsize=8,
            )
    axes[-1].set_xlabel("step")
    axes[0].legend(loc="upper right", fontsize=8, title="run", title_fontsize=8)
    if title is None:
        title = path.resolve().parent.name or str(path)
    fig.suptitle(_plain(f"{title}: loss (smoothness {smoothness:g})"))
    fig.tight_layout()
    output = Path(output)
    with atomic_path(output) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return output
