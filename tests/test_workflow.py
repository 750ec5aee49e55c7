"""The Snakemake workflow: lint, DAG shape, rerun semantics, and (slow) the real
tiny workflow end to end.

Fast tests drive the Snakemake CLI in a temporary working directory with `-s Snakefile -d tmp`
and a generated config.yaml there. The rerun tests fake a finished tree (empty outputs, then
`snakemake --touch --forceall` to record Snakemake's metadata) and only ask Snakemake what it
would rerun: they test the DAG's rerun triggers, not the package. The `slow` tests run the real
package on tests/configs/tiny.yaml.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
PLATE = str(REPO / "demo" / "bikes" / "plate" / "bikes.####.png")
GROUND_TRUTH = str(REPO / "demo" / "bikes" / "groundtruth" / "bikes.####.png")
DIRECTORY_RULES = {"infer_chunk", "infer"}  # their outputs are directory()s


def snakemake(workdir: Path, *args: str, timeout: float = 600, check: bool = True, **kw):
    """Run the workflow's Snakefile in `workdir` (its config.yaml) with this Python's Snakemake."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(SNAKEFILE),
        "-d",
        str(workdir),
        "--workflow-profile",
        "none",
        *args,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, **kw)
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


def demo_shot(**overrides) -> dict:
    shot = {
        "input": PLATE,
        "ground_truth": GROUND_TRUTH,
        "frames": "1001-1019x6",
        "preview": PLATE,
        "preview_frames": 1048,
        "infer_frames": "1001-1004",
    }
    shot.update(overrides)
    return shot


def write_config(workdir: Path, config: dict) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def planned_jobs(result: subprocess.CompletedProcess) -> list[tuple[str, dict]]:
    """(rule, wildcards) of every job a dry run lists."""
    jobs: list[tuple[str, dict]] = []
    current = None
    for line in result.stdout.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line)
        if m:
            current = (m.group(1), {})
            jobs.append(current)
            continue
        if current is None:
            continue
        if not line.strip():
            current = None
            continue
        m = re.match(r"^\s+wildcards: (.*)$", line)
        if m:
            for item in m.group(1).split(", "):
                key, _, value = item.partition("=")
                current[1][key] = value
    return jobs


def job_set(result) -> set[tuple[str, str]]:
    """{(rule, shot)} of a dry run ('' for jobs without a shot)."""
    return {(rule, wc.get("shot", "")) for rule, wc in planned_jobs(result)}


def fake_finished_tree(workdir: Path) -> None:
    """Create every output as an empty file/folder, then let Snakemake record it as done."""
    summary = snakemake(workdir, "-n", "--summary", "--cores", "1").stdout
    for line in summary.splitlines():
        fields = line.split("\t")
        if len(fields) < 3 or fields[0] == "output_file":
            continue
        path, rule = workdir / fields[0], fields[2]
        if rule in DIRECTORY_RULES:
            path.mkdir(parents=True, exist_ok=True)
            (path / "frame.png").touch()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    snakemake(workdir, "--touch", "--forceall", "--cores", "1")
    assert "Nothing to be done" in snakemake(workdir, "-n", "--cores", "1").stdout


# ---- static checks ------------------------------------------------------------------------------


def test_lint_passes():
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint", "--workflow-profile", "none"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations" in result.stdout + result.stderr, result.stdout + result.stderr


