"""ccat_tf.workflow: the Snakemake workflow's Python, imported directly (no Snakemake run).

Config checks (a good config, and each kind of error as one ``config:`` line), each shot's
settings and the rules' params (what reruns what), paths, inference chunks, targets, the images
jobs and the shell prefix. tests/test_workflow.py runs the workflow itself.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import REPO

from ccat_tf.workflow import ConfigError, config_checks, images, shell, shots
from ccat_tf.workflow.shots import ShotPlan

SCHEMA = config_checks.load_schema(REPO)
PLATE = "demo/bikes/plate/bikes.####.png"
GROUND_TRUTH = "demo/bikes/groundtruth/bikes.####.png"


def shot(**overrides) -> dict:
    s = {
        "input": PLATE,
        "ground_truth": GROUND_TRUTH,
        "frames": "1001-1019x6",
        "preview": PLATE,
        "preview_frames": 1048,
        "infer_frames": "1001-1005",
    }
    s.update(overrides)
    return s


def validated(config: dict) -> dict:
    """The config as the rules see it: checked, then the schema's defaults filled in."""
    from snakemake.utils import validate

    config = copy.deepcopy(config)
    config_checks.check_config(config, SCHEMA)
    validate(config, str(REPO / config_checks.SCHEMA))
    return config


def plan_of(config: dict) -> ShotPlan:
    return ShotPlan(validated(config))


def wc(**kw) -> SimpleNamespace:
    return SimpleNamespace(**kw)


def one_line_error(call, *args, match: str, **kw) -> str:
    with pytest.raises(ConfigError) as err:
        call(*args, **kw)
    message = str(err.value)
    assert "\n" not in message, message
    assert match in message, message
    return message


# ---- config checks ------------------------------------------------------------------------------


def test_the_repository_config_passes_every_check(monkeypatch):
    monkeypatch.chdir(REPO)
    config_checks.check_config_files("config.yaml")
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    plan = plan_of(config)
    config_checks.check_inputs(plan)
    assert plan.shots() == ["bikes"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"shots": {"A": shot(epochs="ten")}}, "config: shots.A.epochs: 'ten' is not of type"),
        ({"shots": {"A": shot(epocs=5)}}, "config: shots.A.epocs: unknown key (did you mean"),
        ({"shots": {"A": shot()}, "colour": 1}, "config: colour: unknown key"),
        ({"shots": {"bad name": shot()}}, "shot name 'bad name' is not a safe file name"),
        ({"shots": {"benchmarks": shot()}}, "and not 'benchmarks'"),
        ({"shots": {"A": shot(batch_size="many")}}, "config: shots.A.batch_size: 'many' is not"),
        (
            {"shots": {"A": shot(output_format=".exr")}},
            "shots.A.output_format: '.exr' is not valid; use a file extension",
        ),
        ({"shots": {"A": shot(frames="1010-1001")}}, "config: shots.A.frames: frames '1010-1001'"),
        ({"shots": {"A": shot(input="plate.exr")}}, "config: shots.A.input:"),
        ({"shots": {}}, "config: shots:"),
    ],
    ids=[
        "type",
        "unknown-shot-key",
        "unknown-top-key",
        "shot-name",
        "reserved-shot-name",
        "one-of",
        "error-message",
        "frame-spec",
        "frame-token",
        "no-shots",
    ],
)
def test_each_config_error_is_one_line_naming_the_key(change, message):
    line = one_line_error(config_checks.check_config, change, SCHEMA, match=message)
    assert line.startswith("config")


def test_too_many_values_from_the_command_line_are_refused():
    config = {"shots": {"A": shot(frames=list(range(1001, 1001 + 100_001)))}}
    one_line_error(config_checks.check_config, config, SCHEMA, match="more than 100000 values")


def test_the_error_class_is_the_callers():
    class WorkflowError(Exception):
        pass

    with pytest.raises(WorkflowError, match="^config: shots.A.epochs"):
        config_checks.check_config({"shots": {"A": shot(epochs=0)}}, SCHEMA, error=WorkflowError)


