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
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--crop-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights-dtype", default="float16", choices=["float16", "float32"])
    parser.add_argument("--threads", type=int, default=0, help="TensorFlow threads (0: all)")


def run(args) -> int:
    from ccat_tf.errors import SettingsError

    if not args.corpus and not args.pairs:
        raise SettingsError("give --corpus DIR (clean images) or --pairs DIR (input/ground_truth)")
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
