"""Distributed training on this machine: 1 process (2 threads) against 2 processes (1 thread each).

For each model size it measures

* ``steps/s``: a real ``ccat_tf.train`` run, once as one process with 2 TensorFlow threads and
  once as 2 ranks on loopback (``COPYCAT_*`` variables, 1 thread each, MultiWorkerMirroredStrategy
  with gRPC ring all-reduce), same global batch; the median of rank 0's ``steps_per_second``
  after the first steps (its ``.summary``);
* ``all-reduce ms``: 2 processes all-reducing tensors of the network's trainable-variable shapes
  (what each step exchanges), median wall time of one all-reduce;
* ``gradient MB``: trainable parameters x 4 bytes, what each rank sends and receives per step
  (a ring all-reduce moves about 2 x (N - 1) / N of it per rank).

Usage: python benchmarks/bench_distributed.py [--sizes small medium] [--steps 40] [--batch 4]
       [--crop 128]
Writes benchmarks/results/distributed.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

TRAIN = r"""
import json, sys
import ccat_tf
ccat_tf.train(json.loads(sys.argv[1]), progress_bar=False)
"""

ALL_REDUCE = r"""
import json, os, statistics, sys, time
rank, world, port, size, repeats = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                                    sys.argv[4], int(sys.argv[5]))
os.environ["TF_CONFIG"] = json.dumps({
    "cluster": {"worker": [f"127.0.0.1:{port + i}" for i in range(world)]},
    "task": {"type": "worker", "index": rank}})
import tensorflow as tf
kind = tf.distribute.experimental.CommunicationImplementation.RING
strategy = tf.distribute.MultiWorkerMirroredStrategy(
    communication_options=tf.distribute.experimental.CommunicationOptions(implementation=kind))
from ccat_tf.models import build_model
shapes = [tuple(v.shape) for v in build_model(3, 3, size).trainable_variables]

@tf.function
def reduce_once():
    def replica():
        grads = [tf.ones(s) for s in shapes]
        ctx = tf.distribute.get_replica_context()
        return ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
    return strategy.run(replica)

for _ in range(3):
    [g.numpy() for g in strategy.experimental_local_results(reduce_once())[0][:1]]
times = []
for _ in range(repeats):
    t = time.perf_counter()
    out = reduce_once()
    float(tf.reduce_sum(out[-1]))
    times.append(time.perf_counter() - t)
if rank == 0:
    print("RESULT" + json.dumps({"ms": 1000 * statistics.median(times)}))
"""


def free_ports(n: int) -> int:
    """A base port with ``n`` consecutive ports free now."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n >= 65535:
            continue
        socks = []
        try:
            for i in range(n):
                t = socket.socket()
                t.bind(("127.0.0.1", base + i))
                socks.append(t)
            return base
        except OSError:
            continue
        finally:
            for t in socks:
                t.close()
    raise RuntimeError("no free ports")


def env_for(threads: int, **extra) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    env.update(
        OMP_NUM_THREADS=str(threads),
        TF_NUM_INTRAOP_THREADS=str(threads),
        TF_NUM_INTEROP_THREADS=str(threads),
    )
    env.update(extra)
    return env


def run_ranks(commands: list[list[str]], envs: list[dict]) -> list[str]:
    procs = [
        subprocess.Popen(
            c, env=e, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for c, e in zip(commands, envs, strict=True)
    ]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=3600)
        if p.returncode:
            raise RuntimeError(f"a rank failed ({p.returncode}): {err[-2000:]}")
        outs.append(out)
    return outs


def steps_per_second(settings: dict, world: int, threads: int) -> float:
    from ccat_tf.summary import read_summaries

    port = free_ports(1)
    envs = []
    for rank in range(world):
        extra = {}
        if world > 1:
            extra = dict(
                COPYCAT_MAIN_ADDR="127.0.0.1",
                COPYCAT_MAIN_PORT=str(port),
                COPYCAT_RANK=str(rank),
                COPYCAT_WORLD_SIZE=str(world),
            )
        envs.append(env_for(threads, **extra))
    command = [sys.executable, "-c", TRAIN, json.dumps(settings)]
    run_ranks([command] * world, envs)
    sps = read_summaries(settings["data_directory"])["steps_per_second"].to_numpy()
    return float(statistics.median(sps[5:]))


def all_reduce_ms(size: str, repeats: int = 20) -> float:
    port = free_ports(2)
    commands = [
        [sys.executable, "-c", ALL_REDUCE, str(r), "2", str(port), size, str(repeats)]
        for r in range(2)
    ]
    outs = run_ranks(commands, [env_for(1), env_for(1)])
    return json.loads(outs[0].split("RESULT")[1])["ms"]


def parameters(size: str) -> int:
    from ccat_tf.models import build_model

    return int(sum(int(v.numpy().size) for v in build_model(3, 3, size).trainable_variables))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["small", "medium"])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--crop", type=int, default=128)
    args = ap.parse_args()
    load = os.getloadavg()
    from bench_training import make_frames

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        frames = make_frames(tmp / "frames", 8, (256, 256))
        for size in args.sizes:
            base = dict(
                frames,
                model_size=size,
                crop_size=args.crop,
                batch_size=args.batch,
                epochs=max(1, args.steps * args.batch // 8),
                use_multi_resolution_training=False,
                use_gpu_if_available=False,
                checkpoint_interval=100000,
                contact_sheet_interval=100000,
                seed=1,
            )
            one = steps_per_second({**base, "data_directory": str(tmp / f"{size}1")}, 1, 2)
            two = steps_per_second({**base, "data_directory": str(tmp / f"{size}2")}, 2, 1)
            n = parameters(size)
            rows.append(
                {
                    "size": size,
                    "parameters": n,
                    "gradient_mb": n * 4 / 1e6,
                    "one_process_2_threads_sps": one,
                    "two_processes_1_thread_sps": two,
                    "all_reduce_ms": all_reduce_ms(size),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_before": load,
        "steps": args.steps,
        "batch": args.batch,
        "crop": args.crop,
        "rows": rows,
    }
    out = HERE / "results" / "distributed.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(
        "| model | parameters | gradient MB/step | 1 proc x 2 threads steps/s | "
        "2 procs x 1 thread steps/s | all-reduce ms |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['size']} | {r['parameters']:,} | {r['gradient_mb']:.2f} | "
            f"{r['one_process_2_threads_sps']:.2f} | {r['two_processes_1_thread_sps']:.2f} | "
            f"{r['all_reduce_ms']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