def test_snakefmt_check():
    snakefmt = shutil.which("snakefmt", path=str(Path(sys.executable).parent)) or shutil.which(
        "snakefmt"
    )
    if snakefmt is None:
        pytest.skip("snakefmt is not installed")
    files = [str(REPO / "Snakefile"), *map(str, sorted((REPO / "workflow/rules").glob("*.smk")))]
    result = subprocess.run([snakefmt, "--check", *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_repository_config_dry_run(tmp_path):
    """`snakemake -n` on the repository's config.yaml (the demo shot) plans the whole job.

    It runs in a fresh working directory holding a copy of config.yaml (and the demo frames it
    names), so what a user's own runs left in the checkout's results/ cannot change the plan.
    """
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    (tmp_path / "demo").symlink_to(REPO / "demo")
    result = snakemake(tmp_path, "-n", "--cores", "1")
    assert {("validate", "bikes"), ("cache", "bikes"), ("train", "bikes")} <= job_set(result)
    assert not (tmp_path / "results").exists()


# ---- profiles -----------------------------------------------------------------------------------


def load_profile(name: str) -> dict:
    return yaml.safe_load((REPO / "profiles" / name / "config.yaml").read_text())


def test_workflow_profile_sets_nothing_a_cluster_profile_needs():
    """profiles/default is loaded as the workflow profile on every run and wins over --profile,
    key by key: `cores` there would cap SLURM jobs' threads at the login node's cores, `retries`
    would cancel the SLURM retries of preempted trainings."""
    default = load_profile("default")
    assert default["rerun-incomplete"] is True
    assert set(default["rerun-triggers"]) == {"mtime", "params", "input", "code", "software-env"}
    assert not set(default) & set(load_profile("slurm")), "keys set in both are overridden"
    assert not {"cores", "retries", "set-threads", "set-resources", "jobs"} & set(default)


def test_slurm_profile_resubmits_preempted_training():
    slurm = load_profile("slurm")
    assert slurm["executor"] == "slurm"
    assert slurm["retries"] >= 1
    assert (
        slurm["set-resources"]["train"]["runtime"]
        > slurm["set-resources"]["infer_chunk"]["runtime"]
    )


def test_slurm_profile_dry_run(tmp_path):
    """The SLURM profile parses and gives training a GPU, its memory and its signal."""
    write_config(tmp_path, {"shots": {"A": demo_shot()}})
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(SNAKEFILE),
            "-d",
            str(tmp_path),
            "--profile",
            str(REPO / "profiles" / "slurm"),
            "-n",
            "-p",
            "results/A/model.cat",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    train = result.stdout.split("rule train:", 1)[1].split("\n\n", 1)[0]
    assert re.search(r"resources: .*\bgpu=1\b", train), train
    assert "mem_mb=32000" in train and "--signal=TERM@120" in train, train
    # (threads are not checked: a dry run plans with 1 core unless --cores is given)


def _slurm_dry_run_resources(workdir: Path) -> dict[str, dict]:
    """{shot: the train job's resources} as profiles/slurm plans them."""
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "-d", str(workdir)]
        + ["--profile", str(REPO / "profiles" / "slurm"), "-n", "-p", "--cores", "8"]
        + [f"results/{shot}/model.cat" for shot in ("A", "B")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    found = {}
    for block in result.stdout.split("rule train:")[1:]:
        block = block.split("\n\n", 1)[0]
        shot = re.search(r"wildcards: shot=(\w+)", block).group(1)
        line = re.search(r"resources: (.*)", block).group(1)
        items = (item.partition("=")[::2] for item in line.split(", "))
        found[shot] = {k: int(v) if v.isdigit() else v for k, v in items}
        found[shot]["_shell"] = re.search(r"Shell command: (.*)", block).group(1)
    return found


def test_train_tasks_make_one_slurm_job_of_that_many_tasks(tmp_path):
    """train_tasks: 2 is one sbatch job of 2 tasks whose shell starts both ranks with one srun
    step (the plugin's `mpi` resource: no srun -n1 around the job); one task stays as it was.
    The sbatch line is the one snakemake-executor-plugin-slurm builds from these resources."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command

    write_config(tmp_path, {"shots": {"A": demo_shot(train_tasks=2), "B": demo_shot()}})
    planned = _slurm_dry_run_resources(tmp_path)

    def sbatch(resources):
        class Resources(dict):
            __getattr__ = dict.__getitem__

        job = type("Job", (), {"resources": Resources(resources), "threads": 8})()
        params = {"run_uuid": "u", "slurm_logfile": "l", "comment_str": "c", "workdir": ""}
        return get_submit_command(job, params | {"account": "", "partition": ""}).split()

    a, b = planned["A"], planned["B"]
    assert (a["tasks"], a["nodes"], a["mpi"], a["gpu"]) == (2, 1, "srun", 2)
    assert {"--ntasks=2", "--nodes=1", "--cpus-per-task=8"} <= set(sbatch(a))
    assert not any(arg.startswith("--ntasks-per-gpu") for arg in sbatch(a))
    assert "--tasks 2 --nodes 1 --threads 8 --gpus 2 -- train" in a["_shell"]
    assert "mpi" not in b and (b["tasks"], b["gpu"]) == (1, 1)
    assert not any(arg.startswith("--ntasks") for arg in sbatch(b))  # a GPU job, as before


# ---- DAG shape ----------------------------------------------------------------------------------


def test_dag_of_all(tmp_path):
    write_config(tmp_path, {"infer_chunk_size": 2, "shots": {"A": demo_shot()}})
    jobs = planned_jobs(snakemake(tmp_path, "-n", "--cores", "1"))
    counts: dict[str, int] = {}
    for rule, _ in jobs:
        counts[rule] = counts.get(rule, 0) + 1
    assert counts == {
        "validate": 1,
        "cache": 1,
        "train": 1,
        "summary_csv": 1,
        "graph": 1,
        "contact_sheet": 1,
        "preview": 1,
        "overview": 1,
        "infer_chunk": 2,
        "infer": 1,
        "output_samples": 1,
        "stability": 1,
        "all": 1,
    }
    chunks = sorted(wc["chunk"] for rule, wc in jobs if rule == "infer_chunk")
    assert chunks == ["1001-1002", "1003-1004"]


def test_shot_without_preview_or_infer_frames_trains_only(tmp_path):
    shot = demo_shot()
    for key in ("preview", "preview_frames", "infer_frames"):
        del shot[key]
    write_config(tmp_path, {"shots": {"A": shot}})
    rules = {rule for rule, _ in planned_jobs(snakemake(tmp_path, "-n", "--cores", "1"))}
    assert rules == {
        "validate",
        "cache",
        "train",
        "summary_csv",
        "graph",
        "contact_sheet",
        "overview",
        "all",
    }


def test_single_target_builds_only_its_chain(tmp_path):
    write_config(tmp_path, {"shots": {"A": demo_shot(), "B": demo_shot()}})
    result = snakemake(tmp_path, "-n", "--cores", "1", "results/B/model.cat")
    # validate is a target of its own (train checks the data set itself): see train.smk
    assert job_set(result) == {("cache", "B"), ("train", "B")}


def test_commands_rules_run(tmp_path):
    """The exact ccat-tf command lines (the contract with the package's CLI)."""
    write_config(tmp_path, {"infer_chunk_size": 2, "shots": {"A": demo_shot(epochs=7)}})
    out = snakemake(tmp_path, "-n", "-p", "--cores", "1").stdout
    assert "python -m ccat_tf validate --settings-json '{" in out
    assert "--report results/A/dataset_report.json" in out
    assert "python -m ccat_tf cache --settings-json '{" in out
    assert "--output results/A/dataset_cache.h5" in out
    train = next(line for line in out.splitlines() if " train --settings-json" in line)
    # one process by default, started by the launcher (ccat_tf.launch) with the job's threads
    assert (
        "python -m ccat_tf.launch --tasks 1 --nodes 1 --threads 1 --gpus 1 -- train --settings-json"
        in train
    )
    assert "--data-directory results/A/train --cache-file results/A/dataset_cache.h5" in train
    assert "--output results/A/model.cat" in train
    settings = json.loads(re.search(r"--settings-json '(\{.*?\})'", train).group(1))
    assert settings["epochs"] == 7 and settings["model_size"] == "auto"
    assert "tile_size" not in settings  # inference settings never reach training
    assert settings["checkpoint_interval"] == 1000  # no-retrain settings reach it too
    infer = next(line for line in out.splitlines() if "ccat_tf infer" in line)
    assert "python -m ccat_tf infer results/A/model.cat --input " in infer
    assert re.search(
        r"--frames (1001-1002|1003-1004) --output '?results/A/chunks/\1/A\.####\.exr'?", infer
    ), infer
    infer_settings = json.loads(re.search(r"--settings-json '(\{.*?\})'", infer).group(1))
    assert "epochs" not in infer_settings and infer_settings["tile_size"] == "auto"
    assert "python -m ccat_tf summary-csv results/A/train --output results/A/loss.csv" in out
    assert "python -m ccat_tf graph results/A/loss.csv --output results/A/graph.png" in out
    assert (
        "python -m ccat_tf overview results/A/train --labels A --output results/overview.png" in out
    )
    assert "oiiotool -i " in out and "-o results/A/output_samples.png" in out
    stability = next(line for line in out.splitlines() if "ccat_tf stability" in line)
    assert "python -m ccat_tf stability 'results/A/output/A.####.exr' --input " in stability
    assert stability.endswith(
        "--frames 1001-1004 --input-channels rgb --output-channels rgb --title A "
        "--output results/A/stability.png > logs/stability/A.log 2>&1"
    )


# ---- many shots ---------------------------------------------------------------------------------


def test_dry_run_of_50_shots_plans_every_job(tmp_path):
    """50 shots plan 50 of each shot's jobs. (How long that takes: benchmarks/bench_dry_run.py.)"""
    shots = {
        f"shot{i:03d}": demo_shot(
            frames="1001-1043x6", validation_frames="1016,1034", infer_frames="1001-1048"
        )
        for i in range(50)
    }
    write_config(tmp_path, {"shots": shots})
    jobs = planned_jobs(snakemake(tmp_path, "-n", "--cores", "2"))
    counts: dict[str, int] = {}
    for rule, _ in jobs:
        counts[rule] = counts.get(rule, 0) + 1
    per_shot = ("validate", "cache", "train", "summary_csv", "graph", "contact_sheet", "preview")
    assert {rule: counts[rule] for rule in per_shot} == dict.fromkeys(per_shot, 50)
    assert counts["infer_chunk"] == 100 and counts["infer"] == 50  # 48 frames: 2 chunks of 24
    assert counts["overview"] == 1 and counts["all"] == 1
    assert {wc["shot"] for rule, wc in jobs if rule == "train"} == set(shots)


# ---- rerun semantics ----------------------------------------------------------------------------


TWO_SHOTS = {
    "infer_chunk_size": 2,
    "shots": {"A": demo_shot(validation_frames="1016"), "B": demo_shot()},
}


@pytest.fixture(scope="module")
def _finished_template(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("finished")
    write_config(workdir, TWO_SHOTS)
    fake_finished_tree(workdir)
    return workdir


@pytest.fixture
def finished_two_shots(_finished_template, tmp_path):
    """A and B as if the whole workflow had run (empty outputs, real Snakemake metadata)."""
    workdir = tmp_path / "work"
    shutil.copytree(_finished_template, workdir, symlinks=True)  # keeps mtimes
    assert "Nothing to be done" in snakemake(workdir, "-n", "--cores", "1").stdout
    return workdir, json.loads(json.dumps(TWO_SHOTS))


DOWNSTREAM_OF_TRAIN = {
    "train",
    "summary_csv",
    "graph",
    "contact_sheet",
    "preview",
    "infer_chunk",
    "infer",
    "output_samples",
    "stability",
}
INFERENCE = {"infer_chunk", "infer", "output_samples", "stability"}


def rerun_plan(workdir: Path, config: dict) -> set[tuple[str, str]]:
    write_config(workdir, config)
    return job_set(snakemake(workdir, "-n", "--cores", "1"))


def test_editing_a_training_setting_retrains_that_shot_only(finished_two_shots):
    workdir, config = finished_two_shots
    config["shots"]["A"]["epochs"] = 20000
    plan = rerun_plan(workdir, config)
    assert plan == {(rule, "A") for rule in DOWNSTREAM_OF_TRAIN} | {("overview", ""), ("all", "")}


def test_editing_model_size_in_defaults_retrains_every_shot_that_inherits_it(finished_two_shots):
    workdir, config = finished_two_shots
    config["defaults"] = {"model_size": "small"}
    config["shots"]["B"]["model_size"] = "auto"  # B keeps its setting: untouched
    plan = rerun_plan(workdir, config)
    # model_size is also checked by validate (divisor of the crop), so A revalidates
    assert {shot for _, shot in plan} == {"A", ""}
    assert ("validate", "A") in plan and ("train", "A") in plan


def test_editing_an_inference_setting_reruns_only_inference(finished_two_shots):
    workdir, config = finished_two_shots
    config["shots"]["A"]["tile_overlap"] = 48
    plan = rerun_plan(workdir, config)
    assert plan == {(rule, "A") for rule in INFERENCE} | {("all", "")}


def test_editing_output_format_reruns_only_inference(finished_two_shots):
    workdir, config = finished_two_shots
    config["shots"]["B"]["output_format"] = "png"
    plan = rerun_plan(workdir, config)
    assert plan == {(rule, "B") for rule in INFERENCE} | {("all", "")}


def test_changing_the_chunk_size_reruns_only_inference(finished_two_shots):
    workdir, _ = finished_two_shots
    result = snakemake(workdir, "-n", "--cores", "1", "--config", "infer_chunk_size=3")
    chunks = {
        (wc["shot"], wc["chunk"]) for rule, wc in planned_jobs(result) if rule == "infer_chunk"
    }
    assert chunks == {
        ("A", "1001-1003"),
        ("A", "1004-1004"),
        ("B", "1001-1003"),
        ("B", "1004-1004"),
    }
    assert {rule for rule, _ in job_set(result)} == INFERENCE | {"all"}


# Settings that cannot change a finished model (ccat_tf.workflow.shots.NO_RETRAIN_KEYS).
NO_RETRAIN_EDITS = {
    "checkpoint_interval": 7,
    "contact_sheet_interval": 3,
    "on_checkpoint": ["studio_hooks:notify"],
    "run_name": "take2",
    # how many processes train it (resources of the job, not params): a finished shot stays
    "train_tasks": 2,
    "train_nodes": 1,
}  # (use_gpu_if_available is an inference setting too: it reruns inference, not training)


@pytest.mark.slow  # dry runs on a finished shot; CI runs them
@pytest.mark.parametrize("key", list(NO_RETRAIN_EDITS))
def test_editing_a_setting_that_needs_no_retraining_reruns_nothing(finished_two_shots, key):
    workdir, config = finished_two_shots
    config["shots"]["A"][key] = NO_RETRAIN_EDITS[key]
    assert rerun_plan(workdir, config) == set()


@pytest.mark.slow  # dry runs on a finished shot; CI runs them
@pytest.mark.parametrize("key, value", [("preview_frames", "1047"), ("validation_frames", "1034")])
def test_editing_preview_or_validation_frames_rechecks_them_only(finished_two_shots, key, value):
    """validate checks the new frames; the finished training and what it made stay."""
    workdir, config = finished_two_shots
    config["shots"]["A"][key] = value
    assert rerun_plan(workdir, config) == {("validate", "A"), ("all", "")}


@pytest.mark.slow  # a dry run on a finished shot; CI runs it
def test_more_epochs_with_no_retrain_edits_still_retrains(finished_two_shots):
    """Edits that rerun nothing by themselves must not hide one that retrains (Snakemake skips
    the provenance checks of jobs downstream of a job that reruns)."""
    workdir, config = finished_two_shots
    config["shots"]["A"].update(epochs=20000, checkpoint_interval=7, validation_frames="1034")
    plan = rerun_plan(workdir, config)
    assert ("train", "A") in plan and ("validate", "A") in plan and ("cache", "A") not in plan
    assert not {p for p in plan if p[1] == "B"}


def test_editing_validation_frames_does_not_rebuild_the_cache(finished_two_shots):
    workdir, config = finished_two_shots
    config["shots"]["A"]["validation_frames"] = "1016,1034"
    config["shots"]["A"]["crop_size"] = 128  # a training setting: A resumes/retrains
    plan = rerun_plan(workdir, config)
    assert ("validate", "A") in plan and ("train", "A") in plan
    assert ("cache", "A") not in plan  # the cached pairs did not change
    assert not {p for p in plan if p[1] == "B"}


def test_editing_the_data_set_frames_rebuilds_the_cache(finished_two_shots):
    workdir, config = finished_two_shots
    config["shots"]["A"]["frames"] = "1001-1013x6"
    plan = rerun_plan(workdir, config)
    assert {("validate", "A"), ("cache", "A"), ("train", "A")} <= plan
    assert not {p for p in plan if p[1] == "B"}


def test_interrupted_training_reruns(finished_two_shots):
    """A training job that died leaves model.cat missing (Snakemake deletes outputs of failed
    jobs): the next call reruns A's training, whose engine resumes from the Data Directory."""
    workdir, _ = finished_two_shots
    (workdir / "results/A/model.cat").unlink()
    plan = job_set(snakemake(workdir, "-n", "--cores", "1"))
    assert ("train", "A") in plan and ("validate", "A") not in plan and ("cache", "A") not in plan
    assert not {p for p in plan if p[1] == "B"}


def test_data_directory_is_not_an_output(finished_two_shots):
    workdir, _ = finished_two_shots
    summary = snakemake(workdir, "-n", "--summary", "--cores", "1").stdout
    outputs = [line.split("\t")[0] for line in summary.splitlines()[1:]]
    assert "results/A/model.cat" in outputs
    assert not [o for o in outputs if o.startswith("results/A/train")]


def test_each_shots_stability_plot_is_in_the_report(finished_two_shots):
    import zipfile

    workdir, _ = finished_two_shots
    result = snakemake(workdir, "--report", str(workdir / "report.zip"))
    assert (result.stdout + result.stderr).count("Adding stability.png") == 2  # A and B
    with zipfile.ZipFile(workdir / "report.zip") as z:
        assert sum(n.endswith("/stability.png") for n in z.namelist()) == 2
        html = next(z.read(n).decode() for n in z.namelist() if n.endswith("report.html"))
    assert "Flicker of shot" in html  # workflow/report/stability.rst


# ---- the real thing (needs the training and inference engines) ----------------------------------


@pytest.fixture
def tiny_workdir(tmp_path):
    """tests/configs/tiny.yaml as the config.yaml of a fresh working directory."""
    shutil.copy(REPO / "tests" / "configs" / "tiny.yaml", tmp_path / "config.yaml")
    (tmp_path / "demo").symlink_to(REPO / "demo")
    return tmp_path


def tiny_config(workdir: Path) -> dict:
    return yaml.safe_load((workdir / "config.yaml").read_text())


def train_log(workdir: Path) -> str:
    return (workdir / "logs" / "train" / "tiny.log").read_text()


def latest_step(workdir: Path) -> int:
    from ccat_tf import state

    progress = state.load_latest_progress(workdir / "results" / "tiny" / "train")
    return progress.step if progress else 0


@pytest.mark.slow
def test_tiny_workflow_end_to_end(tiny_workdir):
    work = tiny_workdir
    snakemake(work, "--cores", "2", timeout=1800)
    res = work / "results" / "tiny"
    for name in (
        "model.cat",
        "loss.csv",
        "graph.png",
        "contact_sheet.png",
        "preview.png",
        "output_samples.png",
        "stability.png",
        "dataset_report.json",
        "dataset_cache.h5",
    ):
        assert (res / name).stat().st_size > 0, name
    assert (work / "results" / "overview.png").stat().st_size > 0
    frames = sorted(p.name for p in (res / "output").glob("tiny.*.exr"))
    assert frames == [f"tiny.{f}.exr" for f in range(1001, 1007)]
    assert (res / "train" / "progress.ost").exists()
    assert "Nothing to be done" in snakemake(work, "-n", "--cores", "2").stdout

    # More epochs: a compatible change. Only training (and what follows) reruns, and it
    # continues from the .ost instead of starting over.
    step_before = latest_step(work)
    config = tiny_config(work)
    config["shots"]["tiny"]["epochs"] = 15
    write_config(work, config)
    result = snakemake(work, "--cores", "2", timeout=1800)
    ran = {rule for rule, _ in planned_jobs(result)} or set(
        re.findall(r"^(?:local)?rule (\w+):", result.stdout + result.stderr, re.M)
    )
    assert "validate" not in ran and "cache" not in ran
    assert re.search(rf"resuming \S+ at step {step_before}\b", train_log(work)), train_log(work)
    assert latest_step(work) > step_before

    # An inference setting: inference only.
    config["shots"]["tiny"]["tile_overlap"] = 8
    write_config(work, config)
    plan = {rule for rule, _ in job_set(snakemake(work, "-n", "--cores", "2"))}
    assert plan == INFERENCE | {"all"}

    # The report holds the graph, contact sheet, preview, output frames and stability plot.
    snakemake(work, "--report", str(work / "report.html"), timeout=600)
    assert (work / "report.html").stat().st_size > 0


@pytest.mark.slow
def test_two_local_processes_train_the_shot_through_the_workflow(tiny_workdir):
    """train_tasks: 2 with the local executor: ccat_tf.launch starts two ranks on loopback
    that train one network; rank 0 alone writes the Data Directory (one run, one model)."""
    work = tiny_workdir
    config = tiny_config(work)
    config["shots"]["tiny"]["train_tasks"] = 2
    write_config(work, config)
    result = snakemake(work, "--cores", "2", "-p", "results/tiny/model.cat", timeout=1800)
    assert "python -m ccat_tf.launch --tasks 2 --nodes 1 --threads 2" in result.stderr
    log = train_log(work)
    for rank in (0, 1):  # the launcher's COPYCAT_* variables, on loopback
        assert f"distributed training: rank {rank} of 2 (COPYCAT, 127.0.0.1:" in log, log[:3000]
    assert "rank 1: trained 20 steps; rank 0 writes the model" in log
    data = work / "results" / "tiny" / "train"
    (run,) = json.loads((data / "runs.json").read_text())["runs"]
    assert (run["status"], run["last_step"], run["total_steps"]) == ("finished", 20, 20)
    assert (work / "results" / "tiny" / "model.cat").stat().st_size > 0
    assert sorted(p.name for p in data.glob("*.cat")) == [
        "run1.best.cat",
        "run1.step0000010.cat",
        "run1.step0000020.cat",
    ]


def ran_rules(result: subprocess.CompletedProcess) -> set[str]:
    """Rules a real (not dry) run executed, from its log."""
    return set(re.findall(r"^(?:local)?rule (\w+):", result.stdout + result.stderr, re.M))


@pytest.mark.slow
def test_no_retrain_edit_after_a_finished_shot_reruns_nothing(tiny_workdir):
    """Intervals, preview frames and the run name cannot change a finished model: after such an
    edit model.cat is the same file (bytes and date) and nothing made from it reruns; more
    epochs still resume the training."""
    work = tiny_workdir
    snakemake(work, "--cores", "2", timeout=1800)
    model = work / "results" / "tiny" / "model.cat"
    before = (model.read_bytes(), model.stat().st_mtime_ns)
    outputs = {p: p.stat().st_mtime_ns for p in (work / "results").rglob("*") if p.is_file()}

    config = tiny_config(work)
    config["shots"]["tiny"].update(
        checkpoint_interval=5, contact_sheet_interval=2, run_name="take2", preview_frames=1047
    )
    write_config(work, config)
    result = snakemake(work, "--cores", "2", timeout=600)
    assert ran_rules(result) <= {"validate", "all"}, result.stdout + result.stderr
    assert (model.read_bytes(), model.stat().st_mtime_ns) == before
    changed = {p for p, t in outputs.items() if p.stat().st_mtime_ns != t}
    rechecked = {"tiny/dataset_report.json", "benchmarks/validate/tiny.tsv"}
    assert changed <= {work / "results" / p for p in rechecked}, changed
    assert "Nothing to be done" in snakemake(work, "-n", "--cores", "2").stdout

    step_before = latest_step(work)
    config["shots"]["tiny"]["epochs"] = 15
    write_config(work, config)
    result = snakemake(work, "--cores", "2", timeout=1800)
    assert "train" in ran_rules(result) and "cache" not in ran_rules(result)
    assert re.search(rf"resuming \S+ at step {step_before}\b", train_log(work)), train_log(work)
    assert latest_step(work) == 30
    assert model.stat().st_mtime_ns != before[1]


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _training_process(root: int) -> int | None:
    for pid in _descendants(root):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"ccat_tf" in cmdline and b"train" in cmdline:
            return pid
    return None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the training process through /proc")
def test_killed_training_resumes_on_the_next_call(tiny_workdir):
    work = tiny_workdir
    config = tiny_config(work)
    config["shots"]["tiny"].update(epochs=200, checkpoint_interval=10)  # 400 steps
    write_config(work, config)
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(SNAKEFILE),
        "-d",
        str(work),
        "--workflow-profile",
        "none",
        "--cores",
        "2",
        "results/tiny/model.cat",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 900
        while latest_step(work) < 20:  # a couple of checkpoints written
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "training made no progress"
            time.sleep(1)
        pid = _training_process(proc.pid)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, out
    assert not (work / "results" / "tiny" / "model.cat").exists()
    killed_at = latest_step(work)
    assert 0 < killed_at < 400

    snakemake(work, "--cores", "2", "results/tiny/model.cat", timeout=1800)
    log = train_log(work)
    assert re.search(r"resuming \S+ at step (\d+)", log), log
    resumed_at = int(re.search(r"resuming \S+ at step (\d+)", log).group(1))
    assert resumed_at >= killed_at - 10  # the last progress file written before the kill
    assert latest_step(work) == 400
    assert (work / "results" / "tiny" / "model.cat").exists()


def tiny_pretrain_settings(workdir: Path, **overrides) -> Path:
    """A copy of workflow/pretrain.yaml with a few steps per file, in ``workdir``."""
    settings = yaml.safe_load((REPO / "workflow" / "pretrain.yaml").read_text())
    settings.update(
        model_sizes=["small"],
        crop_size=32,
        batch_size=2,
        steps={task: {"small": 3} for task in settings["tasks"]},
    )
    settings.update(overrides)
    path = workdir / "pretrain.yaml"
    workdir.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(settings))
    return path


def test_pretrained_target_plans_every_task_and_size(tmp_path):
    write_config(tmp_path, {"shots": {"demo": demo_shot()}})
    result = snakemake(tmp_path, "-n", "pretrained")
    planned = sorted(
        w.get("task", "") + "_" + w.get("size", "")
        for r, w in planned_jobs(result)
        if r == "pretrain"
    )
    assert planned == sorted(
        f"{t}_{s}"
        for t in ("deblur", "upscale", "human_matting")
        for s in ("small", "medium", "large")
    )
    assert [r for r, _ in planned_jobs(result)].count("pretrain_corpus") == 1


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "pretrain_settings: cannot read"),
        ("tasks: [deblur]\n", "lacks batch_size, corpus"),
    ],
)
def test_bad_pretrain_settings_get_one_line(tmp_path, content, message):
    if content is not None:
        (tmp_path / "pretrain.yaml").write_text(content)
    write_config(tmp_path, {"shots": {"demo": demo_shot()}, "pretrain_settings": "pretrain.yaml"})
    result = snakemake(tmp_path, "-n", "pretrained", check=False)
    assert result.returncode != 0
    assert message in result.stderr + result.stdout


@pytest.mark.slow
def test_pretrained_target_builds_every_weight_file_from_scratch(tmp_path):
    """`snakemake pretrained` gathers the corpus, builds the tfds data set and trains each file."""
    from ccat_tf import catfile

    tiny_pretrain_settings(tmp_path)
    write_config(tmp_path, {"shots": {"demo": demo_shot()}, "pretrain_settings": "pretrain.yaml"})
    snakemake(tmp_path, "--cores", "2", "pretrained", timeout=900)
    assert (tmp_path / "results" / "pretrain" / "corpus" / "SOURCES.json").exists()
    for task in ("deblur", "upscale", "human_matting"):
        path = tmp_path / "ccat_tf" / "weights" / f"{task}_small.cat"
        net, meta = catfile.load_cat(path)
        assert meta["pretrained"]["task"] == task
        assert meta["pretrained"]["steps"] == 3
        assert meta["weights_dtype"] == "float16"
    assert "Nothing to be done" in snakemake(tmp_path, "-n", "pretrained").stdout
