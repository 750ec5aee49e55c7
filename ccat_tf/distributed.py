"""Distributed training's launch: who this process is, where the ranks meet, their TF cluster.

One network is trained data-parallel by ``world`` processes (ranks). A process learns its place
from, in this order:

1. the launch settings ``main_addr``, ``main_port``, ``rank``, ``world_size`` (CLI flags, settings
   files), each left unset filled from CopyCat's variables ``COPYCAT_MAIN_ADDR``,
   ``COPYCAT_MAIN_PORT``, ``COPYCAT_RANK``, ``COPYCAT_WORLD_SIZE`` (and ``COPYCAT_SYNC_INTERVAL``
   for ``sync_interval``). All four are needed; with some missing the training runs on its own
   machine, as CopyCat's does (with a notice naming what is missing);
2. an existing ``TF_CONFIG`` (TensorFlow's own cluster description), used as it is;
3. a SLURM step with several tasks (``srun`` inside a job, ``SLURM_NTASKS`` > 1): rank
   ``SLURM_PROCID``, world ``SLURM_NTASKS``, main address the first host of
   ``SLURM_STEP_NODELIST`` (or ``SLURM_JOB_NODELIST``), port ``main_port`` or
   ``20000 + SLURM_JOB_ID % 20000``.

TensorFlow's collectives need every worker's ``host:port``, CopyCat's variables give only rank
0's. So the ranks first meet at ``main_addr:main_port`` (:func:`meet`, a small TCP rendezvous run
by rank 0): each rank sends its rank, the world size, the digest of its settings and data set and
the address it will serve TensorFlow on (the local address of its connection to rank 0, so the
interface that reaches rank 0, and a free port); rank 0 checks them all and answers every rank
with the full worker list, which becomes ``TF_CONFIG``. This works across machines with only the
main address, and it is where a missing rank (never arriving within ``rank_timeout``), a rank
started with other settings or data, an unreachable main address and a busy port are found and
named, before TensorFlow starts. With ``TF_CONFIG`` given, there is no rendezvous: TensorFlow's
addresses are used as they are.

:func:`resolve` is a pure function of the settings and the environment (tested without
TensorFlow); :func:`meet` uses sockets only.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ccat_tf.errors import CcatError, SettingsError

#: (setting, CopyCat's environment variable) of the four required launch values.
REQUIRED = (
    ("main_addr", "COPYCAT_MAIN_ADDR"),
    ("main_port", "COPYCAT_MAIN_PORT"),
    ("rank", "COPYCAT_RANK"),
    ("world_size", "COPYCAT_WORLD_SIZE"),
)
#: What a setting holds when it was not given (the settings' defaults).
UNSET = {"main_addr": "", "main_port": 0, "rank": -1, "world_size": 0, "sync_interval": 1}
#: A SLURM job's default port: 20000 + job id % 20000 (two jobs on one node rarely collide).
SLURM_PORT_BASE = 20000


class RankError(CcatError):
    """The ranks of a distributed training could not meet or went missing."""


@dataclass(frozen=True)
class Cluster:
    """This process's place in a distributed training."""

    rank: int
    world: int
    main_addr: str  #: where rank 0 listens for the rendezvous ('' with TF_CONFIG)
    main_port: int
    source: str  #: how it was launched: 'COPYCAT', 'SLURM' or 'TF_CONFIG'
    workers: tuple[str, ...] = ()  #: every rank's TensorFlow host:port (TF_CONFIG: given)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        where = f"{self.main_addr}:{self.main_port}" if self.main_addr else ",".join(self.workers)
        return f"rank {self.rank} of {self.world} ({self.source}, {where})"