def test_config_files_are_read_within_limits(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_line_error(config_checks.check_config_files, "config.yaml", match="config.yaml not found")
    Path("config.yaml").write_text("shots:\n  A: {frames: 1}\n  A: {frames: 2}\n")
    one_line_error(
        config_checks.check_config_files,
        "config.yaml",
        match="config: config.yaml line 3: shot 'A' is defined twice; give each shot its own name",
    )
    Path("config.yaml").write_text("- a list\n")
    one_line_error(config_checks.check_config_files, "config.yaml", match="must hold a mapping")
    Path("config.yaml").write_text("shots: {}\n")
    Path("other.yaml").write_text("a: 1\na: 2\n")
    one_line_error(
        config_checks.check_config_files,
        "config.yaml",
        ["other.yaml"],
        match="other.yaml line 2: a is given twice",
    )
    config_checks.check_config_files("absent.yaml", ["config.yaml"])  # --configfile alone


def test_missing_frames_and_checkpoint_files_name_the_setting(monkeypatch):
    monkeypatch.chdir(REPO)
    plan = plan_of({"shots": {"A": shot(validation_frames="1016,1099")}})
    one_line_error(
        config_checks.check_inputs,
        plan,
        match=(
            "config: shots.A.input: frame 1099 (demo/bikes/plate/bikes.1099.png) does not "
            "exist; render it or fix validation_frames"
        ),
    )
    other = plan_of({"shots": {"A": shot(initial_weights="checkpoint", checkpoint_file="x.cat")}})
    one_line_error(
        config_checks.check_inputs, other, match="shots.A.checkpoint_file: x.cat does not exist"
    )
    made = {"shots": {"A": shot(initial_weights="checkpoint", checkpoint_file="results/B/m.cat")}}
    config_checks.check_inputs(plan_of(made))  # another shot's model: the workflow makes it


def test_pretrain_settings(tmp_path):
    settings = config_checks.load_pretrain_settings("workflow/pretrain.yaml", REPO)
    assert set(settings) >= config_checks.PRETRAIN_KEYS
    assert config_checks.pretrain_source_args(settings) == f"--corpus {settings['corpus']}"
    studio = dict(settings, pairs="/studio/my pairs")
    assert config_checks.pretrain_source_args(studio) == "--pairs '/studio/my pairs'"
    one_line_error(
        config_checks.load_pretrain_settings,
        tmp_path / "none.yaml",
        REPO,
        match="config: pretrain_settings: cannot read",
    )
    (tmp_path / "p.yaml").write_text("tasks: [deblur]\n")
    one_line_error(
        config_checks.load_pretrain_settings,
        tmp_path / "p.yaml",
        REPO,
        match="lacks batch_size, corpus",
    )
    broken = dict(settings, steps={"deblur": {"small": "many"}}, model_sizes=["small"])
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(dict(broken, tasks=["deblur"])))
    one_line_error(
        config_checks.load_pretrain_settings,
        tmp_path / "p.yaml",
        REPO,
        match="steps.deblur.small must be a whole number",
    )
    # The values go through PretrainSettings' own checks (ranges, choices), as ccat-tf pretrain.
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(dict(settings, batch_size=0)))
    one_line_error(
        config_checks.load_pretrain_settings,
        tmp_path / "p.yaml",
        REPO,
        match="batch_size is 0; use a whole number from 1 to 1024",
    )
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(dict(settings, weights_dtype="int8")))
    one_line_error(
        config_checks.load_pretrain_settings,
        tmp_path / "p.yaml",
        REPO,
        match="weights_dtype 'int8' is unknown; use one of float16, float32",
    )


# ---- settings and params ------------------------------------------------------------------------


def test_settings_come_from_schema_defaults_then_defaults_then_the_shot():
    plan = plan_of(
        {"defaults": {"model_size": "small", "epochs": 7}, "shots": {"A": shot(epochs=9)}}
    )
    s = plan.settings_of("A")
    assert (s["model_size"], s["epochs"], s["crop_size"]) == ("small", 9, 256)
    assert plan.shot_pattern() == "A"


