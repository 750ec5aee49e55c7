"""Snakemake on a real SLURM cluster (the one-node cluster of .ci/slurm/setup.sh).

Run with `bash .ci/slurm/run_tests.sh` (as root: it starts the cluster first), or, with a cluster
already up, `.venv/bin/pytest -m slurm tests/test_slurm.py`. Every test skips when `sinfo` does
not answer.

What "ran through SLURM" means here, checked three ways: the plugin logged an sbatch job id for
each job; each job's shell saw `$SLURM_JOB_ID` equal to that id; and slurmctld recorded the job as
COMPLETED under the run's job name in its job-completion log (JobCompType=jobcomp/filetxt; the CI
cluster has no accounting database, so `sacct` is used only where it works).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CI_PROFILE = REPO / "profiles" / "slurm-ci"
SLURM_PROFILE = REPO / "profiles" / "slurm"


@functools.cache
def _slurm_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        proc = subprocess.run(
            ["sinfo", "-h", "-o", "%a"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and "up" in proc.stdout


pytestmark = pytest.mark.slurm


@pytest.fixture(autouse=True)
def _needs_slurm():
    # asked here, not at import: with slurm.conf present but the daemons down, sinfo takes ~10 s
    # to give up, which a default `pytest` run (that deselects these tests) must not pay
    if not _slurm_answers():
        pytest.skip("no SLURM cluster answers (start one: .ci/slurm/setup.sh)")


# ------------------------------------------------------------------------------------ helpers
def _env() -> dict[str, str]:
    """The environment for snakemake: the venv first on PATH (sbatch exports it to the jobs)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("SLURM_JOB_ID", None)  # never look like we are inside a job
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _snakemake(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    (cwd / "snakemake.stdout.txt").write_text(proc.stdout)
    (cwd / "snakemake.stderr.txt").write_text(proc.stderr)
    return proc


def _tail(proc: subprocess.CompletedProcess, n: int = 60) -> str:
    return "\n".join((proc.stdout + proc.stderr).splitlines()[-n:])


def _submitted(log: str) -> dict[int, str]:
    """Snakemake job id -> SLURM job id, from the plugin's submission messages."""
    pairs = re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", log)
    return {int(job): slurm for job, slurm in pairs}


def _run_id(log: str) -> str:
    match = re.search(r"SLURM run ID: (\S+)", log)
    assert match, "the SLURM executor did not report its run ID"
    return match.group(1)


def _rules_of_jobs(log: str) -> dict[int, str]:
    """Snakemake job id -> rule name, from the `rule NAME:` ... `jobid: N` blocks of the log."""
    rules: dict[int, str] = {}
    current = None
    for line in log.splitlines():
        head = re.match(r"\s*(?:local)?rule (\w+):", line)
        if head:
            current = head.group(1)
            continue
        jobid = re.match(r"\s*jobid: (\d+)", line)
        if jobid and current:
            rules[int(jobid.group(1))] = current
            current = None
    return rules


def _jobcomp_log() -> Path | None:
    out = subprocess.run(
        ["scontrol", "show", "config"], capture_output=True, text=True, timeout=30
    ).stdout
    kind = re.search(r"^JobCompType\s*=\s*(\S+)", out, re.M)
    loc = re.search(r"^JobCompLoc\s*=\s*(\S+)", out, re.M)
    if kind and kind.group(1) == "jobcomp/filetxt" and loc:
        return Path(loc.group(1))
    return None


def _slurm_records(slurm_ids: set[str], run_id: str, timeout: float = 30) -> dict[str, str]:
    """SLURM job id -> state, for this run's jobs, from jobcomp/filetxt (else from sacct).

    Only records whose job name is the run ID count: job ids start again at 1 whenever setup.sh
    restarts slurmctld with a clean slate, so the completion log can hold older jobs with the
    same ids.
    """
    comp = _jobcomp_log()
    deadline = time.monotonic() + timeout
    while True:
        found: dict[str, str] = {}
        if comp is not None and comp.exists():
            for line in comp.read_text(errors="replace").splitlines():
                fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
                if fields.get("Name") == run_id and fields.get("JobId") in slurm_ids:
                    found[fields["JobId"]] = fields.get("JobState", "")
        else:
            proc = subprocess.run(
                [
                    "sacct",
                    "-X",
                    "-n",
                    "-P",
                    "-o",
                    "JobIDRaw,State,JobName",
                    "-S",
                    "now-1days",
                    "--name",
                    run_id,
                ],
                capture_output=True,
                text=True,
                timeout=30,
            )
            for line in proc.stdout.splitlines():
                jid, state, _name = (line.split("|") + ["", ""])[:3]
                if jid in slurm_ids:
                    found[jid] = state
        # slurmctld writes the record when the job ends; give it a moment
        if set(found) >= slurm_ids or time.monotonic() > deadline:
            return found
        time.sleep(1)


# ------------------------------------------------------------------------------------ tests
TINY_SNAKEFILE = r"""
rule all:
    input:
        "out/b.txt",


rule a:
    output:
        "out/a.txt",
    resources:
        mem_mb=64,
        runtime=2,
    shell:
        "echo job=$SLURM_JOB_ID host=$(hostname -s) partition=$SLURM_JOB_PARTITION > {output}"


rule b:
    input:
        "out/a.txt",
    output:
        "out/b.txt",
    resources:
        mem_mb=64,
        runtime=2,
    shell:
        "cat {input} > {output} && "
        "echo job=$SLURM_JOB_ID host=$(hostname -s) partition=$SLURM_JOB_PARTITION >> {output}"
"""


def test_tiny_workflow_runs_through_sbatch(tmp_path):
    (tmp_path / "Snakefile").write_text(TINY_SNAKEFILE)
    started = time.monotonic()
    proc = _snakemake(
        ["--executor", "slurm", "--profile", str(CI_PROFILE)], cwd=tmp_path, timeout=600
    )
    assert proc.returncode == 0, _tail(proc)
    log = proc.stdout + proc.stderr
    elapsed = time.monotonic() - started

    # two jobs submitted with sbatch (the `all` rule is local)
    submitted = _submitted(log)
    assert len(submitted) == 2, _tail(proc)
    slurm_ids = set(submitted.values())
    assert len(slurm_ids) == 2

    # each job's shell ran inside that SLURM job, on this node, in the CI partition
    lines = (tmp_path / "out" / "b.txt").read_text().split("\n")
    seen = [dict(kv.split("=", 1) for kv in line.split()) for line in lines if line.strip()]
    assert [s["job"] for s in seen] != ["", ""], "SLURM_JOB_ID was empty: not run by SLURM"
    assert {s["job"] for s in seen} == slurm_ids
    assert all(s["host"] == socket.gethostname().split(".")[0] for s in seen)
    assert all(s["partition"] == "debug" for s in seen)

    # slurmctld recorded both jobs as completed, under the name the plugin gave them
    records = _slurm_records(slurm_ids, _run_id(log))
    assert set(records) == slurm_ids, f"SLURM has no record of {slurm_ids - set(records)}"
    assert set(records.values()) == {"COMPLETED"}, records

    # the plugin kept the SLURM job logs (slurm-keep-successful-logs in the CI profile)
    slurm_logs = list((tmp_path / ".snakemake" / "slurm_logs").rglob("*.log"))
    assert {p.stem for p in slurm_logs} >= slurm_ids, slurm_logs
    print(f"tiny SLURM workflow: 2 jobs in {elapsed:.1f} s")


def _stage_repo(dest: Path, config: Path | None = None) -> None:
    """A working directory that looks like the repository root, with results/ of its own.

    With ``config`` that file becomes the working directory's config.yaml: the jobs Snakemake
    submits re-read config.yaml and would merge a --configfile into it (--replace-workflow-config
    is not passed on to them), so the demo shot would leak into every job's view of the config.
    """
    skip = {".git", ".snakemake", "results", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache"}
    if config is not None:
        skip.add("config.yaml")
        shutil.copyfile(config, dest / "config.yaml")
    for entry in REPO.iterdir():
        if entry.name not in skip:
            (dest / entry.name).symlink_to(entry)


@pytest.mark.slow
def test_project_workflow_tiny_config_through_slurm_profile(tmp_path):
    """The project's own workflow, tiny settings, submitted through profiles/slurm (+ CI override)."""
    tiny = REPO / "tests" / "configs" / "tiny.yaml"
    for needed in (REPO / "Snakefile", tiny, SLURM_PROFILE / "config.yaml"):
        if not needed.exists():
            pytest.skip(f"{needed.relative_to(REPO)} is not there yet")
    _stage_repo(tmp_path, config=tiny)
    proc = _snakemake(
        ["--profile", "profiles/slurm", "--profile", "profiles/slurm-ci"],
        cwd=tmp_path,
        timeout=1800,
    )
    assert proc.returncode == 0, _tail(proc, 120)
    log = proc.stdout + proc.stderr

    submitted = _submitted(log)
    assert submitted, "no job went through sbatch:\n" + _tail(proc)
    rules = _rules_of_jobs(log)
    submitted_rules = [rules.get(job, "?") for job in submitted]
    assert any("train" in r for r in submitted_rules), submitted_rules
    # inference is split into chunks that run as separate SLURM jobs
    assert sum("infer" in r for r in submitted_rules) >= 2, submitted_rules

    records = _slurm_records(set(submitted.values()), _run_id(log))
    assert set(records) == set(submitted.values()), f"SLURM lacks records: {records}"
    assert set(records.values()) == {"COMPLETED"}, records
    assert any((tmp_path / "results").rglob("model.cat")), "no model.cat in results/"


@pytest.mark.slow
def test_two_task_training_job_through_slurm(tmp_path):
    """train_tasks: 2 is ONE sbatch job of 2 tasks whose shell starts both ranks with one srun
    step (ccat_tf.launch); the ranks take rank, world size and main node from SLURM, train one
    network, and rank 0 alone writes the Data Directory. One CPU per task: the CI node has 2."""
    config = yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text())
    config["shots"]["tiny"]["train_tasks"] = 2
    (tmp_path / "config.yaml.src").write_text(yaml.safe_dump(config, sort_keys=False))
    _stage_repo(tmp_path, config=tmp_path / "config.yaml.src")
    proc = _snakemake(
        ["--profile", "profiles/slurm", "--profile", "profiles/slurm-ci"]
        + ["--set-threads", "train=1", "-p", "results/tiny/model.cat"],
        cwd=tmp_path,
        timeout=1800,
    )
    assert proc.returncode == 0, _tail(proc, 120)
    log = proc.stdout + proc.stderr
    assert "python -m ccat_tf.launch --tasks 2 --nodes 1 --threads 1" in log

    submitted = _submitted(log)
    rules = _rules_of_jobs(log)
    train_jobs = [slurm for job, slurm in submitted.items() if rules.get(job) == "train"]
    assert len(train_jobs) == 1, (submitted, rules)
    records = _slurm_records(set(submitted.values()), _run_id(log))
    assert set(records.values()) == {"COMPLETED"}, records

    train_log = (tmp_path / "logs" / "train" / "tiny.log").read_text()
    assert "rank 0: 2 replicas in 2 ranks" in train_log, train_log[-3000:]
    for rank in (0, 1):  # rank and world size from srun's SLURM_PROCID and SLURM_NTASKS
        assert f"distributed training: rank {rank} of 2 (SLURM, " in train_log, train_log[:3000]
    assert "rank 1: trained 20 steps; rank 0 writes the model" in train_log, train_log[-3000:]
    data = tmp_path / "results" / "tiny" / "train"
    (run,) = json.loads((data / "runs.json").read_text())["runs"]
    assert (run["status"], run["last_step"]) == ("finished", 20)
    assert (tmp_path / "results" / "tiny" / "model.cat").stat().st_size > 0