def resolve(settings, environ: Mapping[str, str], hostnames: Callable | None = None):
    """``(Cluster or None, notices)``: this process's place from the settings and ``environ``
    (None: a training on its own). ``hostnames`` expands a SLURM node list (default
    :func:`expand_nodelist`). Raises SettingsError for impossible values."""
    notices: list[str] = []
    values, given = {}, []
    for name, var in REQUIRED:
        value = getattr(settings, name)
        if value != UNSET[name]:
            given.append(name)
        elif environ.get(var, "").strip():  # a variable counts even at 0 (COPYCAT_WORLD_SIZE=0)
            value = _env_value(name, var, environ[var])
            given.append(name)
        values[name] = value
    if len(given) == len(REQUIRED):
        _check(values["rank"], values["world_size"], values["main_port"])
        cluster = Cluster(
            values["rank"],
            values["world_size"],
            values["main_addr"],
            values["main_port"],
            "COPYCAT",
        )
        return cluster, notices
    if given:
        missing = [f"{n} ({v})" for n, v in REQUIRED if n not in given]
        notices.append(
            f"distributed training needs main_addr, main_port, rank and world_size; "
            f"{', '.join(missing)} not set: training on this machine alone"
        )
    if environ.get("TF_CONFIG", "").strip():
        return _from_tf_config(environ["TF_CONFIG"]), notices
    if _int(environ.get("SLURM_NTASKS", "")) > 1 and "SLURM_PROCID" in environ:
        return _from_slurm(settings, environ, hostnames or expand_nodelist), notices
    return None, notices


def sync_interval(settings, environ: Mapping[str, str]) -> int:
    """The sync interval (setting, else COPYCAT_SYNC_INTERVAL); only 1 is supported."""
    value = settings.sync_interval
    if value == UNSET["sync_interval"] and environ.get("COPYCAT_SYNC_INTERVAL", "").strip():
        value = _env_value(
            "sync_interval", "COPYCAT_SYNC_INTERVAL", environ["COPYCAT_SYNC_INTERVAL"]
        )
    if value != 1:
        raise SettingsError(
            f"sync_interval {value} is not supported; use 1 (gradients are averaged over every "
            "rank at every step)"
        )
    return value


def _env_value(name: str, var: str, text: str):
    if name == "main_addr":
        return text.strip()
    try:
        return int(text.strip())
    except ValueError:
        raise SettingsError(f"{var} is {text!r}; use a whole number ({name})") from None


def _int(text: str) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        return 0


def _check(rank: int, world: int, port: int) -> None:
    if world < 1:
        raise SettingsError(f"world_size is {world}; use 1 or more (COPYCAT_WORLD_SIZE)")
    if not 0 <= rank < world:
        raise SettingsError(
            f"rank {rank} is not below world_size {world}; use a rank from 0 to {world - 1} "
            "(COPYCAT_RANK)"
        )
    if not 0 < port < 65536:
        raise SettingsError(f"main_port is {port}; use a port from 1 to 65535 (COPYCAT_MAIN_PORT)")


def _from_tf_config(text: str) -> Cluster:
    try:
        config = json.loads(text)
        workers = tuple(config["cluster"]["worker"])
        task = config["task"]
        rank = int(task["index"])
        if task.get("type", "worker") != "worker" or set(config["cluster"]) != {"worker"}:
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise SettingsError(
            "TF_CONFIG is not a worker cluster ({'cluster': {'worker': [host:port, ...]}, "
            "'task': {'type': 'worker', 'index': i}}); fix it or unset TF_CONFIG"
        ) from None
    _check(rank, len(workers), 1)
    return Cluster(rank, len(workers), "", 0, "TF_CONFIG", workers)


def _from_slurm(settings, environ: Mapping[str, str], hostnames: Callable) -> Cluster:
    world, rank = _int(environ["SLURM_NTASKS"]), _int(environ["SLURM_PROCID"])
    nodes = environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST") or ""
    hosts = hostnames(nodes) if nodes else []
    if not hosts:
        raise SettingsError(
            "SLURM_NTASKS > 1 but no SLURM_STEP_NODELIST or SLURM_JOB_NODELIST; launch with srun "
            "inside the job, or set main_addr"
        )
    port = settings.main_port or SLURM_PORT_BASE + _int(environ.get("SLURM_JOB_ID", "0")) % 20000
    main = settings.main_addr or hosts[0]
    _check(rank, world, port)
    return Cluster(rank, world, main, port, "SLURM")


