"""``ccat-tf train``: CopyCat's Start Training / Resume Training."""

from __future__ import annotations

from ccat_tf.commands._settings_args import add_settings_arguments, settings_from_args
from ccat_tf.settings import TrainSettings

HELP = "train a network on (input, ground truth) pairs, as CopyCat does"


def add_arguments(parser) -> None:
    parser.add_argument("--output", metavar="MODEL.cat", help="also write the final model here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_settings_arguments(parser, TrainSettings)


def run(args) -> int:
    from ccat_tf.training import train

    settings = settings_from_args(args, TrainSettings)
    path = train(settings, output=args.output, progress_bar=not args.no_progress)
    print(path)
    return 0