def test_params_split_the_settings_by_what_they_rerun():
    plan = plan_of(
        {
            "shots": {
                "A": shot(
                    checkpoint_interval=50, preview_frames=[1047, 1048], validation_frames=1016
                )
            }
        }
    )
    w = wc(shot="A")
    model = json.loads(plan.model_settings_json(w))
    train = json.loads(plan.train_settings_json(w, input=None))
    infer = json.loads(plan.infer_settings_json(w))
    assert model["epochs"] == 10000 and "checkpoint_interval" not in model
    assert train["checkpoint_interval"] == 50 and train["preview_frames"] == "1047-1048"
    assert set(train) == set(model) | set(shots.NO_RETRAIN_KEYS)
    assert "tile_size" in infer and "epochs" not in infer and "frames" not in infer
    assert not set(train) & set(shots.MANAGED_KEYS)
    # temporal_consistency is there only when on (the cache then holds the warped neighbours)
    cache_keys = set(shots.CACHE_KEYS) - {"preview", "temporal_consistency"}
    assert set(json.loads(plan.cache_settings_json(w))) == cache_keys
    assert "crop_size" in json.loads(plan.validate_settings_json(w))
    # sorted, compact JSON: Snakemake compares params as text
    assert plan.model_settings_json(w) == json.dumps(model, sort_keys=True, separators=(",", ":"))


def test_train_tasks_and_nodes_make_the_training_a_multi_task_job():
    plan = plan_of(
        {
            "train_gpus": 2,
            "defaults": {"train_tasks": 2},
            # C overrides the defaults back to one process
            "shots": {
                "A": shot(),
                "B": shot(train_tasks=4, train_nodes=2),
                "C": shot(train_tasks=1),
            },
        }
    )
    a, b, c = wc(shot="A"), wc(shot="B"), wc(shot="C")
    # (tasks, nodes, the slurm plugin's mpi resource, GPUs of the whole job)
    assert (plan.train_tasks(a), plan.train_nodes(a), plan.train_mpi(a), plan.train_gpus(a)) == (
        2,
        1,
        "srun",
        4,
    )
    assert (plan.train_tasks(b), plan.train_nodes(b), plan.train_gpus(b)) == (4, 2, 8)
    # one process: no mpi resource at all (the plugin wraps the job in its own srun -n1)
    assert (plan.train_tasks(c), plan.train_mpi(c), plan.train_gpus(c)) == (1, None, 2)
    # how the processes meet is the launcher's business, never a setting passed to the training
    train = json.loads(plan.train_settings_json(a, input=None))
    assert not set(train) & ({"train_tasks", "train_nodes"} | set(shots.LAUNCH_KEYS))
    assert "rank" in shots.LAUNCH_KEYS and "world_size" in shots.LAUNCH_KEYS


def test_more_training_machines_than_processes_is_one_line():
    plan = plan_of({"shots": {"A": shot(train_tasks=2, train_nodes=3)}})
    one_line_error(
        plan.train_nodes, wc(shot="A"), match="config: shots.A.train_nodes: 3 machines for 2"
    )
    with pytest.raises(Exception, match="train_tasks"):
        validated({"shots": {"A": shot(train_tasks=0)}})


def test_the_full_training_settings_are_derived_from_input():
    """Snakemake leaves params computed from `input` out of its params rerun trigger: that is
    how the no-retrain settings reach `ccat-tf train` without rerunning a finished training.
    (tests/test_workflow.py checks Snakemake's side of it.)"""
    assert "input" in inspect.signature(ShotPlan(None).train_settings_json).parameters
    assert "input" not in inspect.signature(ShotPlan(None).model_settings_json).parameters


def test_no_retrain_keys_are_the_training_engines_compatible_keys_but_epochs():
    from ccat_tf.training import COMPATIBLE_KEYS

    fixed_by_the_workflow = set(shots.MANAGED_KEYS) | set(shots.LAUNCH_KEYS)
    assert set(shots.NO_RETRAIN_KEYS) == COMPATIBLE_KEYS - {"epochs"} - fixed_by_the_workflow
    assert "checkpoint_interval" in shots.NO_RETRAIN_KEYS and "model_size" in shots.MODEL_KEYS
    assert set(shots.NO_RETRAIN_KEYS) <= set(shots.TRAIN_KEYS)


# ---- paths, chunks, targets ---------------------------------------------------------------------


