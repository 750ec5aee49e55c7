"""``ccat-tf summary-csv``: a Data Directory's .summary files -> one loss.csv for all runs."""

from __future__ import annotations

import sys

HELP = "convert a Data Directory's .summary files to loss.csv"


def add_arguments(parser) -> None:
    parser.add_argument(
        "data_directory", metavar="DIR", help="the Data Directory a training wrote to"
    )
    parser.add_argument(
        "--output",
        metavar="loss.csv",
        required=True,
        help="CSV to write (required): one row per run and step with the columns run, step, "
        "wall_time, loss, val_psnr, stage_scale, steps_per_second, rollback, lr_scale (empty "
        "where not logged)",
    )


def run(args) -> int:
    from ccat_tf.outputs import check_output
    from ccat_tf.safe_text import visible
    from ccat_tf.summary import summary_to_csv

    check_output(args.output, "csv")
    notices: list[str] = []
    path = summary_to_csv(args.data_directory, args.output, notices=notices)
    for notice in notices:
        print(f"ccat-tf: {visible(notice)}", file=sys.stderr)
    print(f"wrote {path}", file=sys.stderr)
    return 0
