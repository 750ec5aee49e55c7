"""The workflow's config schema: it accepts the shipped configs, mirrors the settings dataclasses,
fills defaults in one place, and rejects unknown keys and wrong types with the key's path."""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from ccat_tf.settings import InferSettings, TrainSettings

REPO = Path(__file__).resolve().parents[1]
SCHEMA_FILE = REPO / "workflow" / "schemas" / "config.schema.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]

# The keys a shot names itself and the ones the workflow fills in (ccat_tf/workflow/shots.py).
from ccat_tf.workflow import shots  # noqa: E402

SHOT_KEYS, MANAGED_KEYS = set(shots.SHOT_KEYS), set(shots.MANAGED_KEYS)
LAUNCH_KEYS = set(shots.LAUNCH_KEYS)  # per process, from the launcher: never in the config

# Per-shot keys of the workflow alone (described in the schema, the one place that says them).
WORKFLOW_ONLY_KEYS = {"output_format", "train_tasks", "train_nodes"}


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_FILE.read_text())


def snakemake_validate(config: dict) -> dict:
    """snakemake.utils.validate as the Snakefile calls it; returns the config with defaults."""
    from snakemake.utils import validate

    config = copy.deepcopy(config)
    validate(config, str(SCHEMA_FILE))
    return config


def dataclass_defaults(cls) -> dict:
    out = {}
    for f in dataclasses.fields(cls):
        out[f.name] = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return out


def test_schema_is_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(load_schema())


@pytest.mark.parametrize("path", ["config.yaml", "tests/configs/tiny.yaml"])
def test_shipped_configs_are_valid(path):
    config = yaml.safe_load((REPO / path).read_text())
    jsonschema.Draft202012Validator(load_schema()).validate(config)
    filled = snakemake_validate(config)
    assert filled["defaults"]["epochs"] == 10000
    assert filled["infer_chunk_size"] >= 1


def test_defaults_mirror_the_settings_dataclasses():
    """Every TrainSettings/InferSettings key is a default (with the same value), a shot's own
    key, or filled in by the workflow; nothing else is."""
    props = load_schema()["properties"]["defaults"]["properties"]
    settings = {**dataclass_defaults(InferSettings), **dataclass_defaults(TrainSettings)}
    expected = set(settings) - SHOT_KEYS - MANAGED_KEYS - LAUNCH_KEYS - {"input", "frames"}
    assert set(props) - WORKFLOW_ONLY_KEYS == expected
    for key in expected:
        assert "default" in props[key], key
        assert props[key]["default"] == settings[key], key
        assert props[key].get("description"), key


def test_every_default_can_be_overridden_by_a_shot_with_the_same_type():
    schema = load_schema()
    defaults = schema["properties"]["defaults"]["properties"]
    shot = schema["$defs"]["shot"]["properties"]
    for key in defaults:
        assert shot[key] == {"$ref": f"#/properties/defaults/properties/{key}"}, key
    assert set(shot) - set(defaults) == SHOT_KEYS | {"infer_frames"}


def test_defaults_are_filled_but_shots_keep_only_their_own_keys():
    config = {"shots": {"a": {"input": "a.####.exr", "ground_truth": "b.####.exr", "frames": 1}}}
    filled = snakemake_validate(config)
    assert filled["defaults"]["model_size"] == "auto"
    assert filled["defaults"]["tile_size"] == "auto"
    assert filled["infer_chunk_size"] == 24
    assert filled["train_gpus"] == 1
    # shots are not filled in: defaults: must be able to override the schema's defaults
    assert set(filled["shots"]["a"]) == {"input", "ground_truth", "frames"}


def test_defaults_section_overrides_schema_defaults():
    config = {
        "defaults": {"epochs": 5},
        "shots": {"a": {"input": "a.####.exr", "ground_truth": "b.####.exr", "frames": "1-4"}},
    }
    filled = snakemake_validate(config)
    assert filled["defaults"]["epochs"] == 5
    assert filled["defaults"]["crop_size"] == 256


@pytest.mark.parametrize(
    "shot_update",
    [
        {"epochs": "ten"},
        {"epoch": 10},
        {"model_size": "huge"},
        {"frames": "1001-1010y"},
        {"batch_size": 0},
        {"input": "plate.exr"},
    ],
)
def test_jsonschema_rejects_bad_shots(shot_update):
    shot = {"input": "a.####.exr", "ground_truth": "b.####.exr", "frames": "1-4", **shot_update}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(load_schema()).validate({"shots": {"a": shot}})


# ---- the messages a user sees (through Snakemake, as when running the workflow) ---------------