def expand_nodelist(nodelist: str) -> list[str]:
    """SLURM's compact host list (``node[01-03,07],gpu5``) as host names, in order."""
    hosts: list[str] = []
    for part in re.findall(r"[^,\[]+(?:\[[^\]]*\])?[^,]*", nodelist):
        match = re.fullmatch(r"([^\[]*)\[([^\]]*)\](.*)", part)
        if not match:
            hosts.append(part)
            continue
        prefix, ranges, suffix = match.groups()
        for item in ranges.split(","):
            lo, _, hi = item.partition("-")
            for n in range(int(lo), int(hi or lo) + 1):
                hosts.append(f"{prefix}{str(n).zfill(len(lo))}{suffix}")
    return hosts


# ---- the rendezvous ----------------------------------------------------------------------------
def free_port(host: str) -> int:
    """A port free on ``host`` now (TensorFlow binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_port_free(port: int, what: str) -> None:
    """Raise RankError naming ``what`` if ``port`` is in use on this machine."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("", port))
        except OSError:
            raise RankError(
                f"{what} {port} is already in use on this machine; choose another port "
                "(main_port / COPYCAT_MAIN_PORT) or stop what uses it"
            ) from None


def meet(cluster: Cluster, digest: dict, timeout: float) -> list[str]:
    """Every rank's TensorFlow ``host:port`` (rank order), once all ranks have met at rank 0
    with the same world size and ``digest``; RankError names a missing or different rank."""
    if cluster.is_main:
        return _host(cluster, digest, timeout)
    return _join(cluster, digest, timeout)


def _host(cluster: Cluster, digest: dict, timeout: float) -> list[str]:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        server.bind(("", cluster.main_port))
    except OSError:
        server.close()
        check_port_free(cluster.main_port, "main_port")
        raise
    with server:
        server.listen(cluster.world)
        peers = {}  # rank -> (connection, message)
        try:
            _gather(server, cluster, digest, timeout, peers)
            own = cluster.main_addr if cluster.world > 1 else "127.0.0.1"
            workers = [f"{own}:{free_port('')}"] + [
                peers[r][1]["addr"] for r in range(1, cluster.world)
            ]
            _tell(peers, {"workers": workers})
            return workers
        except RankError as err:
            _tell(peers, {"error": str(err)})
            raise
        finally:
            for conn, _ in peers.values():
                conn.close()


def _gather(server, cluster: Cluster, digest: dict, timeout: float, peers: dict) -> None:
    end = time.monotonic() + timeout
    while len(peers) < cluster.world - 1:
        left = end - time.monotonic()
        if left <= 0:
            missing = [str(r) for r in range(1, cluster.world) if r not in peers]
            raise RankError(
                f"rank {', '.join(missing)} did not arrive within rank_timeout {timeout:g} s; "
                f"start every rank with world_size {cluster.world}, main_addr and main_port "
                "pointing here, or raise rank_timeout"
            )
        server.settimeout(left)
        with contextlib.suppress(TimeoutError, socket.timeout):
            conn, _ = server.accept()
            conn.settimeout(max(1.0, min(left, 30.0)))
            try:
                message = json.loads(_read_line(conn))
            except (OSError, ValueError):
                conn.close()
                continue
            rank = message.get("rank")
            seen = set(peers)
            # Kept before the checks, so a refused rank hears why (a second claim of a rank
            # is kept under its own key).
            peers[rank if rank not in peers else ("again", len(peers))] = (conn, message)
            _check_peer(cluster, digest, message, rank, seen)


