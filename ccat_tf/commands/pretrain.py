"""``ccat-tf pretrain``: build one initial-weights file (what `snakemake pretrained` runs)."""

from __future__ import annotations

from ccat_tf.commands._settings_args import add_settings_arguments, settings_from_args
from ccat_tf.settings import PRETRAIN_TASKS, PretrainSettings

HELP = "make a pretrained initial-weights .cat (deblur, upscale, human_matting)"


def add_arguments(parser) -> None:
    parser.add_argument(
        "task_word",
        nargs="?",
        choices=PRETRAIN_TASKS,
        metavar="TASK",
        help=f"{', '.join(PRETRAIN_TASKS)} (the same as --task)",
    )
    parser.add_argument(
        "--gather",
        action="store_true",
        help="first copy the packaged corpus (scikit-image, matplotlib) into --corpus",
    )
    add_settings_arguments(parser, PretrainSettings)


def run(args) -> int:
    from ccat_tf.errors import SettingsError
    from ccat_tf.outputs import Input, check_output

    if args.task_word and args.task and args.task_word != args.task:
        raise SettingsError(f"task given twice ({args.task_word} and --task {args.task}); give one")
    settings = settings_from_args(args, PretrainSettings, extra={"task": args.task_word})
    folders = [(settings.corpus, "the corpus"), (settings.pairs, "the pairs")]
    folders.append((settings.data_dir, "data_dir"))
    inputs = [Input(p, f"a file of {what}", folder=True) for p, what in folders]
    check_output(settings.output, "cat", inputs)
    if args.gather:
        from ccat_tf.pretrain.sources import gather

        gather(settings.corpus)
    from ccat_tf.pretrain.train import pretrain

    print(pretrain(settings))
    return 0
