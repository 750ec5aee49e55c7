"""``ccat-tf info``: what a .cat expects and how it was trained."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ccat_tf.safe_text import visible

HELP = "show what a .cat expects and how it was trained"


def add_arguments(parser) -> None:
    parser.add_argument(
        "model",
        metavar="MODEL.cat",
        help="the trained model (or a Data Directory: its latest checkpoint, and which step its "
        "best checkpoint is)",
    )
    parser.add_argument("--json", action="store_true", help="print the details as JSON")


def describe(model_file: str) -> dict[str, Any]:
    """The .cat's metadata (its checked ModelInfo) plus what loading the network tells:
    parameters, receptive field.

    Loading runs every safety check (a hostile or damaged file is refused here as in inference).
    """
    from ccat_tf import tiling
    from ccat_tf.model import open_model
    from ccat_tf.runs import BEST_SUFFIX

    model = open_model(model_file)
    profile = model.profile
    info = model.info.to_json()
    info.update(
        model_file=str(model_file),
        parameters=int(model.net.count_params()),
        receptive_field_radius=profile.radius,
        auto_tile_overlap=tiling.default_blend(profile).overlap,
        network_divisor=profile.divisor,
    )
    if str(model_file).endswith(BEST_SUFFIX):
        info["best_checkpoint"] = True
    elif Path(model_file).is_dir():
        info["best_checkpoint"] = _best_of(Path(model_file))
    return info


def _best_of(folder: Path) -> dict[str, Any] | None:
    """The Data Directory's best checkpoint: its file, step and validation PSNR (None if it
    has none, or it is damaged: the latest checkpoint was described all the same)."""
    from ccat_tf.catfile import read_metadata
    from ccat_tf.errors import CcatError
    from ccat_tf.runs import best_checkpoint

    path = best_checkpoint(folder)
    if path is None:
        return None
    try:
        meta = read_metadata(path)
    except CcatError as err:
        return {"file": str(path), "problem": str(err)}
    return {"file": str(path), "step": meta.get("step"), "val_psnr": meta.get("val_psnr")}


def _best_row(info: dict[str, Any]) -> tuple[str, str] | None:
    best = info.get("best_checkpoint")
    what = "best checkpoint (highest validation PSNR) at step"
    if best is True:  # this file is one
        return "checkpoint", f"{what} {info.get('step', '?')}"
    if isinstance(best, dict):
        name = Path(str(best.get("file"))).name
        if best.get("problem"):
            return "best checkpoint", f"{name}: {best['problem']}"
        psnr = best.get("val_psnr")
        db = f", {psnr:.2f} dB" if isinstance(psnr, int | float) else ""
        return "best checkpoint", f"{name}: {what} {best.get('step', '?')}{db}"
    if "best_checkpoint" in info:  # a Data Directory without one
        return "best checkpoint", "- (none: no validation frames, or no checkpoint yet)"
    return None


def _as_list(value) -> list:
    if isinstance(value, list):
        return value
    return [value] if value not in (None, "") else []


def _channels(names, kinds) -> str:
    names, kinds = _as_list(names), _as_list(kinds)
    text = ", ".join(map(str, names)) if names else "?"
    if kinds:
        text += f"  (transform: {', '.join(map(str, kinds))})"
    return text


def _frames(value) -> str:
    from ccat_tf.frames import format_frames

    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return format_frames(value)
    return str(value) if value not in (None, "") else "?"


def _architecture(info: dict[str, Any]) -> str:
    """What the network sees besides the image (the .cat's architecture flags)."""
    parts = []
    if info.get("colour"):
        parts.append(
            "global colour branch (a least-squares colour fit"
            + (", its output also fed to the U-Net)" if info.get("colour_input") else ")")
        )
    if info.get("position"):
        where = "the colour fit only" if info.get("position_fit_only") else "the U-Net"
        parts.append(f"frame coordinates (u, v, r^2) for {where}")
    return "; ".join(parts) if parts else "the image only (no colour branch, no frame coordinates)"


def format_info(info: dict[str, Any]) -> str:
    """Human-readable lines for ``ccat-tf info``."""
    ds = info.get("dataset") if isinstance(info.get("dataset"), dict) else {}
    size = f"{ds.get('width')}x{ds.get('height')}" if ds.get("width") else "?"
    loss = info.get("last_loss")
    rows = [
        (
            "model",
            f"{info['model_file']}  (ccat_tf {info.get('ccat_tf_version', '?')}, created "
            f"{info.get('created', '?')})",
        ),
        (
            "network",
            f"{info.get('model_size', '?')} U-Net, {info['parameters']:,} parameters"
            + (", residual (learns a correction of its input)" if info.get("residual") else ""),
        ),
        ("architecture", _architecture(info)),
        ("input channels", _channels(info.get("input_channels"), info.get("input_transform"))),
        ("output channels", _channels(info.get("output_channels"), info.get("output_transform"))),
        (
            "divisor",
            f"{info.get('divisor', info['network_divisor'])} (frames are padded to a multiple)",
        ),
        (
            "receptive field",
            f"{info['receptive_field_radius']} px radius; tile_overlap auto = "
            f"{info['auto_tile_overlap']} px",
        ),
        (
            "trained",
            f"step {info.get('step', '?')} of {info.get('total_steps', '?')}, "
            f"{info.get('epochs', '?')} epochs, batch {info.get('batch_size', '?')}, "
            f"crop {info.get('crop_size', '?')}, stage {info.get('stage', '?')}",
        ),
        ("last loss", f"{loss:.6g}" if isinstance(loss, int | float) else "?"),
        (
            "validation PSNR",
            f"{info['val_psnr']:.2f} dB" if isinstance(info.get("val_psnr"), int | float) else "-",
        ),
        (
            "data set",
            f"{ds.get('input', '?')} -> {ds.get('ground_truth', '?')}, frames "
            f"{_frames(ds.get('frames'))}, {size}" + (", HDR" if ds.get("hdr") else ""),
        ),
        ("run", str(info.get("run_name", "?"))),
    ]
    best = _best_row(info)
    if best is not None:  # after "trained"
        rows.insert([k for k, _ in rows].index("trained") + 1, best)
    width = max(len(k) for k, _ in rows)
    # Every value may come from the file: control characters are shown escaped, one row a line.
    return "\n".join(f"{k:<{width}}  {visible(v)}" for k, v in rows)


def run(args) -> int:
    info = describe(args.model)
    if args.json:
        # ensure_ascii escapes every control and non-ASCII character (\u001b for ESC).
        print(json.dumps(info, indent=2, sort_keys=True, default=str, ensure_ascii=True))
    else:
        print(format_info(info))
    return 0
