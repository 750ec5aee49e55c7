"""``ccat-tf``: a thin command line over the ``ccat_tf`` API.

Each subcommand lives in ``ccat_tf/commands/<name>.py`` with ``HELP``, ``add_arguments(parser)``
and ``run(args) -> int``. Only the chosen subcommand's module is imported, and TensorFlow only when
that subcommand needs it, so ``ccat-tf --help`` is instant.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import re
import sys

# name -> (module, one-line help). Kept here, not discovered, so --help needs no imports.
COMMANDS = {
    "validate": ("validate", "check a data set and write a JSON report (nothing else is written)"),
    "cache": ("cache", "decode a data set once into an HDF5 frame cache for training"),
    "train": ("train", "train a network on (input, ground truth) pairs, as CopyCat does"),
    "launch": (
        "launch",
        "run a ccat-tf command (train) as N processes of one distributed training",
    ),
    "runs": ("runs", "list, rename or follow (live) the training runs in a Data Directory"),
    "infer": ("infer", "apply a trained .cat to a sequence, as the Inference node does"),
    "info": ("info", "show what a .cat expects and how it was trained"),
    "export": ("export", "export a .cat as a TensorFlow SavedModel or ONNX model"),
    "summary-csv": ("summary_csv", "convert a Data Directory's .summary files to loss.csv"),
    "graph": ("graph", "plot loss.csv as CopyCat's Graph (linear and log scale)"),
    "overview": ("overview", "one PNG with the latest contact sheet and preview of each shot"),
    "stability": ("stability", "plot an output's frame-to-frame flicker against its input's"),
    "pretrain": (
        "pretrain",
        "make a pretrained initial-weights .cat (deblur, upscale, human_matting)",
    ),
}


#: Optional parts and the pip extra (pyproject.toml) that installs each.
OPTIONAL_EXTRAS = {
    "onnx": "export",
    "tf2onnx": "export",
    "onnxruntime": "export",
    "skimage": "pretrain",
    "snakemake": "workflow",
}


class _Parser(argparse.ArgumentParser):
    """argparse, keeping the CLI's promise: a mistake is one line with the fix, not a usage dump."""

    def error(self, message):
        from ccat_tf.safe_text import visible

        print(f"ccat-tf: error: {visible(message)}; see {self.prog} --help", file=sys.stderr)
        raise SystemExit(2)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ccat-tf",
        description="CopyCat-style training and inference on TensorFlow/Keras.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or only == name:
            mod = importlib.import_module(f"ccat_tf.commands.{module}")
            mod.add_arguments(p)
            p.set_defaults(_module=mod)
    return parser


# A value that starts with a minus: a negative frame spec or number ("-2--1", "-5,-3", "-1e3").
_NEGATIVE_VALUE = re.compile(r"^-\d[\d.eE+,xX-]*$")


def _join_negative_values(argv: list[str]) -> list[str]:
    """``--frames -2--1`` -> ``--frames=-2--1``: argparse takes ``-2--1`` for an option and
    says only "expected one argument", so a flag's negative value is attached to it here."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and _NEGATIVE_VALUE.match(arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def _version() -> str:
    from ccat_tf import __version__

    return f"ccat-tf {__version__}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug is accepted anywhere on the line, not only before the subcommand.
    debug = "--debug" in argv
    argv = _join_negative_values([a for a in argv if a != "--debug"])
    chosen = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(only=chosen)
    if chosen:
        # Unknown options are reported by the top-level parser; point at the command's help.
        parser.prog = f"ccat-tf {chosen}"
    args = parser.parse_args(argv)
    parser.prog = "ccat-tf"
    args.debug = debug
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    restore_warnings = _one_line_warnings()
    from ccat_tf.native_stderr import without_library_logs

    quiet = contextlib.nullcontext() if args.debug else without_library_logs()
    try:
        with quiet:
            code = _run(args)
    finally:
        restore_warnings()
    if getattr(args, "end_process", False):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _run(args) -> int:
    """The chosen command, its errors as one line each (see the module docs for statuses)."""
    from ccat_tf.errors import CcatError

    try:
        return int(args._module.run(args) or 0)
    except CcatError as err:
        if args.debug:
            raise
        print(f"ccat-tf: error: {err}", file=sys.stderr)
        if err.ends_process:
            # Until os._exit in main, finalisers that fail are not reported: a multiprocessing
            # pool left by TensorFlow's collectives ("Exception ignored in: Pool.__del__ ...
            # OSError: Bad file descriptor") prints its traceback when it is collected, which
            # may happen before main gets there.
            sys.unraisablehook = lambda _unraisable: None
            args.end_process = True
        return err.exit_code
    except KeyboardInterrupt:
        print("ccat-tf: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as err:
        extra = OPTIONAL_EXTRAS.get((err.name or "").split(".")[0])
        if extra is None or args.debug:
            raise
        print(
            f"ccat-tf: error: {args.command} needs the optional package {err.name}; install it "
            f"with pip install 'ccat_tf[{extra}]'",
            file=sys.stderr,
        )
        return 2
    except Exception as err:  # noqa: BLE001 - last line of defence: one line, not a traceback
        if args.debug:
            raise
        from ccat_tf.safe_text import visible

        first = visible(str(err).strip().splitlines()[0]) if str(err).strip() else ""
        print(
            f"ccat-tf: error: unexpected {type(err).__name__}: {first} "
            "(run again with --debug for the traceback, and please report it)",
            file=sys.stderr,
        )
        return 1


def _one_line_warnings():
    """Show ccat_tf's own warnings (e.g. a damaged progress file skipped) as one line each,
    ``ccat-tf: warning: ...``, like its errors; other libraries' warnings are left as they are.
    Returns a function that puts the previous warning display back."""
    import warnings

    from ccat_tf.safe_text import visible

    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if os.path.abspath(filename).startswith(package):
            text = visible(message)
            print(f"ccat-tf: warning: {text}", file=file or sys.stderr, flush=True)
        else:
            previous(message, category, filename, lineno, file, line)

    warnings.showwarning = show

    def restore():
        warnings.showwarning = previous

    return restore
