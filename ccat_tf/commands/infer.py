"""``ccat-tf infer``: the Inference node: apply a trained .cat to a sequence."""

from __future__ import annotations

from ccat_tf.commands._settings_args import add_settings_arguments, settings_from_args
from ccat_tf.settings import InferSettings

HELP = "apply a trained .cat to a sequence, as the Inference node does"

HELPS = {
    "model_file": "the .cat to apply (or give it as the first argument)",
    "input": "input sequence, e.g. plate.####.exr (any format OpenImageIO reads)",
    "frames": "frames to render: 1001-1100, 1001,1010 or 1001-1100x10 (default: all found)",
    "output": "output sequence; the extension picks the format: .exr .dpx .tif .png .jpg",
    "use_gpu_if_available": "run on GPU 0 when there is one (otherwise the CPU, with a notice)",
    "optimize_for_speed_and_memory": (
        "float16 compute (mixed precision, float32 output layer): faster and about half the "
        "memory on GPUs. Without a GPU it is still honoured, with a notice: float16 is emulated "
        "on CPUs, so it saves a quarter to a third of the memory (larger tiles) but runs "
        "1.4-1.9x slower, and results differ from float32 by about 1e-3"
    ),
    "tile_size": "tile edge in pixels, or auto: the largest that fits free memory "
    "(whole frames when they fit)",
    "tile_overlap": "pixels shared by neighbouring tiles, or auto: from the network's "
    "receptive field, so tiled output equals untiled output",
    "batch_tiles": "tiles run through the network together",
    "output_data_type": "auto (EXR half; other formats keep the input's bit depth), half, "
    "float, uint8, uint10 (DPX), uint16",
    "merge_input": "write the input RGB with the predicted matte as RGBA",
    "overwrite": "replace existing output frames (the input sequence is never overwritten)",
    "before_render": "hook called once before the first frame",
    "before_frame_render": "hook called before each frame (frame, index, total, path, ...)",
    "after_frame_render": "hook called once each frame is written",
    "after_render": "hook called after the last frame",
    "render_progress": "hook called with progress (done, total, fps, eta_seconds, ...)",
}


def add_arguments(parser) -> None:
    parser.add_argument("model", nargs="?", metavar="MODEL.cat", help="the trained model")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or notices")
    parser.add_argument("--summary", metavar="FILE.json", help="also write the run summary here")
    add_settings_arguments(parser, InferSettings, helps=HELPS)


def run(args) -> int:
    from ccat_tf.atomic import atomic_write_json
    from ccat_tf.infer import infer

    settings = settings_from_args(args, InferSettings, extra={"model_file": args.model})
    summary = infer(settings=settings, progress_bar=not args.no_progress)
    if args.summary:
        atomic_write_json(args.summary, summary)
    fps = summary["fps"]
    speed = f"{fps:.2f} fps" if fps >= 1 or fps == 0 else f"{1 / fps:.1f} s/frame"
    print(
        f"wrote {summary['frames']} frames to {summary['output']} in {summary['seconds']:.1f} s "
        f"({speed}, {summary['device']}, {summary['precision']})",
        flush=True,
    )
    return 0