def _check_peer(cluster: Cluster, digest: dict, message: dict, rank, seen: set) -> None:
    if message.get("world") != cluster.world:
        raise RankError(
            f"rank {rank} was started with world_size {message.get('world')}, rank 0 with "
            f"{cluster.world}; start every rank with the same world_size"
        )
    if not isinstance(rank, int) or not 0 < rank < cluster.world or rank in seen:
        raise RankError(
            f"two processes claim rank {rank}; give each process its own rank 0 .. {cluster.world - 1}"
        )
    theirs = message.get("digest") or {}
    different = sorted(k for k in set(digest) | set(theirs) if digest.get(k) != theirs.get(k))
    if different:
        raise RankError(
            f"rank {rank} was started with other {', '.join(different[:4])} than rank 0; start "
            "every rank with the same settings and data set (and the same shared Data Directory)"
        )


def _tell(peers: dict, answer: dict) -> None:
    line = (json.dumps(answer) + "\n").encode()
    for conn, _ in peers.values():
        with contextlib.suppress(OSError):
            conn.sendall(line)


def _join(cluster: Cluster, digest: dict, timeout: float) -> list[str]:
    end = time.monotonic() + timeout
    where = f"{cluster.main_addr}:{cluster.main_port}"
    while True:
        try:
            conn = socket.create_connection(
                (cluster.main_addr, cluster.main_port),
                timeout=max(0.1, min(5.0, end - time.monotonic())),
            )
            break
        except OSError:
            if time.monotonic() >= end:
                raise RankError(
                    f"rank 0 at {where} did not answer within rank_timeout {timeout:g} s; check "
                    "main_addr and main_port (COPYCAT_MAIN_ADDR/PORT) and that rank 0 is running"
                ) from None
            time.sleep(0.2)
    with conn:
        own_host = conn.getsockname()[0]
        message = {
            "rank": cluster.rank,
            "world": cluster.world,
            "addr": f"{own_host}:{free_port(own_host)}",
            "digest": digest,
        }
        conn.sendall((json.dumps(message) + "\n").encode())
        conn.settimeout(max(1.0, end - time.monotonic()) + timeout)
        try:
            answer = json.loads(_read_line(conn))
        except (OSError, ValueError):
            raise RankError(
                f"rank 0 at {where} stopped before every rank arrived; see rank 0's error"
            ) from None
    if "error" in answer:
        raise RankError(f"rank 0 refused this rank: {answer['error']}")
    return list(answer["workers"])


def _read_line(conn: socket.socket, limit: int = 1 << 20) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            raise ValueError("connection closed")
        data += chunk
        if len(data) > limit:
            raise ValueError("message too long")
    return data.decode()


def tf_config(workers: list[str] | tuple[str, ...], rank: int) -> str:
    """The TF_CONFIG of rank ``rank`` among ``workers``."""
    return json.dumps(
        {"cluster": {"worker": list(workers)}, "task": {"type": "worker", "index": rank}}
    )


