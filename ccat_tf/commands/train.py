"""``ccat-tf train``: CopyCat's Start Training / Resume Training."""

from __future__ import annotations

from ccat_tf.commands._settings_args import add_settings_arguments, settings_from_args
from ccat_tf.settings import TrainSettings

HELP = "train a network on (input, ground truth) pairs, as CopyCat does"

HELPS = {
    "input": "input sequence, e.g. plate.####.exr",
    "ground_truth": "ground-truth sequence (the painted fix)",
    "frames": "data set frames: 1001-1100, 1001,1010 or 1001-1100x10",
    "input_channels": "rgb, rgba, alpha or comma-separated channel names",
    "output_channels": "channels to learn from the ground truth: rgb, rgba, alpha or names",
    "preview": "optional preview sequence (frames outside the data set)",
    "preview_frames": "preview frames rendered at each checkpoint",
    "validation_frames": "held-out pairs whose PSNR is recorded at each checkpoint",
    "data_directory": "folder for .cat, .ost, .summary and .png files (required)",
    "epochs": "passes over the data set; Total Steps = ceil(epochs x pairs / batch_size)",
    "use_gpu_if_available": "train on GPUs when present",
    "initial_weights": "none, checkpoint, deblur, upscale or human_matting",
    "checkpoint_file": ".cat whose weights start training when initial_weights is checkpoint",
    "model_size": "small, medium or large",
    "batch_size": "auto (from free GPU memory or RAM) or a number <= pairs",
    "crop_size": "size of the random square crops",
    "checkpoint_interval": "steps between .cat checkpoints (and previews)",
    "contact_sheet_interval": "steps between contact sheet .png files",
    "use_multi_resolution_training": "train at 1/4, then 1/2, then full resolution",
    "learning_rate": "Adam learning rate",
    "augment": "random flips and 90-degree rotations of the crops",
    "seed": "seed of the crop and weight-initialisation random numbers",
    "deterministic": "TensorFlow op determinism: bit-exact resume on CPU (slower on GPU)",
    "cache": "frame cache: auto, memory or hdf5",
    "cache_file": "prebuilt HDF5 frame cache from ccat-tf cache",
    "run_name": "name of this run in the run table (default run1, run2, ...)",
    "on_training_start": "hook called when training starts",
    "on_checkpoint": "hook called after each checkpoint",
    "on_training_end": "hook called when training ends",
}


def add_arguments(parser) -> None:
    parser.add_argument("--output", metavar="MODEL.cat", help="also write the final model here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_settings_arguments(parser, TrainSettings, helps=HELPS)


def run(args) -> int:
    from ccat_tf.training import train

    settings = settings_from_args(args, TrainSettings)
    path = train(settings, output=args.output, progress_bar=not args.no_progress)
    print(path)
    return 0
