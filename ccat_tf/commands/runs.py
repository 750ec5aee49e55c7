"""``ccat-tf runs``: CopyCat's run table: list the runs of a Data Directory, or rename one."""

from __future__ import annotations

import json

HELP = "list or rename the training runs in a Data Directory"


def add_arguments(parser) -> None:
    parser.add_argument(
        "data_directory", metavar="DIR", help="the Data Directory a training wrote to"
    )
    parser.add_argument(
        "--rename",
        nargs=2,
        metavar=("OLD", "NEW"),
        help="rename run OLD (a name or id) to NEW, with its checkpoints, contact sheets, "
        "previews and summaries; refused while a training uses DIR",
    )
    parser.add_argument(
        "--json", action="store_true", help='print {"runs": [...]} as JSON instead of a table'
    )


def run(args) -> int:
    from ccat_tf.runs import format_run_table, list_runs, rename_run
    from ccat_tf.safe_text import visible

    if args.rename:
        rename_run(args.data_directory, *args.rename)
    runs = list_runs(args.data_directory)
    if args.json:
        # ensure_ascii escapes every control and non-ASCII character (\u001b for ESC).
        print(json.dumps({"runs": runs}, indent=2, default=str, ensure_ascii=True))
    elif runs:
        print(format_run_table(runs))
    else:
        print(f"no runs in {visible(args.data_directory)} yet")
    return 0
