"""Contact sheets and previews the trainer writes, and the overview of several shots.

A contact sheet is CopyCat's crop overlay saved as a PNG: one row per random crop, the columns
``input``, ``ground truth`` and ``output``, a title such as ``run1  step 300/1000  loss 0.0123``.
A preview is the model applied to whole preview frames, one below the other, labelled with their
frame numbers. Both are composed with numpy and labelled with Pillow using the DejaVu Sans font
that ships with matplotlib, which keeps a sheet well under 0.1 s (they are written during
training). Images arrive display-referred (0..1); :func:`to_display` makes training-space arrays so.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ccat_tf.atomic import TEMP_MARK, atomic_path
from ccat_tf.errors import DataDirectoryError

PAD = 8  # pixels between and around the images
BACKGROUND = (38, 38, 38)
TEXT = (230, 230, 230)
LABEL_SIZE = 14  # font pixel sizes
TITLE_SIZE = 16
MIN_CELL = 128  # crops smaller than this are enlarged (nearest neighbour) so labels fit
MAX_PREVIEW_WIDTH = 1024
OVERVIEW_HEIGHT = 512  # each shot's row in the overview is scaled to this height


# ---- pixels ----------------------------------------------------------------------------------


def to_display(array, transform_kinds: Sequence[str] | None) -> np.ndarray:
    """Training-space values -> display values in 0..1 (float32, same channels).

    Log-encoded channels (``transform_kinds[c] == "log"``, scene-linear HDR colour) are decoded
    with ``sign(y) * (exp(|y|) - 1)`` and, when they exceed 1, tone-mapped with Reinhard
    ``x / (1 + x)``; every channel is then clipped to 0..1 (NaN/inf become 0).
    """
    from ccat_tf import transform

    a = np.asarray(array, dtype=np.float32)
    if a.ndim == 2:
        a = a[..., None]
    n = a.shape[-1]
    kinds = list(transform_kinds or [])[:n]
    kinds += ["linear"] * (n - len(kinds))
    out = transform.decode(a, kinds)
    logs = [c for c, k in enumerate(kinds) if k == "log"]
    if logs:
        hdr = np.maximum(np.nan_to_num(out[..., logs], nan=0.0, posinf=1e6, neginf=0.0), 0.0)
        if hdr.size and hdr.max() > 1.0:
            out[..., logs] = hdr / (1.0 + hdr)
    return np.clip(np.nan_to_num(out, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)


def to_rgb8(array) -> np.ndarray:
    """An HWC (or HW) array in 0..1 -> HxWx3 uint8 for the sheet.

    Three or more channels: the first three (RGB of RGBA). One or two: the first one as grey
    (an alpha or matte shows grey).
    """
    a = np.asarray(array, dtype=np.float32)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] < 1 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"expected an HWC image array, got shape {a.shape}")
    a = a[..., :3] if a.shape[-1] >= 3 else np.repeat(a[..., :1], 3, axis=-1)
    a = np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=0.0)
    return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _enlarge(img: np.ndarray, factor: int) -> np.ndarray:
    if factor <= 1:
        return img
    return np.repeat(np.repeat(img, factor, axis=0), factor, axis=1)


def _shrink_to_width(img: np.ndarray, max_width: int) -> np.ndarray:
    """Box-filter ``img`` down by an integer factor until it is at most ``max_width`` wide."""
    h, w = img.shape[:2]
    f = -(-w // max_width)
    if f <= 1:
        return img
    h2, w2 = max(h // f, 1), max(w // f, 1)
    cut = img[: h2 * f, : w2 * f].astype(np.float32)
    if cut.shape[0] < f:  # shorter than one block: just subsample
        return img[:, ::f][:, :w2]
    small = cut.reshape(h2, f, w2, f, -1).mean(axis=(1, 3))
    return (small + 0.5).astype(np.uint8)


# ---- text ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _font(size: int):
    import matplotlib
    from PIL import ImageFont

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    try:
        return ImageFont.truetype(str(path), size)
    except OSError:
        return ImageFont.load_default(size)


def _text_size(text: str, size: int) -> tuple[int, int]:
    if not text:
        return 0, 0
    left, top, right, bottom = _font(size).getbbox(text)
    return right - left, size + size // 3


def _band(size: int) -> int:
    """Height of a text line of font ``size`` with a little space around it."""
    return size + size // 3 + PAD


def _draw(draw, xy, text: str, size: int, anchor: str = "la") -> None:
    if text:
        draw.text(xy, text, fill=TEXT, font=_font(size), anchor=anchor)


def _save_png(canvas: np.ndarray, texts, output) -> Path:
    """Draw ``texts`` ``[(x, y, text, size, anchor)]`` onto ``canvas`` and write it atomically."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(canvas, "RGB")
    draw = ImageDraw.Draw(img)
    for x, y, text, size, anchor in texts:
        _draw(draw, (x, y), text, size, anchor)
    output = Path(output)
    with atomic_path(output) as tmp:
        img.save(tmp, format="PNG", compress_level=3)
    return output


def _new_canvas(height: int, width: int) -> np.ndarray:
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = BACKGROUND
    return canvas