# ---- TensorFlow ----------------------------------------------------------------------------------
def make_strategy(workers, rank: int, timeout: float, *, use_gpu: bool, deterministic: bool):
    """MultiWorkerMirroredStrategy for rank ``rank`` of ``workers`` (TF_CONFIG set here; must
    run before any other TensorFlow op). Collectives give up after ``timeout`` seconds (a rank
    that stopped answering), CPU collectives run over gRPC (RING), GPUs use NCCL where TF picks it."""
    import tensorflow as tf

    own = workers[rank]
    check_port_free(int(own.rsplit(":", 1)[1]), f"rank {rank}'s TensorFlow port")
    os.environ["TF_CONFIG"] = tf_config(workers, rank)
    if not use_gpu:
        with contextlib.suppress(RuntimeError):
            tf.config.set_visible_devices([], "GPU")
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    kind = tf.distribute.experimental.CommunicationImplementation
    gpus = tf.config.list_physical_devices("GPU") if use_gpu else []
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=kind.AUTO if gpus else kind.RING, timeout_seconds=timeout
    )
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def check_digests(strategy, digest: dict[str, str], rank: int) -> None:
    """Compare ``digest`` across every rank through a collective (launches by TF_CONFIG have no
    rendezvous): RankError naming the differing items and ranks, raised on every rank."""
    import numpy as np
    import tensorflow as tf

    keys = sorted(digest)
    # 12 hex digits = 48 bits: exact in float64, which every collective implementation gathers.
    own = np.array([[int(digest[k][:12], 16) for k in keys]], np.float64)
    values = strategy.experimental_distribute_values_from_function(lambda _ctx: tf.constant(own))
    rows = strategy.gather(values, axis=0).numpy()
    local = max(1, strategy.num_replicas_in_sync // _workers(strategy))  # replicas per rank
    different = [k for i, k in enumerate(keys) if len(set(rows[:, i])) > 1]
    if different:
        ranks = sorted({r // local for r in range(len(rows)) if (rows[r] != rows[0]).any()})
        raise RankError(
            f"rank {rank}: rank {', '.join(map(str, ranks))} was started with other "
            f"{', '.join(different[:4])} than rank 0; start every rank with the same settings "
            "and data set (and the same shared Data Directory)"
        )


def _workers(strategy) -> int:
    resolver = strategy.cluster_resolver
    return len(resolver.cluster_spec().as_dict().get("worker", [])) or 1


#: Words of TensorFlow's errors when a peer is gone (collective timeout, lost connection,
#: coordination service's missing heartbeats).
_LOST = re.compile(
    r"DeadlineExceeded|deadline exceeded|timed out|Connection reset|Socket closed|failed to connect|"
    r"heartbeat|UNAVAILABLE|unavailable|Cancelled|CANCELLED|peer|Aborted",
    re.IGNORECASE,
)


def lost_rank_error(err: Exception, cluster: Cluster, timeout: float) -> RankError | None:
    """A RankError naming the missing rank when ``err`` (from a training step) says a peer is
    gone or did not answer within ``timeout``; None for any other error."""
    import tensorflow as tf

    text = str(err)
    if not isinstance(err, tf.errors.OpError) or not _LOST.search(text):
        return None
    tasks = sorted({int(t) for t in re.findall(r"task:(\d+)", text)} - {cluster.rank})
    who = f"rank {', '.join(map(str, tasks))}" if tasks else "another rank"
    lost = RankError(
        f"rank {cluster.rank}: {who} stopped answering (died, or no reply within rank_timeout "
        f"{timeout:g} s); rank 0's last saved progress is kept: start every rank again to resume"
    )
    lost.ends_process = True  # TensorFlow: "Restart your program to reset"
    return lost


class Watchdog:
    """Ends this process with ``message`` (one line on stderr) unless :meth:`stop` is called
    within ``seconds``: TensorFlow's own timeouts do not cover its start-up (a rank that dies
    between the rendezvous and the first step leaves the others waiting in TensorFlow's C++,
    which holds the Python interpreter: a thread of this process could not act). So the watch is
    a small separate process, which kills this one (SIGKILL: exit status 137) when time is up,
    and ends by itself when this process ends."""

    SCRIPT = (
        "import os, sys, time\n"
        "parent, seconds, message = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]\n"
        "end = time.monotonic() + seconds\n"
        "while time.monotonic() < end:\n"
        "    time.sleep(0.5)\n"
        "    if os.getppid() != parent: sys.exit(0)\n"
        "sys.stderr.write('ccat-tf: error: ' + message + '\\n'); sys.stderr.flush()\n"
        "os.kill(parent, 9)\n"
    )

    def __init__(self, seconds: float, message: str):
        import subprocess

        self._child = subprocess.Popen(
            [sys.executable, "-c", self.SCRIPT, str(os.getpid()), str(seconds), message],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self._child.poll() is None:
            self._child.kill()
            self._child.wait()
