"""``ccat-tf cache``: decode a data set once into an HDF5 frame cache."""

from __future__ import annotations

from ccat_tf.commands._settings_args import add_settings_arguments, settings_from_args
from ccat_tf.settings import TrainSettings

HELP = "decode a data set once into an HDF5 frame cache for training"


def add_arguments(parser) -> None:
    parser.add_argument(
        "--output", required=True, metavar="CACHE.h5", help="the HDF5 file to write"
    )
    add_settings_arguments(parser, TrainSettings)


def run(args) -> int:
    from ccat_tf.dataset import STAGE_SCALES, FrameCache, validate_dataset
    from ccat_tf.outputs import check_output, dataset_inputs

    settings = settings_from_args(args, TrainSettings)
    check_output(args.output, "h5", dataset_inputs(settings))
    info = validate_dataset(settings)
    scales = STAGE_SCALES if settings.use_multi_resolution_training else (1.0,)
    path = FrameCache.write_hdf5(info, args.output, scales)
    print(path)
    return 0
