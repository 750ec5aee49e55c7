"""``ccat-tf stability``: the per-shot stability plot of a rendered output sequence.

For each pair of neighbouring rendered frames, the flow-warped temporal error
(:func:`ccat_tf.temporal.warp_errors`) of the output and of the input plate, with the same flows
(DIS optical flow of the *input*, occluded pixels left out), drawn by
:func:`ccat_tf.stability_plot.plot_stability`. The workflow's stability rule runs it on every
shot's ``results/{shot}/output`` (see workflow/rules/report.smk).

Kept cheap for long shots: at most ``--max-frames`` frames are read (default 48), as
``--windows`` runs of neighbouring frames spread evenly over the shot (first, middle, last);
pairs never span two windows. Frames are measured at most :data:`MAX_SIDE` pixels on their long
side (the input's size, or smaller); an output of another size (an upscaling model) is resized
to it. When the output and the input have as many channels, all are compared; otherwise (a matte
predicted from RGB) the Rec.709 luma of each (a single channel as it is), and the title says so.
"""

from __future__ import annotations

import sys

HELP = "plot an output's frame-to-frame flicker against its input's"

#: Longest side, in pixels, the frames are measured at (bigger frames are shrunk, box filter).
MAX_SIDE = 2048


def add_arguments(parser) -> None:
    parser.add_argument(
        "sequence",
        metavar="OUTPUT_SEQUENCE",
        help="the rendered output sequence, e.g. results/A/output/A.####.exr",
    )
    parser.add_argument(
        "--input", required=True, metavar="PLATE", help="the input sequence it was rendered from"
    )
    parser.add_argument(
        "--frames", required=True, help="the rendered frames, e.g. 1001-1100 (at least 2)"
    )
    parser.add_argument("--output", metavar="stability.png", required=True, help="PNG to write")
    parser.add_argument(
        "--input-channels", default="rgb", help="channels of the input (default: rgb)"
    )
    parser.add_argument(
        "--output-channels",
        default="rgb",
        help="channels of the output sequence: rgb, rgba, alpha or names (default: rgb)",
    )
    parser.add_argument(
        "--max-frames",
        type=int,
        default=48,
        help="read at most this many frames of a long shot (default: 48)",
    )
    parser.add_argument(
        "--windows",
        type=int,
        default=3,
        help="runs of neighbouring frames the --max-frames are split into, spread evenly over "
        "the shot (default: 3)",
    )
    parser.add_argument(
        "--preset",
        choices=("ultrafast", "fast", "medium"),
        default="fast",
        help="OpenCV DIS optical-flow preset (default: fast)",
    )
    parser.add_argument("--title", default="", help="plot title, e.g. the shot's name")


def windows(frames, max_frames: int = 48, count: int = 3) -> list[list[int]]:
    """The runs of neighbouring frames measured: all of ``frames`` (sorted) when there are at
    most ``max_frames``, else ``count`` runs of ``max_frames // count`` frames at evenly spaced
    starts (the first run at the first frame, the last ending at the last frame)."""
    from ccat_tf.errors import SettingsError

    frames = sorted(set(frames))
    if len(frames) < 2:
        raise SettingsError(
            f"--frames names {len(frames)} frame(s); flicker is measured between neighbouring "
            "frames, give at least 2"
        )
    if count < 1 or max_frames < 2 * count:
        raise SettingsError(
            f"--max-frames {max_frames} and --windows {count}: give at least one window and at "
            "least 2 frames per window (--max-frames >= 2 x --windows)"
        )
    if len(frames) <= max_frames:
        return [frames]
    size, n = max_frames // count, len(frames)
    starts = sorted({round(i * (n - size) / max(count - 1, 1)) for i in range(count)})
    return [frames[s : s + size] for s in starts]


def _as_compared(frame, same_channels: bool):
    """``frame`` as compared: itself, or its luma (one channel) when the channel counts differ."""
    import numpy as np

    from ccat_tf.temporal import REC709

    if same_channels:
        return frame
    if frame.shape[-1] >= 3:
        return (frame[..., :3] * REC709).sum(-1, keepdims=True).astype(np.float32)
    return frame[..., :1]


def measure(args) -> tuple[list[float], list[float], list[float], str]:
    """(frame numbers, output errors, input errors, what is compared): one value per measured
    pair, at the pair's later frame, and a NaN point between two windows (the plot breaks its
    lines there)."""
    from ccat_tf import frames as framespec
    from ccat_tf import imageio, temporal

    runs = windows(framespec.parse_frames(args.frames), args.max_frames, args.windows)
    xs: list[float] = []
    out_e: list[float] = []
    in_e: list[float] = []
    compared = ""
    for k, run in enumerate(runs):
        plates = [
            imageio.read_image(framespec.frame_path(args.input, f), args.input_channels)
            for f in run
        ]
        outputs = [
            imageio.read_image(framespec.frame_path(args.sequence, f), args.output_channels)
            for f in run
        ]
        h, w = plates[0].shape[:2]
        scale = min(1.0, MAX_SIDE / max(h, w))
        size = (max(1, round(w * scale)), max(1, round(h * scale)))

        def fit(frame, size=size):
            if frame.shape[1::-1] == size:
                return frame
            return imageio.resize(frame, *size)

        plates, outputs = [fit(p) for p in plates], [fit(o) for o in outputs]
        same = plates[0].shape[-1] == outputs[0].shape[-1]
        if not compared:
            n_out = outputs[0].shape[-1]
            compared = (
                f"output vs input, {n_out} channel{'s' if n_out > 1 else ''}"
                if same
                else f"output {'luma' if n_out >= 3 else 'channel'} vs input luma"
            )
        flows = temporal.sequence_flows(plates, args.preset)
        plates = [_as_compared(p, same) for p in plates]
        outputs = [_as_compared(o, same) for o in outputs]
        if k:
            xs.append((xs[-1] + run[1]) / 2 + 0.25)  # never a whole frame number
            out_e.append(float("nan"))
            in_e.append(float("nan"))
        xs += [float(f) for f in run[1:]]
        out_e += temporal.warp_errors(outputs, flows).tolist()
        in_e += temporal.warp_errors(plates, flows).tolist()
    return xs, out_e, in_e, compared


def run(args) -> int:
    import numpy as np

    from ccat_tf import frames as framespec
    from ccat_tf.outputs import Input, check_output
    from ccat_tf.stability_plot import MAX_TITLE, plot_stability

    rendered = tuple(framespec.parse_frames(args.frames))
    check_output(
        args.output,
        "png",
        [
            Input(args.sequence, "the output sequence", rendered),
            Input(args.input, "the input sequence", rendered),
        ],
    )
    xs, out_e, in_e, compared = measure(args)
    title = f"{args.title} ({compared})" if args.title else compared
    path = plot_stability(xs, out_e, in_e, args.output, title=title[:MAX_TITLE])
    print("frame\toutput_error\tinput_error")
    for x, o, i in zip(xs, out_e, in_e, strict=True):
        if x == int(x):  # not the gap between two windows
            print(f"{int(x)}\t{o:.6g}\t{i:.6g}")
    o, i = np.asarray(out_e), np.asarray(in_e)
    ok = np.isfinite(o) & np.isfinite(i)
    if ok.any() and i[ok].mean() > 0:
        print(f"ratio output / input: {o[ok].mean() / i[ok].mean():.3f} ({compared})")
    print(f"wrote {path}", file=sys.stderr)
    return 0