def test_paths_and_files():
    plan = plan_of(
        {
            "shots": {
                "A": shot(validation_frames=1016),
                "B": shot(initial_weights="checkpoint", checkpoint_file="results/A/model.cat"),
            }
        }
    )
    assert plan.train_directory(wc(shot="A")) == "results/A/train"
    assert plan.all_train_directories(None) == ["results/A/train", "results/B/train"]
    assert plan.all_models(None) == ["results/A/model.cat", "results/B/model.cat"]
    assert plan.shots_of(None) == ["A", "B"]
    pairs = plan.pair_files(wc(shot="A"))
    assert pairs[0] == "demo/bikes/plate/bikes.1001.png" and len(pairs) == 8
    assert pairs[-1] == "demo/bikes/groundtruth/bikes.1019.png"
    dataset = plan.dataset_files(wc(shot="A"))
    assert "demo/bikes/groundtruth/bikes.1016.png" in dataset
    assert dataset[-1] == "demo/bikes/plate/bikes.1048.png"  # the preview frame
    assert plan.train_extra_files(wc(shot="A")) == []
    assert plan.train_extra_files(wc(shot="B")) == ["results/A/model.cat"]
    assert plan.input_pattern(wc(shot="A")) == PLATE


def test_chunks_cut_the_sorted_infer_frames():
    plan = plan_of({"infer_chunk_size": 2, "shots": {"A": shot(infer_frames="1005,1001-1004")}})
    assert plan.chunks_of("A") == {
        "1001-1002": [1001, 1002],
        "1003-1004": [1003, 1004],
        "1005-1005": [1005],
    }
    w = wc(shot="A", chunk="1003-1004")
    assert plan.chunk_frame_spec(w) == "1003-1004"
    assert plan.chunk_input_files(w)[0] == "demo/bikes/plate/bikes.1003.png"
    assert plan.chunk_output_pattern(w) == "results/A/chunks/1003-1004/A.####.exr"
    assert plan.chunk_dirs(w)[-1] == "results/A/chunks/1005-1005"
    blend = plan_of(
        {"infer_chunk_size": 2, "shots": {"A": shot(infer_frames="1001-1005", temporal_blend=0.5)}}
    )
    assert blend.chunk_input_files(w) == [  # the neighbours the blend reads are inputs too
        f"demo/bikes/plate/bikes.{f}.png" for f in (1003, 1004, 1002, 1005)
    ]
    first = blend.chunk_input_files(wc(shot="A", chunk="1001-1002"))
    assert first == [f"demo/bikes/plate/bikes.{f}.png" for f in (1001, 1002, 1003)]  # no 1000
    assert plan.infer_frame_count(w) == 5
    assert plan.sample_frames("A") == [1001, 1003, 1005]
    one_line_error(plan.chunk_frames, wc(shot="A", chunk="1001-1003"), match="chunks: 1001-1002")


def test_targets_follow_the_shots_settings():
    bare = shot()
    for key in ("preview", "preview_frames", "infer_frames"):
        del bare[key]
    plan = plan_of({"shots": {"A": shot(), "B": bare}})
    assert plan.shot_targets("B") == [
        "results/B/dataset_report.json",
        "results/B/model.cat",
        "results/B/loss.csv",
        "results/B/graph.png",
        "results/B/contact_sheet.png",
    ]
    assert {
        "results/A/preview.png",
        "results/A/output",
        "results/A/output_samples.png",
        "results/A/stability.png",
    } <= set(plan.shot_targets("A"))
    # one rendered frame: samples, but no flicker to measure
    one = plan_of({"shots": {"C": shot(infer_frames=1001)}}).shot_targets("C")
    assert "results/C/output_samples.png" in one and "results/C/stability.png" not in one
    assert plan.all_targets(None)[0] == "results/overview.png"


# ---- images -------------------------------------------------------------------------------------


def touch(path: Path, mtime: float) -> Path:
    path.write_bytes(path.name.encode())
    os.utime(path, (mtime, mtime))
    return path


