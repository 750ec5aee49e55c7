"""``ccat-tf graph``: loss.csv -> graph.png, as CopyCat's Graph tab draws it."""

from __future__ import annotations

import sys

HELP = "plot loss.csv as CopyCat's Graph (linear and log scale)"


def add_arguments(parser) -> None:
    parser.add_argument("csv", metavar="loss.csv", help="a table written by ccat-tf summary-csv")
    parser.add_argument("--output", metavar="graph.png", required=True, help="PNG to write")
    parser.add_argument(
        "--smoothness",
        type=float,
        default=0.6,
        help="weight of the exponential moving average drawn solid, 0 (none) to 0.99 "
        "(default: 0.6, as CopyCat)",
    )
    parser.add_argument(
        "--no-show-original",
        dest="show_original",
        action="store_false",
        help="do not draw the unsmoothed curve faintly behind the smoothed one (default: draw it)",
    )
    parser.add_argument(
        "--log-scale",
        choices=("both", "linear", "log"),
        default="both",
        help="y axis panels: a linear and a log one, or only one of them (default: both)",
    )
    parser.add_argument(
        "--title",
        help="graph title (default: the name of the folder holding the CSV, i.e. the shot)",
    )


def run(args) -> int:
    from ccat_tf.graph import plot_graph
    from ccat_tf.outputs import Input, check_output

    check_output(args.output, "png", [Input(args.csv, "the loss table")])
    path = plot_graph(
        args.csv,
        args.output,
        smoothness=args.smoothness,
        show_original=args.show_original,
        log_scale=args.log_scale,
        title=args.title,
    )
    print(f"wrote {path}", file=sys.stderr)
    return 0
