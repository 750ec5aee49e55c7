"""``ccat-tf runs``: CopyCat's run table: list the runs of a Data Directory, rename one, or follow
the running one live."""

from __future__ import annotations

import json

HELP = "list, rename or follow (live) the training runs in a Data Directory"


def add_arguments(parser) -> None:
    from ccat_tf.live import INTERVAL

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
    parser.add_argument(
        "--follow",
        action="store_true",
        help="show the running run's progress (step/total, loss, steps/s, time left, "
        f"resolution) as one live line until it ends (its writer updates it every {INTERVAL:g} s)",
    )


def run(args) -> int:
    from ccat_tf.errors import SettingsError
    from ccat_tf.runs import format_run_table, list_runs, rename_run
    from ccat_tf.safe_text import visible

    if args.follow:
        if args.rename or args.json:
            raise SettingsError("runs --follow shows one live line: leave out --rename and --json")
        from ccat_tf.live import follow

        return follow(args.data_directory)
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
