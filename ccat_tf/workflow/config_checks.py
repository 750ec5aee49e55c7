"""The workflow's config checks: each problem is one line, ``config: <where>: <what>; <fix>``.

In the order the Snakefile runs them:

1. :func:`check_config_files` -- config.yaml and every ``--configfile`` read with ccat_tf's
   bounded loader before Snakemake reads them (size, aliases, duplicate keys);
2. :func:`check_config` -- the merged config (``--config`` values too) against the schema, with
   jsonschema's report turned into one line naming the key, then what a schema cannot say
   (frame specs that parse, patterns with one frame token);
3. :func:`check_inputs` -- every frame the shots name exists (and a checkpoint_file).

:func:`load_pretrain_settings` reads the ``pretrained`` target's settings file the same way.
``error`` is the exception class raised (the workflow passes ``WorkflowError``).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ccat_tf import frames as framespec
from ccat_tf import safe_load
from ccat_tf.errors import CcatError, SettingsError
from ccat_tf.settings import PretrainSettings
from ccat_tf.workflow import ConfigError
from ccat_tf.workflow.shots import INPUT_SEQUENCES, ShotPlan, frame_list, frame_path

#: The schema, relative to the repository root (the Snakefile's folder).
SCHEMA = Path("workflow") / "schemas" / "config.schema.yaml"


# ---- 1. the files -------------------------------------------------------------------------------


def check_config_files(
    default: str | os.PathLike,
    configfiles: Iterable[str | os.PathLike] = (),
    error: type[Exception] = ConfigError,
) -> None:
    """Read ``default`` (config.yaml, when it exists) and every ``--configfile`` with ccat_tf's
    bounded loader, before Snakemake does.

    Snakemake reads them with yaml.FullLoader (through yte): no size or alias limit, and the
    last of two equal keys silently wins. Each problem is one line naming the file and line
    (``config: config.yaml line 12: shot 'shotA' is defined twice; ...``).
    """
    files = [Path(f) for f in configfiles]
    if Path(default).exists():
        files.insert(0, Path(default))
    elif not files:
        raise error(
            f"config: {default} not found in {os.getcwd()}; write one (README: The workflow) "
            "or pass --configfile"
        )
    for path in files:
        try:
            data = safe_load.load_file(path)
        except safe_load.LoadError as err:
            raise error(f"config: {load_error_line(err)}") from None
        if data is not None and not isinstance(data, dict):
            raise error(f"config: {path} must hold a mapping (shots: ...); see config.yaml")


def load_error_line(err: safe_load.LoadError) -> str:
    """safe_load's message, in the config's words where it has them (a shot defined twice)."""
    if err.kind == "duplicate" and err.path == ("shots",):
        return (
            f"{err.source} line {err.line}: shot {err.key!r} is defined twice; give each "
            "shot its own name"
        )
    return str(err)


# ---- 2. the merged config -----------------------------------------------------------------------


def load_schema(basedir: str | os.PathLike) -> dict[str, Any]:
    """The workflow's config schema (``workflow/schemas/config.schema.yaml`` under ``basedir``)."""
    import yaml  # the schema is ours: plain safe_load

    return yaml.safe_load((Path(basedir) / SCHEMA).read_text())


def check_config(
    config: Mapping[str, Any], schema: Mapping[str, Any], error: type[Exception] = ConfigError
) -> None:
    """Check the raw config against ``schema``; raise one line naming the key.

    snakemake.utils.validate prints jsonschema's multi-line report (and crashes on a shot that
    is not a mapping), so this runs first and says e.g.
    ``config: shots.shotA.epochs: 'ten' is not of type 'integer'``.
    """
    import jsonschema

    # --config values (parsed by Snakemake, aliases and all) are bounded here too.
    try:
        safe_load.check_values(config, "the config (config files and --config)")
    except safe_load.LoadError as err:
        raise error(f"config: {err}") from None
    validator = jsonschema.Draft202012Validator(schema)
    best = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if best is not None:
        raise error(schema_error_line(best))
    # What a schema cannot say: frame specs that parse, patterns with one frame token.
    for shot, keys in config["shots"].items():
        for key in ("frames", "validation_frames", "preview_frames", "infer_frames"):
            if keys.get(key) not in (None, ""):
                try:
                    framespec.parse_frames(keys[key])
                except CcatError as err:
                    raise error(f"config: shots.{shot}.{key}: {err}") from None
        for key in ("input", "ground_truth", "preview"):
            if keys.get(key):
                try:
                    framespec.has_frame_token(keys[key])
                except CcatError as err:
                    raise error(f"config: shots.{shot}.{key}: {err}") from None


def schema_error_line(error) -> str:
    """A jsonschema ValidationError as one ``config: <key path>: ...`` line."""
    path = ".".join(str(p) for p in error.absolute_path)
    where = f"config: {path}" if path else "config"
    if error.validator in ("additionalProperties", "unevaluatedProperties"):
        known = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(known))
        if extra:
            key = extra[0]
            hint = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean '{hint[0]}'?)" if hint else ""
            prefix = f"{path}.{key}" if path else key
            return f"config: {prefix}: unknown key{hint}"
    if "propertyNames" in error.schema_path:
        return (
            f"{where}: shot name {error.instance!r} is not a safe file name; use letters, "
            "digits, _ and - (starting with a letter or digit), and not 'benchmarks'"
        )
    if error.validator in ("oneOf", "anyOf"):
        options = " or ".join(
            (
                s.get("description", s.get("type", s.get("const", "?")))
                if isinstance(s, dict)
                else str(s)
            )
            for s in error.schema[error.validator]
        )
        return f"{where}: {error.instance!r} is not valid; use {options}"
    if isinstance(error.schema, dict) and "errorMessage" in error.schema:
        return f"{where}: {error.instance!r} is not valid; {error.schema['errorMessage']}"
    return f"{where}: {error.message}"


