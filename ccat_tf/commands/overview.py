"""``ccat-tf overview``: the newest contact sheet and preview of every shot in one PNG."""

from __future__ import annotations

import sys

HELP = "one PNG with the latest contact sheet and preview of each shot"


def add_arguments(parser) -> None:
    parser.add_argument(
        "data_directories", metavar="DIR", nargs="+", help="Data Directories, one per shot"
    )
    parser.add_argument("--output", metavar="overview.png", required=True, help="PNG to write")
    parser.add_argument(
        "--labels",
        metavar="NAME",
        nargs="+",
        help="one label per DIR (default: the last two parts of each DIR's path, more where "
        "two would be equal)",
    )


def run(args) -> int:
    from ccat_tf.contact_sheet import overview
    from ccat_tf.outputs import Input, check_output

    dirs = [
        Input(d, f"a file of the Data Directory {d}", folder=True) for d in args.data_directories
    ]
    check_output(args.output, "png", dirs)
    path = overview(args.data_directories, args.output, labels=args.labels)
    print(f"wrote {path}", file=sys.stderr)
    return 0
