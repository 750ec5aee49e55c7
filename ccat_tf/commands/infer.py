"""``ccat-tf infer``: the Inference node: apply a trained .cat to a sequence."""

from __future__ import annotations

from ccat_tf.commands._settings_args import add_settings_arguments, settings_from_args
from ccat_tf.settings import InferSettings

HELP = "apply a trained .cat to a sequence, as the Inference node does"


def add_arguments(parser) -> None:
    parser.add_argument("model", nargs="?", metavar="MODEL.cat", help="the trained model")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or notices")
    parser.add_argument("--summary", metavar="FILE.json", help="also write the run summary here")
    add_settings_arguments(parser, InferSettings)


def run(args) -> int:
    from ccat_tf.atomic import atomic_write_json
    from ccat_tf.inference import infer

    settings = settings_from_args(args, InferSettings, extra={"model_file": args.model})
    if args.summary:
        from ccat_tf.outputs import Input, check_output

        inputs = [
            Input(settings.input, "the input sequence"),
            Input(settings.model_file, "the model file"),
            Input(settings.output, "the output sequence"),
        ]
        check_output(args.summary, "json", inputs, setting="summary")
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
