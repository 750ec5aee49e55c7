"""``ccat-tf export``: a .cat as a TensorFlow SavedModel or ONNX model for other tools."""

from __future__ import annotations

HELP = "export a .cat as a TensorFlow SavedModel or ONNX model"


def add_arguments(parser) -> None:
    parser.add_argument("model", metavar="MODEL.cat", help="the trained model")
    parser.add_argument(
        "--format", required=True, choices=("savedmodel", "onnx"), help="what to write"
    )
    parser.add_argument(
        "--output",
        metavar="PATH",
        help="folder (savedmodel) or .onnx file; default: beside the model "
        "(<model>_savedmodel, <model>.onnx)",
    )
    parser.add_argument(
        "--pixels",
        action="store_true",
        help="ONNX: include the input/output transforms and divisor padding, so pixels go in "
        "and come out (the SavedModel always has both: endpoints serve and serve_pixels)",
    )


def run(args) -> int:
    from ccat_tf.exporting import export

    path = export(args.model, args.format, args.output, pixels=args.pixels)
    print(path)
    return 0
