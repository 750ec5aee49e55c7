"""``ccat-tf validate``: check a data set before training; write a JSON report."""

from __future__ import annotations

import json
import sys

from ccat_tf.commands._settings_args import add_settings_arguments, settings_from_args
from ccat_tf.settings import TrainSettings

HELP = "check a data set and write a JSON report (nothing else is written)"


def add_arguments(parser) -> None:
    parser.add_argument(
        "--report", metavar="FILE.json", help="write the report here (default: print it)"
    )
    add_settings_arguments(parser, TrainSettings)


def run(args) -> int:
    from ccat_tf.dataset import DataSetProblems, validate_dataset
    from ccat_tf.safe_text import visible

    settings = settings_from_args(args, TrainSettings)
    if args.report:
        from ccat_tf.outputs import check_output, dataset_inputs

        check_output(args.report, "json", dataset_inputs(settings), setting="report")
    try:
        info = validate_dataset(settings, report=args.report)
    except DataSetProblems as err:
        for problem in err.problems:
            print(f"ccat-tf: error: {visible(problem)}", file=sys.stderr)
        return 2
    for notice in info.notices:
        print(f"ccat-tf: {visible(notice)}", file=sys.stderr)
    print(visible(info.channels_line()), file=sys.stderr)
    if not args.report:
        print(json.dumps({"ok": True, **info.to_dict()}, indent=2))
    return 0
