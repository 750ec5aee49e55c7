# Helper Python for the rules: config checks, each shot's effective settings, frame lists and
# chunks, file paths. No TensorFlow (nor numpy) here: a 50-shot dry run must stay under 5 s.

import difflib
import functools
import json
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError

# The package's settings dataclasses say which key belongs to which command, and its frames
# module reads frame specs and sequence patterns exactly as the commands will; safe_load reads
# YAML/JSON within limits. They import only the standard library and PyYAML (milliseconds, no
# TensorFlow); the repository root goes on sys.path so this works before `pip install -e .` and
# with Snakemake installed in another environment.
sys.path.insert(0, workflow.basedir)
from ccat_tf import frames as framespec  # noqa: E402
from ccat_tf import safe_load  # noqa: E402
from ccat_tf.errors import CcatError  # noqa: E402
from ccat_tf.settings import InferSettings, TrainSettings  # noqa: E402

SCHEMA_FILE = Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml"

# Keys each shot names itself (its sequences and frame lists); they never come from `defaults:`.
SHOT_KEYS = (
    "input",
    "ground_truth",
    "frames",
    "preview",
    "preview_frames",
    "validation_frames",
    "infer_frames",
)
# Settings the workflow fills in from the shot's name (paths under results/).
MANAGED_KEYS = ("data_directory", "cache_file", "model_file", "output")
# Keys only ccat-tf validate/cache need: the data set. Editing anything else must not rebuild
# the cache (crop_size/batch_size/model_size are checked by validate, so they go there too).
DATASET_KEYS = (
    "input",
    "ground_truth",
    "frames",
    "input_channels",
    "output_channels",
    "preview",
    "preview_frames",
    "validation_frames",
)
CACHE_KEYS = (
    "input",
    "ground_truth",
    "frames",
    "input_channels",
    "output_channels",
    "use_multi_resolution_training",
)
TRAIN_KEYS = tuple(
    f for f in TrainSettings.__dataclass_fields__ if f not in MANAGED_KEYS
)
INFER_KEYS = tuple(
    f
    for f in InferSettings.__dataclass_fields__
    if f not in MANAGED_KEYS and f not in ("input", "frames")
)


# ---- config checks ----------------------------------------------------------------------------


def check_config_files(default):
    """Read config.yaml and every --configfile with ccat_tf's bounded loader, before Snakemake.

    Snakemake reads them with yaml.FullLoader (through yte): no size or alias limit, and the
    last of two equal keys silently wins. Call this before `configfile:`; each problem is one
    line naming the file and line (``config: config.yaml line 12: shot 'shotA' is defined
    twice; ...``). Snakemake then reads the same, now checked, files as usual.
    """
    files = [Path(f) for f in workflow.overwrite_configfiles]
    if Path(default).exists():
        files.insert(0, Path(default))
    elif not files:
        raise WorkflowError(
            f"config: {default} not found in {os.getcwd()}; write one (README: The workflow) "
            "or pass --configfile"
        )
    for path in files:
        try:
            data = safe_load.load_file(path)
        except safe_load.LoadError as err:
            raise WorkflowError(f"config: {_load_error_line(err)}") from None
        if data is not None and not isinstance(data, dict):
            raise WorkflowError(
                f"config: {path} must hold a mapping (shots: ...); see config.yaml"
            )


def _load_error_line(err):
    """safe_load's message, in the config's words where it has them (a shot defined twice)."""
    if err.kind == "duplicate" and err.path == ("shots",):
        return (
            f"{err.source} line {err.line}: shot {err.key!r} is defined twice; give each "
            "shot its own name"
        )
    return str(err)


