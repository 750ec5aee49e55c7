"""``ccat-tf launch``: one training as N processes (ranks), locally or as a SLURM job step."""

from __future__ import annotations

import argparse

HELP = "run a ccat-tf command (train) as N processes of one distributed training"


def add_arguments(parser) -> None:
    from ccat_tf.launch import DEFAULT_GRACE, VIAS

    parser.add_argument(
        "--tasks", type=int, default=1, metavar="N", help="processes (ranks), default 1"
    )
    parser.add_argument(
        "--nodes", type=int, default=1, metavar="M", help="machines (SLURM only), default 1"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="T",
        help="CPU threads per task under srun; shared by the ranks of a local launch "
        "(default: this machine's CPU count)",
    )
    parser.add_argument(
        "--gpus",
        type=int,
        default=0,
        metavar="G",
        help="GPUs of the whole launch, split evenly: each of several ranks gets its own "
        "(local: CUDA_VISIBLE_DEVICES per rank, in order from this machine's list; srun: "
        "--gpus-per-task); 0 (default), or one process: the GPUs it sees",
    )
    parser.add_argument(
        "--via",
        choices=VIAS,
        default="auto",
        help="srun (a job step inside a SLURM job) or local processes on loopback; auto "
        "(default): srun when SLURM_JOB_ID is set and N > 1, else local",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=DEFAULT_GRACE,
        metavar="S",
        help=f"local: seconds the other ranks get to stop after one fails, then SIGKILL "
        f"(default {DEFAULT_GRACE:g})",
    )
    parser.add_argument(
        "rank_command",
        nargs=argparse.REMAINDER,
        metavar="-- COMMAND ...",
        help="the ccat-tf command every rank runs, e.g. -- train --settings-json ...",
    )


def run(args) -> int:
    from ccat_tf.errors import SettingsError
    from ccat_tf.launch import launch

    command = list(args.rank_command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise SettingsError(
            "launch needs the command the ranks run, e.g. launch --tasks 2 -- train ..."
        )
    return launch(
        command,
        tasks=args.tasks,
        nodes=args.nodes,
        threads=args.threads,
        gpus=args.gpus,
        via=args.via,
        grace=args.grace,
    )
