"""Start one distributed training as N processes (ranks), as CopyCat's distributed training does.

Every rank runs the same ``ccat-tf train`` command; rank 0 alone writes the Data Directory. Two
ways to start them (:func:`launch` picks one):

* ``local``: N processes on this machine, talking over loopback. Each gets the variables a hand
  launch would set (``COPYCAT_MAIN_ADDR=127.0.0.1``, a free ``COPYCAT_MAIN_PORT``,
  ``COPYCAT_RANK`` 0..N-1, ``COPYCAT_WORLD_SIZE=N``), its share of the CPU threads, and with
  GPUs asked for, its own of them (``CUDA_VISIBLE_DEVICES``). A rank that fails stops the others
  (SIGTERM, then SIGKILL after a grace period) and its exit status is the launch's.
* ``srun``: inside a SLURM job, one job step of N tasks (``srun --ntasks N``);
  ``ccat-tf train`` takes its rank, the world size and the main node from SLURM's variables.
  ``--kill-on-bad-exit`` makes a failing task end the step; ``--gpus-per-task`` gives each task
  its own GPUs.

One process (``tasks == 1``) is simply ``ccat-tf train`` with the thread settings, on the GPUs
it sees (its SLURM job's, or ``CUDA_VISIBLE_DEVICES`` set by hand).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

from ccat_tf.errors import SettingsError

#: The variables that make a process one rank of a distributed training (ccat_tf.settings).
RANK_VARIABLES = ("COPYCAT_MAIN_ADDR", "COPYCAT_MAIN_PORT", "COPYCAT_RANK", "COPYCAT_WORLD_SIZE")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")
VIAS = ("auto", "local", "srun")
#: Seconds the other ranks get to save and exit after one failed, before SIGKILL.
DEFAULT_GRACE = 30.0
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def ccat_command(args: Sequence[str], python: str = sys.executable) -> list[str]:
    """``python -m ccat_tf ARGS``: the command every rank runs."""
    return [python, "-m", "ccat_tf", *args]


def choose_via(via: str, tasks: int, env: Mapping[str, str]) -> str:
    """``local`` or ``srun``: ``auto`` is srun inside a SLURM job (``SLURM_JOB_ID`` set) when
    there is more than one task, local otherwise."""
    if via not in VIAS:
        raise SettingsError(f"launch --via {via!r} is not one of {', '.join(VIAS)}")
    if via == "auto":
        return "srun" if tasks > 1 and env.get("SLURM_JOB_ID") else "local"
    return via


def check_counts(tasks: int, nodes: int, threads: int, gpus: int, via: str) -> None:
    """One-line errors for counts no launch can honour."""
    if tasks < 1:
        raise SettingsError(f"train_tasks (--tasks) is {tasks}; give 1 or more processes")
    if nodes < 1:
        raise SettingsError(f"train_nodes (--nodes) is {nodes}; give 1 or more machines")
    if nodes > tasks:
        raise SettingsError(
            f"train_nodes {nodes} is more than train_tasks {tasks}; every machine needs at least "
            "one process: raise train_tasks or lower train_nodes"
        )
    if via == "local" and nodes > 1:
        raise SettingsError(
            f"train_nodes {nodes} needs SLURM (srun starts the processes on the other machines); "
            "a local launch runs every rank on this machine: set train_nodes to 1, or run the "
            "workflow with a SLURM profile"
        )
    if threads < 1:
        raise SettingsError(f"launch --threads is {threads}; give 1 or more")
    if gpus < 0 or gpus % tasks:
        raise SettingsError(
            f"launch --gpus is {gpus}; give 0, or a multiple of the {tasks} processes (each "
            "gets the same number of GPUs)"
        )


def thread_env(threads: int) -> dict[str, str]:
    return {name: str(threads) for name in THREAD_VARIABLES}


def rank_devices(visible: str | None, rank: int, tasks: int, gpus_per_task: int) -> str:
    """The ``CUDA_VISIBLE_DEVICES`` of ``rank`` when each rank gets ``gpus_per_task`` GPUs of
    those ``visible`` (this machine's ``CUDA_VISIBLE_DEVICES``; unset: GPUs 0, 1, ...)."""
    need = tasks * gpus_per_task
    if visible is None:
        devices = [str(i) for i in range(need)]
    else:
        devices = [d.strip() for d in visible.split(",") if d.strip()]
        if len(devices) < need:
            raise SettingsError(
                f"CUDA_VISIBLE_DEVICES={visible!r} lists {len(devices)} GPU(s) but {tasks} "
                f"processes x {gpus_per_task} GPU(s) need {need}; list more GPUs or lower "
                "--gpus-per-task"
            )
    return ",".join(devices[rank * gpus_per_task : (rank + 1) * gpus_per_task])


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (rank 0 binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def local_env(
    base: Mapping[str, str], rank: int, tasks: int, port: int, threads: int, gpus_per_task: int
) -> dict[str, str]:
    """The environment of local rank ``rank``: the rank variables on loopback, its share of the
    ``threads`` CPU threads, and its GPUs when ``gpus_per_task`` is set."""
    env = dict(base)
    env.update(
        COPYCAT_MAIN_ADDR="127.0.0.1",
        COPYCAT_MAIN_PORT=str(port),
        COPYCAT_RANK=str(rank),
        COPYCAT_WORLD_SIZE=str(tasks),
    )
    env.update(thread_env(max(1, threads // tasks)))
    if gpus_per_task:
        env["CUDA_VISIBLE_DEVICES"] = rank_devices(
            base.get("CUDA_VISIBLE_DEVICES"), rank, tasks, gpus_per_task
        )
    return env


def srun_command(
    command: Sequence[str], tasks: int, nodes: int, threads: int, gpus_per_task: int
) -> list[str]:
    """The ``srun`` job step that runs ``command`` once per task, one rank per task."""
    call = ["srun", f"--ntasks={tasks}", f"--cpus-per-task={threads}", "--kill-on-bad-exit=1"]
    if nodes > 1:
        call.append(f"--nodes={nodes}")
    if gpus_per_task:
        call.append(f"--gpus-per-task={gpus_per_task}")
    return [*call, *command]


def srun_env(base: Mapping[str, str], threads: int) -> dict[str, str]:
    """srun's environment: SLURM gives each task its rank, so rank variables a user left set in
    the shell (which would give every task the same rank) are dropped."""
    env = {k: v for k, v in base.items() if k not in RANK_VARIABLES}
    env.update(thread_env(threads))
    return env


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: SIGTERM this rank if the launcher dies (even by SIGKILL), so no rank is orphaned."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def run_local(
    command: Sequence[str],
    tasks: int,
    threads: int,
    gpus_per_task: int = 0,
    grace: float = DEFAULT_GRACE,
    base_env: Mapping[str, str] | None = None,
    say=print,
) -> int:
    """Run ``command`` as ``tasks`` local ranks and wait for all; return the launch's status:
    0 when every rank succeeded, else the status of the first rank that failed."""
    base = dict(os.environ if base_env is None else base_env)
    port = free_port()
    envs = [local_env(base, r, tasks, port, threads, gpus_per_task) for r in range(tasks)]
    procs = [
        subprocess.Popen(
            list(command), env=env, start_new_session=True, preexec_fn=_die_with_parent
        )
        for env in envs
    ]
    with _forward_signals(procs) as signalled:
        return _wait_all(procs, grace, say, signalled)


@contextlib.contextmanager
def _forward_signals(procs):
    """SIGTERM/SIGINT/SIGHUP to the launcher go to every rank (they run in their own sessions,
    so a terminal's Ctrl-C reaches them once, through here). Yields the set of the ranks'
    pids a signal was forwarded to."""
    signalled: set[int] = set()

    def forward(signum, _frame):
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signum)
                    signalled.add(p.pid)

    previous = {s: signal.signal(s, forward) for s in _FORWARDED}
    try:
        yield signalled
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _wait_all(procs, grace: float, say, signalled: set[int] = frozenset()) -> int:
    """Wait for every rank; when one fails, SIGTERM the others (not those in ``signalled``:
    they got the launcher's signal and are stopping; once training's handler is gone a second
    SIGTERM would kill one mid-save), SIGKILL them all after ``grace``."""
    status, deadline = 0, None
    while None in [p.poll() for p in procs]:  # a list: poll() every rank, every time
        failed = [(r, p.returncode) for r, p in enumerate(procs) if p.returncode not in (None, 0)]
        if failed and deadline is None:
            rank, status = failed[0]
            say(
                f"ccat-tf launch: rank {rank} of {len(procs)} exited with status {status}; "
                "stopping the other ranks"
            )
            _signal_all([p for p in procs if p.pid not in signalled], signal.SIGTERM)
            deadline = time.monotonic() + grace
        if deadline is not None and time.monotonic() > deadline:
            say(f"ccat-tf launch: ranks still running {grace:g} s later; killing them")
            _signal_all(procs, signal.SIGKILL)
            deadline = float("inf")
        time.sleep(0.1)
    if status == 0:
        status = next((p.returncode for p in procs if p.returncode != 0), 0)
    return _exit_status(status)


def _signal_all(procs, signum) -> None:
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signum)


def _exit_status(returncode: int) -> int:
    """A child killed by signal N (returncode -N) -> the shell's 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def launch(
    args: Sequence[str],
    tasks: int = 1,
    nodes: int = 1,
    threads: int | None = None,
    gpus: int = 0,
    via: str = "auto",
    grace: float = DEFAULT_GRACE,
) -> int:
    """Run ``ccat-tf ARGS`` (e.g. ``["train", "--settings-json", ...]``) as ``tasks`` ranks on
    ``nodes`` machines; return the exit status. ``threads``: CPU threads per SLURM task, or of
    the whole local launch (shared by its ranks); default: every CPU of this machine.
    ``gpus``: GPUs of the whole launch, the same number for each of several ranks (one process
    uses the GPUs it sees)."""
    threads = threads or os.cpu_count() or 1
    via = choose_via(via, tasks, os.environ)
    check_counts(tasks, nodes, threads, gpus, via)
    command = ccat_command(args)
    gpus_per_task = gpus // tasks
    if via == "srun":
        call = srun_command(command, tasks, nodes, threads, gpus_per_task)
        _exec(call, srun_env(os.environ, threads))
    if tasks == 1:
        _exec(command, dict(os.environ) | thread_env(threads))
    say = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    return run_local(command, tasks, threads, gpus_per_task, grace, say=say)


def _exec(command: list[str], env: dict[str, str]) -> None:
    """Become ``command`` (signals and the exit status are then its own)."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(command[0], command, env)
    except OSError as err:
        fix = (
            "run it inside a SLURM job, or use --via local"
            if command[0] == "srun"
            else "check that this Python still exists"
        )
        raise SettingsError(f"cannot start {command[0]}: {err.strerror or err}; {fix}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ccat_tf.launch ...``: the ``launch`` command without going through ``ccat-tf``
    (whose command list lives in ccat_tf.cli)."""
    from ccat_tf import cli
    from ccat_tf.commands import launch as command

    parser = cli._Parser(prog="python -m ccat_tf.launch", description=command.HELP)
    command.add_arguments(parser)
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    args._module, args.debug, args.command = command, False, "launch"
    return cli._run(args)


if __name__ == "__main__":
    raise SystemExit(main())