def run_dry(tmp_path: Path, config: dict) -> subprocess.CompletedProcess:
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    return subprocess.run(
        [
            *SNAKEMAKE,
            "-s",
            str(REPO / "Snakefile"),
            "-d",
            str(tmp_path),
            "-n",
            "--cores",
            "1",
            "--workflow-profile",
            "none",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def demo_shot(**overrides) -> dict:
    shot = {
        "input": str(REPO / "demo/bikes/plate/bikes.####.png"),
        "ground_truth": str(REPO / "demo/bikes/groundtruth/bikes.####.png"),
        "frames": "1001-1019x6",
    }
    shot.update(overrides)
    return shot


@pytest.mark.parametrize(
    "config, message",
    [
        (
            {"shots": {"shotA": demo_shot(epochs="ten")}},
            "config: shots.shotA.epochs: 'ten' is not of type 'integer'",
        ),
        (
            {"shots": {"shotA": demo_shot(epoch=10)}},
            "config: shots.shotA.epoch: unknown key (did you mean 'epochs'?)",
        ),
        (
            {"defaults": {"modelsize": "small"}, "shots": {"shotA": demo_shot()}},
            "config: defaults.modelsize: unknown key (did you mean 'model_size'?)",
        ),
        (
            {"defaults": {"model_size": "huge"}, "shots": {"shotA": demo_shot()}},
            "config: defaults.model_size: 'huge' is not one of ['auto', 'small', 'medium', 'large']",
        ),
        (
            {"shots": {"shotA": demo_shot(batch_size="big")}},
            "config: shots.shotA.batch_size: 'big' is not valid; use 'auto' or a whole number",
        ),
        (
            {"shots": {"shotA": demo_shot(frames="1001-1010y")}},
            "config: shots.shotA.frames: '1001-1010y' is not valid; use frames such as",
        ),
        (
            {"shots": {"shot A": demo_shot()}},
            "config: shots: shot name 'shot A' is not a safe file name",
        ),
        (
            {"shots": {"shotA": demo_shot()}, "infer_chunksize": 3},
            "config: infer_chunksize: unknown key (did you mean 'infer_chunk_size'?)",
        ),
    ],
    ids=["type", "unknown-shot-key", "unknown-default", "enum", "oneOf", "frames", "name", "top"],
)
def test_snakemake_names_the_bad_key_in_one_line(tmp_path, config, message):
    result = run_dry(tmp_path, config)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    lines = [line for line in output.splitlines() if line.startswith("config:")]
    assert lines, output
    assert lines[0].startswith(message), lines[0]


def test_output_data_types_match_the_package():
    from ccat_tf.settings import OUTPUT_DATA_TYPES

    enum = load_schema()["properties"]["defaults"]["properties"]["output_data_type"]["enum"]
    assert sorted(enum) == sorted(OUTPUT_DATA_TYPES)


def _numeric_schema(prop: dict) -> dict:
    """The integer/number branch of a property (``auto``-or-number settings use oneOf)."""
    for branch in prop.get("oneOf", [prop]):
        if branch.get("type") in ("integer", "number"):
            return branch
    raise AssertionError(f"no numeric branch in {prop}")


def test_numeric_ranges_mirror_the_settings_ranges():
    """Every numeric setting's range (ccat_tf.settings.RANGES) is the schema's minimum/maximum."""
    from ccat_tf.settings import RANGES

    props = load_schema()["properties"]["defaults"]["properties"]
    numeric = {k for k, v in props.items() if _numeric_schema_or_none(v)} - WORKFLOW_ONLY_KEYS
    assert numeric == set(RANGES) - LAUNCH_KEYS
    for key in numeric:
        limits = RANGES[key]
        branch = _numeric_schema(props[key])
        low = "exclusiveMinimum" if limits.above else "minimum"
        assert branch[low] == limits.low, key
        assert branch["maximum"] == limits.high, key
        assert branch["type"] == ("integer" if limits.integer else "number"), key


def _numeric_schema_or_none(prop: dict):
    try:
        return _numeric_schema(prop)
    except AssertionError:
        return None


def test_descriptions_and_choices_are_the_settings_own():
    """Each setting is described once (ccat_tf.settings): the schema's description is its help
    text and an enum its choices."""
    from ccat_tf.settings import describe

    props = load_schema()["properties"]["defaults"]["properties"]
    said = {**describe(InferSettings), **describe(TrainSettings)}
    for key, prop in props.items():
        if key in WORKFLOW_ONLY_KEYS:
            continue
        assert prop["description"] == said[key]["help"], key
        if said[key]["choices"]:
            assert prop["enum"] == list(said[key]["choices"]), key