def check_config(config):
    """Validate the raw config against the schema; raise a one-line error naming the key.

    snakemake.utils.validate prints jsonschema's multi-line report (and crashes on a shot that
    is not a mapping), so this runs first and says e.g.
    ``config: shots.shotA.epochs: 'ten' is not of type 'integer'``.
    """
    import jsonschema

    # --config values (parsed by Snakemake, aliases and all) are bounded here too.
    try:
        safe_load.check_values(config, "the config (config files and --config)")
    except safe_load.LoadError as err:
        raise WorkflowError(f"config: {err}") from None
    schema = yaml.safe_load(SCHEMA_FILE.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        raise WorkflowError(_config_error_line(error, schema))
    # What a schema cannot say: frame specs that parse, patterns with one frame token.
    for shot, keys in config["shots"].items():
        for key in ("frames", "validation_frames", "preview_frames", "infer_frames"):
            if keys.get(key) not in (None, ""):
                try:
                    framespec.parse_frames(keys[key])
                except CcatError as err:
                    raise WorkflowError(f"config: shots.{shot}.{key}: {err}") from None
        for key in ("input", "ground_truth", "preview"):
            if keys.get(key):
                try:
                    framespec.has_frame_token(keys[key])
                except CcatError as err:
                    raise WorkflowError(f"config: shots.{shot}.{key}: {err}") from None


def check_inputs():
    """Every frame the shots train on, preview or apply to exists (and a checkpoint_file).

    Snakemake would stop at a missing input anyway, with a multi-line MissingInputException;
    this says which setting names it, in one line. One stat per frame, as Snakemake's own
    check. A checkpoint_file under results/ (another shot's model.cat) is made by the workflow.
    """
    for shot in shots():
        s = settings_of(shot)
        for key, frames_key in INPUT_SEQUENCES:
            pattern = s.get(key)
            missing = _first_missing(pattern, s.get(frames_key)) if pattern else None
            if missing:
                frame, path = missing
                raise WorkflowError(
                    f"config: shots.{shot}.{key}: frame {frame} ({path}) does not exist; "
                    f"render it or fix {frames_key}"
                )
        _check_checkpoint(shot, s)


def _check_checkpoint(shot, s):
    ckpt = s.get("checkpoint_file")
    if s.get("initial_weights") != "checkpoint" or not ckpt or os.path.exists(ckpt):
        return
    if Path(os.path.relpath(os.path.abspath(ckpt))).parts[0] == "results":
        return  # another shot's model.cat: the workflow makes it
    raise WorkflowError(
        f"config: shots.{shot}.checkpoint_file: {ckpt} does not exist; train that model "
        "first or fix checkpoint_file"
    )


# (sequence, the key naming its frames) for every image a shot's jobs read.
INPUT_SEQUENCES = (
    ("input", "frames"),
    ("ground_truth", "frames"),
    ("input", "validation_frames"),
    ("ground_truth", "validation_frames"),
    ("preview", "preview_frames"),
    ("input", "infer_frames"),
)


def _first_missing(pattern, spec):
    for frame in frame_list(spec):
        path = frame_path(pattern, frame)
        if not os.path.exists(path):
            return frame, path
    return None


def _config_error_line(error, schema):
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
    if error.validator == "oneOf" or error.validator == "anyOf":
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
        return (
            f"{where}: {error.instance!r} is not valid; {error.schema['errorMessage']}"
        )
    return f"{where}: {error.message}"


# ---- shots and their settings ----------------------------------------------------------------


def shots():
    return list(config["shots"])


# The config is fixed once validated, so per-shot results are cached (DAG building calls these
# for every job). Callers must not modify what they return.
@functools.cache
def settings_of(shot):
    """The shot's effective settings: schema defaults <- config `defaults:` <- the shot."""
    merged = dict(config["defaults"])
    merged.update(config["shots"][shot])
    return merged


def _json(mapping):
    # sort_keys: params are compared as text by Snakemake's rerun triggers.
    return json.dumps(mapping, sort_keys=True, separators=(",", ":"))


FRAME_KEYS = ("frames", "validation_frames", "preview_frames", "infer_frames")


def _pick(shot, keys):
    s = settings_of(shot)
    picked = {k: s[k] for k in keys if k in s}
    for k in FRAME_KEYS:
        # the settings hold frame specs as text; YAML may give a number or a list
        if k in picked and not isinstance(picked[k], str):
            picked[k] = frame_spec(frame_list(picked[k]))
    return picked


def dataset_settings_json(wildcards):
    """What ccat-tf validate checks: the data set plus the knobs it checks against the frames."""
    keys = DATASET_KEYS + ("crop_size", "batch_size", "model_size")
    return _json(_pick(wildcards.shot, keys))


def cache_settings_json(wildcards):
    return _json(_pick(wildcards.shot, CACHE_KEYS))


def train_settings_json(wildcards):
    """Every training setting of the shot: editing any of them reruns this shot's training only."""
    return _json(_pick(wildcards.shot, TRAIN_KEYS))


def infer_settings_json(wildcards):
    """Every inference setting of the shot: editing them reruns this shot's inference only."""
    return _json(_pick(wildcards.shot, INFER_KEYS))


def output_ext(shot):
    return settings_of(shot)["output_format"]


def data_directory(shot):
    """The shot's CopyCat Data Directory (checkpoints, .ost, contact sheets, .summary)."""
    return f"results/{shot}/train"


def train_directory(wildcards):
    return data_directory(wildcards.shot)


def all_train_directories(wildcards):
    return [data_directory(shot) for shot in shots()]


def shots_of(wildcards):
    return shots()


def all_models(wildcards):
    return [f"results/{shot}/model.cat" for shot in shots()]


# ---- frames -----------------------------------------------------------------------------------


def frame_list(spec):
    """A frame spec (``1001-1100x10``, ``1001,1010``, a list, ...) -> frame numbers."""
    return framespec.parse_frames(spec) if spec not in (None, "") else []


def frame_spec(frames):
    return framespec.format_frames(frames)


def frame_path(pattern, frame):
    return framespec.frame_path(pattern, frame)


# ---- inference chunks -------------------------------------------------------------------------


@functools.cache
def infer_frames(shot):
    """The shot's infer_frames, sorted (chunks are runs of consecutive frames of this list)."""
    return tuple(sorted(frame_list(config["shots"][shot].get("infer_frames"))))


@functools.cache
def chunks_of(shot):
    """{chunk name: frames}: infer_frames cut into infer_chunk_size pieces, named first-last."""
    frames = infer_frames(shot)
    size = config["infer_chunk_size"]
    pieces = [frames[i : i + size] for i in range(0, len(frames), size)]
    return {f"{p[0]}-{p[-1]}": list(p) for p in pieces}


def chunk_frames(wildcards):
    try:
        return chunks_of(wildcards.shot)[wildcards.chunk]
    except KeyError:
        raise WorkflowError(
            f"{wildcards.chunk} is not an inference chunk of shot {wildcards.shot} "
            f"(chunks: {', '.join(chunks_of(wildcards.shot)) or 'none'})"
        ) from None


def chunk_frame_spec(wildcards):
    return frame_spec(chunk_frames(wildcards))


def chunk_output_pattern(wildcards):
    shot, ext = wildcards.shot, output_ext(wildcards.shot)
    return f"results/{shot}/chunks/{wildcards.chunk}/{shot}.####.{ext}"


def infer_frame_count(wildcards):
    return len(infer_frames(wildcards.shot))


def input_pattern(wildcards):
    return settings_of(wildcards.shot)["input"]


def chunk_dirs(wildcards):
    return [f"results/{wildcards.shot}/chunks/{c}" for c in chunks_of(wildcards.shot)]


def gather_frames(chunk_directories, output, expected, log):
    """Hard-link (or copy) every chunk's frames into one folder; check none is missing."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    frames = []
    for directory in chunk_directories:
        for src in sorted(Path(directory).iterdir()):
            if src.name.startswith("."):  # .snakemake_timestamp
                continue
            dst = out / src.name
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)
            frames.append(dst.name)
    Path(log).write_text(f"{len(frames)} frames in {out}\n" + "\n".join(frames) + "\n")
    if len(frames) != expected:
        raise WorkflowError(
            f"{out}: expected {expected} frames, the chunks hold {len(frames)}"
        )


def sample_frames(shot, count=3):
    """First, middle and last of the shot's infer_frames (for the report)."""
    frames = infer_frames(shot)
    if len(frames) <= count:
        return list(frames)
    picks = [frames[round(i * (len(frames) - 1) / (count - 1))] for i in range(count)]
    return sorted(set(picks))


# ---- input files ------------------------------------------------------------------------------


def _sequence_files(pattern, spec):
    return [frame_path(pattern, f) for f in frame_list(spec)]


def dataset_files(wildcards):
    """Every image ccat-tf validate reads: pairs, validation pairs, preview frames."""
    s = settings_of(wildcards.shot)
    files = []
    for key in ("frames", "validation_frames"):
        files += _sequence_files(s["input"], s.get(key))
        files += _sequence_files(s["ground_truth"], s.get(key))
    if s.get("preview"):
        files += _sequence_files(s["preview"], s.get("preview_frames"))
    return files


def pair_files(wildcards):
    s = settings_of(wildcards.shot)
    return _sequence_files(s["input"], s["frames"]) + _sequence_files(
        s["ground_truth"], s["frames"]
    )


def train_extra_files(wildcards):
    """Files training reads beside the cache: validation pairs, preview frames, checkpoint."""
    s = settings_of(wildcards.shot)
    files = _sequence_files(s["input"], s.get("validation_frames"))
    files += _sequence_files(s["ground_truth"], s.get("validation_frames"))
    if s.get("preview"):
        files += _sequence_files(s["preview"], s.get("preview_frames"))
    if s.get("initial_weights") == "checkpoint" and s.get("checkpoint_file"):
        files.append(s["checkpoint_file"])
    return files


def chunk_input_files(wildcards):
    pattern = settings_of(wildcards.shot)["input"]
    return [frame_path(pattern, f) for f in chunk_frames(wildcards)]


def sample_plate_files(wildcards):
    pattern = settings_of(wildcards.shot)["input"]
    return [frame_path(pattern, f) for f in sample_frames(wildcards.shot)]


# ---- report samples ---------------------------------------------------------------------------


def _display_channels(spec):
    """oiiotool --ch argument showing a channel spec as RGB (alpha and mattes as grey)."""
    if isinstance(spec, str) and "," in spec:
        spec = [c.strip() for c in spec.split(",") if c.strip()]
    if spec in ("rgb", "rgba"):
        return "R,G,B"
    if spec == "alpha":
        return "A,A,A"
    names = list(spec)
    names = (names + [names[-1]] * 3)[:3] if len(names) < 3 else names[:3]
    return ",".join(names)


def samples_command(wildcards, input, output):
    """oiiotool line: a row of plate frames over a row of output frames, 480 px wide each."""
    shot = wildcards.shot
    s = settings_of(shot)
    ext = output_ext(shot)
    frames = sample_frames(shot)
    args = []
    rows = (
        [(frame_path(s["input"], f), s["input_channels"]) for f in frames],
        [
            (f"{input.frames}/{shot}.{f:04d}.{ext}", s["output_channels"])
            for f in frames
        ],
    )
    # Output frames hold values in the plate's encoding (ccat_tf does not convert colour), so
    # the plate decides: scene-linear plates (EXR/HDR) are shown through the sRGB curve.
    linear = s["input"].lower().endswith((".exr", ".hdr"))
    for row in rows:
        for path, channels in row:
            args += ["-i", path, "--ch", _display_channels(channels)]
            if linear:
                args += ["--colorconvert", "linear", "sRGB"]
            args += ["--resize", "480x0"]
    args += [
        "--mosaic:pad=4",
        f"{len(frames)}x2",
        "-d",
        "uint8",
        "-o",
        str(output.png),
    ]
    return shlex.join(["oiiotool"] + args)


# ---- latest contact sheet / preview -----------------------------------------------------------

_CAT = re.compile(r"^(?P<run>.+)\.step(?P<step>\d+)\.cat$")
_STEP = re.compile(r"\.step(\d+)\.png$")


def latest_image(directory, kind):
    """The newest ``<run>.<kind>.stepNNNNNNN.png`` of the run that wrote latest.json."""
    directory = Path(directory)
    run = None
    try:
        latest = safe_load.load_json_file(directory / "latest.json")
        m = _CAT.match(Path(latest["cat"]).name)
        run = m.group("run") if m else None
    except (OSError, ValueError, KeyError, TypeError):
        pass

    def step(p):
        m = _STEP.search(p.name)
        return int(m.group(1)) if m else -1

    found = sorted(directory.glob(f"{run}.{kind}.step*.png"), key=step) if run else []
    if not found:  # no latest.json (or none of that run): newest file of any run
        found = sorted(directory.glob(f"*.{kind}.step*.png"), key=os.path.getmtime)
    if not found:
        raise WorkflowError(f"no {kind} image (*.{kind}.step*.png) in {directory}")
    return found[-1]


def copy_latest_image(directory, kind, output, log):
    src = latest_image(directory, kind)
    shutil.copyfile(src, output)
    Path(log).write_text(f"copied {src} to {output}\n")


# ---- how rules run the package ----------------------------------------------------------------


def _uses_conda():
    try:
        from snakemake.settings.types import DeploymentMethod

        return DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
    except (ImportError, AttributeError):
        return False


def shell_prefix():
    """Run `python -m ccat_tf` and `oiiotool` from the right environment.

    Without --sdm conda that is the environment running Snakemake (so `.venv/bin/snakemake`
    works without activating the venv); with it, the rule's conda env. The repository root on
    PYTHONPATH makes the package importable in a conda env that holds only its dependencies.
    """
    prefix = "set -euo pipefail; "
    prefix += f'export PYTHONPATH={shlex.quote(workflow.basedir)}"${{PYTHONPATH:+:$PYTHONPATH}}"; '
    if not _uses_conda():
        bindir = os.path.dirname(sys.executable)
        prefix += f'export PATH={shlex.quote(bindir)}:"$PATH"; '
    # Snakemake formats the prefix like a shell command: braces must be doubled.
    return prefix.replace("{", "{{").replace("}", "}}")


# ---- targets ----------------------------------------------------------------------------------


def shot_targets(shot):
    s = settings_of(shot)
    files = [
        f"results/{shot}/model.cat",
        f"results/{shot}/loss.csv",
        f"results/{shot}/graph.png",
        f"results/{shot}/contact_sheet.png",
    ]
    if s.get("preview"):
        files.append(f"results/{shot}/preview.png")
    if infer_frames(shot):
        files += [f"results/{shot}/output", f"results/{shot}/output_samples.png"]
    return files


def all_targets(wildcards):
    files = ["results/overview.png"]
    for shot in shots():
        files += shot_targets(shot)
    return files


# The `pretrained` target's settings (workflow/rules/pretrain.smk).
PRETRAIN_KEYS = {
    "tasks",
    "model_sizes",
    "corpus",
    "pairs",
    "data_dir",
    "crop_size",
    "batch_size",
    "learning_rate",
    "seed",
    "weights_dtype",
    "steps",
}


def load_pretrain_settings(path):
    """workflow/pretrain.yaml (or config's pretrain_settings), with one-line errors."""
    path = Path(path)
    if not path.is_absolute() and not path.exists():
        path = Path(workflow.basedir) / path  # e.g. the default, workflow/pretrain.yaml
    try:
        settings = safe_load.load_file(path)
    except safe_load.LoadError as err:
        hint = ", or set pretrain_settings to a file like workflow/pretrain.yaml"
        hint = hint if err.kind == "unreadable" else ""
        raise WorkflowError(f"config: pretrain_settings: {err}{hint}") from None
    if not isinstance(settings, dict):
        raise WorkflowError(
            f"config: pretrain_settings: {path} must hold a mapping; copy workflow/pretrain.yaml"
        )
    missing = PRETRAIN_KEYS - set(settings)
    if missing:
        raise WorkflowError(
            f"config: pretrain_settings: {path} lacks {', '.join(sorted(missing))}; "
            "copy them from workflow/pretrain.yaml"
        )
    for key in ("tasks", "model_sizes"):
        if not isinstance(settings[key], list) or not all(
            isinstance(v, str) for v in settings[key]
        ):
            raise WorkflowError(
                f"config: pretrain_settings: {path}: {key} must be a list of names, as in "
                "workflow/pretrain.yaml"
            )
    steps = settings["steps"] if isinstance(settings["steps"], dict) else {}
    steps = {k: v for k, v in steps.items() if isinstance(v, dict)}
    for task in settings["tasks"]:
        for size in settings["model_sizes"]:
            count = (steps.get(task) or {}).get(size)
            if not isinstance(count, int):
                raise WorkflowError(
                    f"config: pretrain_settings: {path}: steps.{task}.{size} must be a whole number"
                )
    return settings