# ---- contact sheets and previews ---------------------------------------------------------------


def render_contact_sheet(
    rows: Sequence[Sequence[np.ndarray]],
    output: str | os.PathLike,
    *,
    labels: Sequence[str] = ("input", "ground truth", "output"),
    title: str = "",
) -> Path:
    """Write a contact sheet PNG: one row per crop, one column per label, labels on top.

    ``rows`` holds tuples of HWC float arrays in 0..1 (any channel count, see :func:`to_rgb8`).
    Crops smaller than 128 pixels are enlarged by a whole factor so the labels fit.
    """
    if not rows:
        raise ValueError("render_contact_sheet needs at least one row")
    images = [[to_rgb8(a) for a in row] for row in rows]
    n_cols = max(len(r) for r in images)
    labels = list(labels)[:n_cols] + [""] * max(0, n_cols - len(labels))
    smallest = min(min(img.shape[0], img.shape[1]) for r in images for img in r)
    factor = max(1, -(-MIN_CELL // smallest)) if smallest < MIN_CELL else 1
    images = [[_enlarge(img, factor) for img in r] for r in images]
    col_w = [max((r[c].shape[1] for r in images if c < len(r)), default=0) for c in range(n_cols)]
    col_w = [max(w, _text_size(lab, LABEL_SIZE)[0]) for w, lab in zip(col_w, labels, strict=True)]
    row_h = [max(img.shape[0] for img in r) for r in images]
    title_h = _band(TITLE_SIZE) if title else 0
    label_h = _band(LABEL_SIZE) if any(labels) else 0
    width = PAD + sum(w + PAD for w in col_w)
    width = max(width, _text_size(title, TITLE_SIZE)[0] + 2 * PAD)
    height = PAD + title_h + label_h + sum(h + PAD for h in row_h)
    canvas = _new_canvas(height, width)
    texts = []
    if title:
        texts.append((PAD, PAD, title, TITLE_SIZE, "la"))
    x0 = [PAD + sum(w + PAD for w in col_w[:c]) for c in range(n_cols)]
    for c, lab in enumerate(labels):
        texts.append((x0[c] + col_w[c] // 2, PAD + title_h, lab, LABEL_SIZE, "ma"))
    y = PAD + title_h + label_h
    for r, row in enumerate(images):
        for c, img in enumerate(row):
            h, w = img.shape[:2]
            canvas[y : y + h, x0[c] : x0[c] + w] = img
        y += row_h[r] + PAD
    return _save_png(canvas, texts, output)


def render_preview(
    images: Sequence[np.ndarray],
    output: str | os.PathLike,
    *,
    labels: Sequence[str],
    title: str = "",
) -> Path:
    """Write a preview PNG: the frames one below the other, each under its label.

    Frames wider than 1024 pixels are reduced (box filter, whole factor) to at most 1024.
    """
    if not images:
        raise ValueError("render_preview needs at least one image")
    frames = [_shrink_to_width(to_rgb8(a), MAX_PREVIEW_WIDTH) for a in images]
    labels = list(labels)[: len(frames)] + [""] * max(0, len(frames) - len(labels))
    title_h = _band(TITLE_SIZE) if title else 0
    label_h = _band(LABEL_SIZE) if any(labels) else 0
    width = PAD + max(f.shape[1] for f in frames) + PAD
    width = max(
        width,
        _text_size(title, TITLE_SIZE)[0] + 2 * PAD,
        max(_text_size(lab, LABEL_SIZE)[0] for lab in labels) + 2 * PAD,
    )
    height = PAD + title_h + sum(label_h + f.shape[0] + PAD for f in frames)
    canvas = _new_canvas(height, width)
    texts = [(PAD, PAD, title, TITLE_SIZE, "la")] if title else []
    y = PAD + title_h
    for frame, lab in zip(frames, labels, strict=True):
        texts.append((PAD, y, lab, LABEL_SIZE, "la"))
        y += label_h
        h, w = frame.shape[:2]
        canvas[y : y + h, PAD : PAD + w] = frame
        y += h + PAD
    return _save_png(canvas, texts, output)


# ---- overview of several shots -----------------------------------------------------------------


def _latest_runs(folder: Path) -> list[str]:
    """Run names, latest first: the run table's (last started first), then latest.json's."""
    from ccat_tf import runs as runtable
    from ccat_tf import safe_load
    from ccat_tf.errors import CcatError

    names: list[str] = []
    try:
        names = [str(r["name"]) for r in reversed(runtable.load_runs(folder))]
    except (CcatError, OSError, ValueError):
        pass  # a damaged run table: latest.json and the files decide
    try:
        cat = Path(str(safe_load.load_json_file(folder / runtable.LATEST_FILE)["cat"])).name
        m = re.match(r"^(?P<run>.+)\.step\d+\.cat$", cat)
        if m and m.group("run") not in names:
            names.append(m.group("run"))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return names


def newest_image(data_directory: str | os.PathLike, kind: str) -> Path | None:
    """The image of ``kind`` (``contact`` or ``preview``) a compositor wants to see, or None:
    the latest run's highest step.

    The latest run is the last one the run table (``runs.json``) lists, i.e. the run training
    now or trained last, also before its first checkpoint moves ``latest.json``; without a
    table, the run ``latest.json`` names. A run without such an image yet gives way to the run
    before it. Within a run the step number decides, not the file date, which a copy or a
    restore from backup changes; files of runs neither names are a last resort (newest first).
    Used by ``ccat-tf overview`` and by the workflow's contact_sheet and preview rules.
    """
    folder = Path(data_directory)
    by_run: dict[str, list[tuple[int, Path]]] = {}
    for p in folder.glob(f"*.{kind}.step*.png"):
        m = re.match(rf"^(?P<run>.+)\.{re.escape(kind)}\.step(?P<step>\d+)\.png$", p.name)
        if m and p.is_file() and not p.name.startswith(TEMP_MARK):
            by_run.setdefault(m.group("run"), []).append((int(m.group("step")), p))
    if not by_run:
        return None
    for run in _latest_runs(folder):
        if run in by_run:
            return max(by_run[run])[1]

    def unnamed(item: tuple[int, Path]):  # no run table or latest.json names these runs
        step, p = item
        return (p.stat().st_mtime, step, p.name)

    return max((item for items in by_run.values() for item in items), key=unnamed)[1]


def shot_labels(directories: Sequence[str | os.PathLike]) -> list[str]:
    """Short unique names for Data Directories: the last two path parts (``shotA/train``), more
    where two would be equal."""
    parts = [Path(os.path.abspath(d)).parts[1:] or (str(d),) for d in directories]
    n = {i: min(2, len(p)) for i, p in enumerate(parts)}
    while True:
        names = {i: "/".join(parts[i][-n[i] :]) for i in n}
        dup = [i for i in n if list(names.values()).count(names[i]) > 1 and n[i] < len(parts[i])]
        if not dup:
            return [names[i] for i in range(len(parts))]
        for i in dup:
            n[i] += 1


def _read_rgb8(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except OSError as err:
        raise DataDirectoryError(
            f"cannot read {path} ({err}); delete it (the next one the training writes will do)"
        ) from None


def _to_height(img: np.ndarray, height: int) -> np.ndarray:
    from PIL import Image

    h, w = img.shape[:2]
    if h == height:
        return img
    new_w = max(1, round(w * height / h))
    return np.asarray(Image.fromarray(img).resize((new_w, height), Image.Resampling.BILINEAR))


def overview(
    data_directories: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    labels: Sequence[str] | None = None,
) -> Path:
    """One PNG with, per Data Directory (shot), its newest contact sheet and preview side by side.

    Each shot's row is scaled to 512 pixels high and labelled with ``labels`` (default: see
    :func:`shot_labels`). Shots without a preview show only the contact sheet.
    """
    if not data_directories:
        raise DataDirectoryError("overview needs at least one data directory")
    for d in data_directories:
        if not Path(d).is_dir():
            raise DataDirectoryError(
                f"data directory {d} does not exist; give the data_directory a training used"
            )
    names = list(labels) if labels else shot_labels(data_directories)
    if len(names) != len(data_directories):
        raise DataDirectoryError(
            f"overview got {len(names)} labels for {len(data_directories)} data directories; "
            "give one label per directory"
        )
    rows = []
    any_contact = False
    for d, name in zip(data_directories, names, strict=True):
        contact = newest_image(d, "contact")
        preview = newest_image(d, "preview")
        any_contact = any_contact or contact is not None
        if contact is None and preview is None:
            rows.append((name + "  (no contact sheet yet)", []))
            continue
        imgs = [_read_rgb8(p) for p in (contact, preview) if p is not None]
        height = min(OVERVIEW_HEIGHT, max(i.shape[0] for i in imgs))
        caption = "  ".join([name] + [p.name for p in (contact, preview) if p is not None])
        rows.append((caption, [_to_height(i, height) for i in imgs]))
    if not any_contact:
        listed = ", ".join(str(d) for d in data_directories)
        raise DataDirectoryError(
            f"no contact sheets (*.contact.step*.png) in {listed}; train first (a sheet is "
            "written every contact_sheet_interval steps)"
        )
    label_h = _band(LABEL_SIZE)
    width = max(PAD + sum(i.shape[1] + PAD for i in imgs) if imgs else 0 for _, imgs in rows)
    width = max([width] + [_text_size(c, LABEL_SIZE)[0] + 2 * PAD for c, _ in rows])
    height = PAD + sum(
        label_h + (max(i.shape[0] for i in imgs) + PAD if imgs else 0) for _, imgs in rows
    )
    canvas = _new_canvas(height, width)
    texts = []
    y = PAD
    for caption, imgs in rows:
        texts.append((PAD, y, caption, LABEL_SIZE, "la"))
        y += label_h
        x = PAD
        for img in imgs:
            h, w = img.shape[:2]
            canvas[y : y + h, x : x + w] = img
            x += w + PAD
        if imgs:
            y += max(i.shape[0] for i in imgs) + PAD
    return _save_png(canvas, texts, output)