def test_copy_latest_image_takes_the_latest_runs_highest_step(tmp_path, capsys):
    train = tmp_path / "train"
    train.mkdir()
    touch(train / "run1.contact.step0000900.png", 3000)  # the old run: newer file dates
    touch(train / "run2.contact.step0000100.png", 1000)
    touch(train / "run2.contact.step0000200.png", 900)
    runs = [{"id": 1, "name": "run1"}, {"id": 2, "name": "run2"}]
    (train / "runs.json").write_text(json.dumps({"runs": runs}))
    out = tmp_path / "contact_sheet.png"
    src = images.copy_latest_image(train, "contact", out)
    assert src.name == "run2.contact.step0000200.png"
    assert out.read_bytes() == b"run2.contact.step0000200.png"
    one_line_error(images.copy_latest_image, train, "preview", out, match="no preview image")
    # the contact_sheet and preview rules' command
    assert images.main([str(train), "contact", str(tmp_path / "again.png")]) == 0
    assert "run2.contact.step0000200.png to " in capsys.readouterr().out
    assert images.main([str(train), "preview", str(tmp_path / "p.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ccat-tf: error: no preview image") and err.count("\n") == 1
    assert not (tmp_path / "p.png").exists()


def test_gather_frames_links_every_chunk_and_counts(tmp_path):
    for chunk, frames in (("1-2", (1, 2)), ("3-3", (3,))):
        (tmp_path / chunk).mkdir()
        (tmp_path / chunk / ".snakemake_timestamp").touch()
        for f in frames:
            (tmp_path / chunk / f"A.{f:04d}.exr").write_text(str(f))
    chunks = [tmp_path / "1-2", tmp_path / "3-3"]
    names = images.gather_frames(chunks, tmp_path / "out", 3, tmp_path / "log")
    assert names == ["A.0001.exr", "A.0002.exr", "A.0003.exr"]
    assert (tmp_path / "out" / "A.0003.exr").read_text() == "3"
    one_line_error(
        images.gather_frames,
        chunks,
        tmp_path / "out2",
        4,
        tmp_path / "log",
        match="expected 4 frames, the chunks hold 3",
    )


def test_samples_command_shows_plates_over_outputs():
    plan = plan_of({"shots": {"A": shot(input_channels="rgba", output_channels="alpha")}})
    command = plan.samples_command(
        wc(shot="A"), SimpleNamespace(frames="results/A/output"), SimpleNamespace(png="s.png")
    )
    assert command.startswith("oiiotool -i demo/bikes/plate/bikes.1001.png --ch R,G,B --resize")
    assert "-i results/A/output/A.1005.exr --ch A,A,A" in command
    assert command.endswith("--mosaic:pad=4 3x2 -d uint8 -o s.png")
    assert "--colorconvert" not in command  # PNG plates are display-referred already
    exr = images.samples_command(
        {"input": "p.####.exr", "input_channels": "rgb", "output_channels": ["Y"]},
        [1],
        "o.{frame:04d}.exr",
        "s.png",
    )
    assert "--colorconvert linear sRGB" in exr and "-i o.0001.exr --ch Y,Y,Y" in exr


def test_stability_command_names_the_output_its_plates_and_channels():
    plan = plan_of(
        {
            "shots": {
                "A": shot(
                    input_channels="rgba", output_channels=["alpha"], infer_frames="1001-1003,1005"
                )
            }
        }
    )
    w = wc(shot="A")
    assert plan.stability_plate_files(w) == [
        f"demo/bikes/plate/bikes.{f}.png" for f in (1001, 1002, 1003, 1005)
    ]
    command = plan.stability_command(
        w,
        SimpleNamespace(frames="results/A/output"),
        SimpleNamespace(png="results/A/stability.png"),
    )
    assert command == (
        "python -m ccat_tf stability 'results/A/output/A.####.exr' --input "
        "'demo/bikes/plate/bikes.####.png' --frames 1001-1003,1005 --input-channels rgba "
        "--output-channels alpha --title A --output results/A/stability.png"
    )


# ---- shell prefix -------------------------------------------------------------------------------


def test_shell_prefix_puts_the_checkout_first():
    prefix = shell.shell_prefix("/repo dir", conda=False, python="/venv/bin/python")
    assert prefix.startswith("set -euo pipefail; export PYTHONPATH='/repo dir'")
    assert "${{PYTHONPATH:+:$PYTHONPATH}}" in prefix  # braces doubled for Snakemake's format
    assert "export PATH=/venv/bin:" in prefix
    assert "PATH=" not in shell.shell_prefix("/repo", conda=True).replace("PYTHONPATH=", "")