# ---- 3. the files the shots name ----------------------------------------------------------------


def check_inputs(plan: ShotPlan, error: type[Exception] = ConfigError) -> None:
    """Every frame the shots train on, preview or apply to exists (and a checkpoint_file).

    Snakemake would stop at a missing input anyway, with a multi-line MissingInputException;
    this says which setting names it, in one line. One stat per frame, as Snakemake's own
    check. A checkpoint_file under results/ (another shot's model.cat) is made by the workflow.
    """
    for shot in plan.shots():
        s = plan.settings_of(shot)
        for key, frames_key in INPUT_SEQUENCES:
            pattern = s.get(key)
            missing = first_missing(pattern, s.get(frames_key)) if pattern else None
            if missing:
                frame, path = missing
                raise error(
                    f"config: shots.{shot}.{key}: frame {frame} ({path}) does not exist; "
                    f"render it or fix {frames_key}"
                )
        check_checkpoint_file(shot, s, error)


def first_missing(pattern: str, spec: Any) -> tuple[int, str] | None:
    """(frame, path) of the first frame of ``spec`` missing from sequence ``pattern``, or None."""
    for frame in frame_list(spec):
        path = frame_path(pattern, frame)
        if not os.path.exists(path):
            return frame, path
    return None


def check_checkpoint_file(
    shot: str, settings: Mapping[str, Any], error: type[Exception] = ConfigError
) -> None:
    ckpt = settings.get("checkpoint_file")
    if settings.get("initial_weights") != "checkpoint" or not ckpt or os.path.exists(ckpt):
        return
    if Path(os.path.relpath(os.path.abspath(ckpt))).parts[0] == "results":
        return  # another shot's model.cat: the workflow makes it
    raise error(
        f"config: shots.{shot}.checkpoint_file: {ckpt} does not exist; train that model "
        "first or fix checkpoint_file"
    )


# ---- the pretraining settings (workflow/rules/pretrain.smk) -------------------------------------

#: A pretraining settings file (workflow/pretrain.yaml) holds ccat_tf.settings.PretrainSettings'
#: fields, with the task and model size as lists (``tasks``, ``model_sizes``) and ``steps`` per
#: task and size; ``output`` and ``threads`` come from the rule.
_PER_JOB = {"task", "model_size", "output", "threads", "steps"}
PRETRAIN_KEYS = frozenset(
    {f.name for f in dataclasses.fields(PretrainSettings)} - _PER_JOB
    | {"tasks", "model_sizes", "steps"}
)


def load_pretrain_settings(
    path: str | os.PathLike, basedir: str | os.PathLike, error: type[Exception] = ConfigError
) -> dict[str, Any]:
    """workflow/pretrain.yaml (or the config's pretrain_settings), with one-line errors.

    A relative ``path`` is taken from the working directory, else from ``basedir`` (the
    Snakefile's folder, where the default workflow/pretrain.yaml is).
    """
    path = Path(path)
    if not path.is_absolute() and not path.exists():
        path = Path(basedir) / path
    try:
        settings = safe_load.load_file(path)
    except safe_load.LoadError as err:
        hint = ", or set pretrain_settings to a file like workflow/pretrain.yaml"
        hint = hint if err.kind == "unreadable" else ""
        raise error(f"config: pretrain_settings: {err}{hint}") from None
    if not isinstance(settings, dict):
        raise error(
            f"config: pretrain_settings: {path} must hold a mapping; copy workflow/pretrain.yaml"
        )
    missing = PRETRAIN_KEYS - set(settings)
    if missing:
        raise error(
            f"config: pretrain_settings: {path} lacks {', '.join(sorted(missing))}; "
            "copy them from workflow/pretrain.yaml"
        )
    for key in ("tasks", "model_sizes"):
        if not isinstance(settings[key], list) or not all(
            isinstance(v, str) for v in settings[key]
        ):
            raise error(
                f"config: pretrain_settings: {path}: {key} must be a list of names, as in "
                "workflow/pretrain.yaml"
            )
    steps = settings["steps"] if isinstance(settings["steps"], dict) else {}
    steps = {k: v for k, v in steps.items() if isinstance(v, dict)}
    shared = {k: settings[k] for k in PRETRAIN_KEYS - {"tasks", "model_sizes", "steps"}}
    for task in settings["tasks"]:
        for size in settings["model_sizes"]:
            count = (steps.get(task) or {}).get(size)
            if not isinstance(count, int) or isinstance(count, bool):
                raise error(
                    f"config: pretrain_settings: {path}: steps.{task}.{size} must be a whole number"
                )
            job = {"task": task, "model_size": size, "steps": count, "output": "job.cat"}
            try:  # the same checks (choices, ranges) as ccat-tf pretrain
                PretrainSettings.from_mapping({**shared, **job})
            except SettingsError as err:
                raise error(f"config: pretrain_settings: {path}: {err}") from None
    return settings


def pretrain_source_args(settings: Mapping[str, Any]) -> str:
    """``--pairs DIR`` (a studio's own pairs) or ``--corpus DIR`` for ``ccat-tf pretrain``."""
    if settings["pairs"]:
        return f"--pairs {shlex.quote(str(settings['pairs']))}"
    return f"--corpus {shlex.quote(str(settings['corpus']))}"
