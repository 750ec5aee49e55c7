"""``ccat-tf pretrain``: build one initial-weights file (what `snakemake pretrained` runs)."""

from __future__ import annotations

HELP = "make a pretrained initial-weights .cat (deblur, upscale, human_matting)"


def add_arguments(parser) -> None:
    parser.add_argument("task", choices=["deblur", "upscale", "human_matting"])
    parser.add_argument("--model-size", default="small", choices=["small", "medium", "large"])
    parser.add_argument("--output", required=True, metavar="WEIGHTS.cat")
    src = parser.add_mutually_exclusive_group()
    src.add_argument(
        "--corpus", metavar="DIR", help="folder of clean images (pairs are generated on the fly)"
    )
    src.add_argument(
        "--pairs",
        metavar="DIR",
        help="a studio corpus: DIR/input/<name> and DIR/ground_truth/<name>",
    )
    parser.add_argument(
        "--gather",
        action="store_true",
        help="first copy the packaged corpus (scikit-image, matplotlib) into --corpus",
    )
    parser.add_argument("--data-dir", required=True, help="tensorflow-datasets cache folder")
    for name, kind, default, text in NUMBERS:
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,
            default=default,
            help=f"{text} (default: {default}; range {_range(name).short()})",
        )
    parser.add_argument("--weights-dtype", default="float16", choices=["float16", "float32"])


#: Pretraining's numeric flags: name, type, default, help. Ranges: ccat_tf.settings.
NUMBERS = (
    ("steps", int, 2000, "training steps"),
    ("crop_size", int, 96, "size of the square training crops"),
    ("batch_size", int, 8, "crops per step"),
    ("learning_rate", float, 2e-3, "Adam learning rate"),
    ("seed", int, 0, "seed of the crops, degradations and weights"),
    ("threads", int, 0, "TensorFlow threads (0: all)"),
)


def _range(name: str):
    from ccat_tf.settings import PRETRAIN_RANGES, RANGES

    return RANGES.get(name) or PRETRAIN_RANGES[name]


def run(args) -> int:
    from ccat_tf.errors import SettingsError
    from ccat_tf.outputs import Input, check_output
    from ccat_tf.settings import check_range

    if not args.corpus and not args.pairs:
        raise SettingsError("give --corpus DIR (clean images) or --pairs DIR (input/ground_truth)")
    for name, *_ in NUMBERS:
        check_range(name, getattr(args, name))
    folders = [(args.corpus, "the corpus"), (args.pairs, "the pairs"), (args.data_dir, "data_dir")]
    check_output(args.output, "cat", [Input(p, f"a file of {w}", folder=True) for p, w in folders])
    if args.gather:
        from ccat_tf.pretrain.sources import gather

        gather(args.corpus)
    from ccat_tf.pretrain.train import pretrain

    path = pretrain(
        args.task,
        args.model_size,
        output=args.output,
        data_dir=args.data_dir,
        corpus=args.corpus,
        pairs=args.pairs,
        steps=args.steps,
        crop_size=args.crop_size,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        weights_dtype=args.weights_dtype,
        threads=args.threads,
    )
    print(path)
    return 0
