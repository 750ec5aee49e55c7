"""Each shot of the workflow's config: effective settings, rule params, paths, chunks, targets.

:class:`ShotPlan` is built once from the validated config (Snakemake's ``config`` after
``snakemake.utils.validate`` filled in the schema's defaults). Its methods taking ``wildcards``
are the rules' input and params functions (Snakemake calls bound methods like plain functions).

What reruns what is decided here, by which settings go into which rule's ``params`` (Snakemake's
``params`` rerun trigger compares them as text, so they are sorted JSON):

* validate: the data set and the knobs it checks against the frames (:data:`VALIDATE_KEYS`);
* cache: only what decides the cached pixels (:data:`CACHE_KEYS`);
* train: :data:`MODEL_KEYS`, the settings that decide the trained model. The others
  (:data:`NO_RETRAIN_KEYS`: intervals, preview, validation frames, hooks, run name, device) reach
  ``ccat-tf train`` through a param *derived from the rule's input* (a function taking
  ``input``), which Snakemake leaves out of its params trigger (snakemake PRs #3154, #3507:
  derived params are covered by the input files). So editing them after a shot finished reruns
  nothing, and a training that does run (more epochs, a killed job) still gets them;
* infer_chunk: the inference settings (:data:`INFER_KEYS`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

from ccat_tf import frames as framespec
from ccat_tf.settings import LAUNCH_KEYS as _LAUNCH_KEYS
from ccat_tf.settings import RESUME_COMPATIBLE_KEYS, InferSettings, TrainSettings
from ccat_tf.workflow import ConfigError

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
# What ccat-tf validate checks: the data set plus the knobs it checks against the frames.
VALIDATE_KEYS = (
    "input",
    "ground_truth",
    "frames",
    "input_channels",
    "output_channels",
    "preview",
    "preview_frames",
    "validation_frames",
    "crop_size",
    "batch_size",
    "model_size",
)
# What decides the cached pixels: editing anything else must not rebuild the cache.
CACHE_KEYS = (
    "input",
    "ground_truth",
    "frames",
    "input_channels",
    "output_channels",
    "use_multi_resolution_training",
    "temporal_consistency",  # the cache then holds each pair's warped neighbouring input frame
)
# How the ranks of a distributed training meet: per process, set by the launcher
# (ccat_tf.launch, from the shot's train_tasks and train_nodes) or by SLURM, never by the config.
LAUNCH_KEYS = tuple(sorted(_LAUNCH_KEYS))
# Every training setting the workflow passes to `ccat-tf train`.
TRAIN_KEYS = tuple(
    f for f in TrainSettings.__dataclass_fields__ if f not in MANAGED_KEYS + LAUNCH_KEYS
)
# Training settings that cannot change a finished model: those a resume may change
# (ccat_tf.settings.RESUME_COMPATIBLE_KEYS) except epochs, which asks for more (or fewer) steps.
NO_RETRAIN_KEYS = tuple(k for k in TRAIN_KEYS if k in RESUME_COMPATIBLE_KEYS - {"epochs"})
# What decides the trained model: editing one retrains (or resumes) the shot.
MODEL_KEYS = tuple(k for k in TRAIN_KEYS if k not in NO_RETRAIN_KEYS)
# Every inference setting the workflow passes to `ccat-tf infer` (input and frames come per chunk).
INFER_KEYS = tuple(
    f
    for f in InferSettings.__dataclass_fields__
    if f not in MANAGED_KEYS and f not in ("input", "frames")
)
FRAME_KEYS = ("frames", "validation_frames", "preview_frames", "infer_frames")
# (sequence, the key naming its frames) for every image a shot's jobs read.
INPUT_SEQUENCES = (
    ("input", "frames"),
    ("ground_truth", "frames"),
    ("input", "validation_frames"),
    ("ground_truth", "validation_frames"),
    ("preview", "preview_frames"),
    ("input", "infer_frames"),
)


# ---- frames -------------------------------------------------------------------------------------


def frame_list(spec: Any) -> list[int]:
    """A frame spec (``1001-1100x10``, ``1001,1010``, a list, a number) -> frame numbers;
    ``[]`` for none."""
    return framespec.parse_frames(spec) if spec not in (None, "") else []


def frame_spec(frames) -> str:
    """Frame numbers -> the shortest frame spec (``1001-1004``)."""
    return framespec.format_frames(frames)


def frame_path(pattern: str, frame: int) -> str:
    """The file of ``frame`` in a sequence pattern (``plate.####.exr`` -> ``plate.1001.exr``)."""
    return framespec.frame_path(pattern, frame)


def sequence_files(pattern: str, spec: Any) -> list[str]:
    """The files of the frames ``spec`` names in sequence ``pattern``."""
    return [frame_path(pattern, f) for f in frame_list(spec)]


def settings_json(mapping: Mapping[str, Any]) -> str:
    """Compact JSON with sorted keys: params are compared as text by Snakemake's rerun triggers."""
    return json.dumps(mapping, sort_keys=True, separators=(",", ":"))


# ---- paths --------------------------------------------------------------------------------------


def data_directory(shot: str) -> str:
    """The shot's CopyCat Data Directory (checkpoints, .ost, contact sheets, .summary)."""
    return f"results/{shot}/train"


def model_file(shot: str) -> str:
    return f"results/{shot}/model.cat"


# ---- the plan -----------------------------------------------------------------------------------


class ShotPlan:
    """The shots of a validated workflow config and everything the rules ask about them.

    ``config`` is Snakemake's config after validation (``shots``, ``defaults``,
    ``infer_chunk_size`` present). ``error`` is the exception class raised for a problem found
    while planning (the workflow passes ``WorkflowError``). The config is fixed once validated,
    so per-shot answers are cached (DAG building asks for every job); callers must not modify
    what the plan returns.
    """

    def __init__(self, config: Mapping[str, Any], error: type[Exception] = ConfigError):
        self.config = config
        self.error = error
        self._settings: dict[str, dict[str, Any]] = {}
        self._infer_frames: dict[str, tuple[int, ...]] = {}
        self._chunks: dict[str, dict[str, list[int]]] = {}

    # ---- shots and their settings -----------------------------------------------------------

    def shots(self) -> list[str]:
        """The shot names, in config order."""
        return list(self.config["shots"])

    def shot_pattern(self) -> str:
        """The ``{shot}`` wildcard's regular expression: exactly the config's shot names."""
        return "|".join(re.escape(shot) for shot in self.shots())

    def settings_of(self, shot: str) -> dict[str, Any]:
        """The shot's effective settings: schema defaults <- config ``defaults:`` <- the shot."""
        if shot not in self._settings:
            merged = dict(self.config.get("defaults") or {})
            merged.update(self.config["shots"][shot])
            self._settings[shot] = merged
        return self._settings[shot]

    def pick(self, shot: str, keys) -> dict[str, Any]:
        """The shot's settings among ``keys`` (frame lists as frame-spec text)."""
        s = self.settings_of(shot)
        picked = {k: s[k] for k in keys if k in s}
        for k in FRAME_KEYS:
            # the settings hold frame specs as text; YAML may give a number or a list
            if k in picked and not isinstance(picked[k], str):
                picked[k] = frame_spec(frame_list(picked[k]))
        return picked

    def output_ext(self, shot: str) -> str:
        return self.settings_of(shot)["output_format"]

    # ---- params (what reruns what: see the module docstring) --------------------------------

    def validate_settings_json(self, wildcards) -> str:
        """validate's settings: the data set plus the knobs it checks against the frames."""
        return settings_json(self.pick(wildcards.shot, VALIDATE_KEYS))

    def cache_settings_json(self, wildcards) -> str:
        """cache's settings: what decides the cached pixels (temporal_consistency only when on:
        off, the cache is the one built before the setting existed)."""
        picked = self.pick(wildcards.shot, CACHE_KEYS)
        if not picked.get("temporal_consistency"):
            picked.pop("temporal_consistency", None)
        return settings_json(picked)

    def model_settings_json(self, wildcards) -> str:
        """The settings that decide the trained model: editing one reruns this shot's training
        (which resumes from the .ost when it can). The train rule's rerun trigger."""
        return settings_json(self.pick(wildcards.shot, MODEL_KEYS))

    def train_settings_json(self, wildcards, input) -> str:
        """Every training setting of the shot, for ``ccat-tf train --settings-json``.

        It takes ``input`` so that Snakemake counts it as derived from the input files and
        leaves it out of the params rerun trigger: :meth:`model_settings_json` is the trigger,
        and the other settings (:data:`NO_RETRAIN_KEYS`) must not rerun a finished training.
        """
        return settings_json(self.pick(wildcards.shot, TRAIN_KEYS))

    def infer_settings_json(self, wildcards) -> str:
        """Every inference setting: editing one reruns this shot's inference only."""
        return settings_json(self.pick(wildcards.shot, INFER_KEYS))

    # ---- the training job's processes (resources: they decide how it runs, not what it trains)

    def train_tasks(self, wildcards) -> int:
        """Processes (ranks) of the shot's training: the SLURM job's tasks."""
        return int(self.settings_of(wildcards.shot)["train_tasks"])

    def train_nodes(self, wildcards) -> int:
        """Machines the shot's training runs on (SLURM ``--nodes``); at most one per task."""
        shot = wildcards.shot
        nodes, tasks = int(self.settings_of(shot)["train_nodes"]), self.train_tasks(wildcards)
        if nodes > tasks:
            raise self.error(
                f"config: shots.{shot}.train_nodes: {nodes} machines for {tasks} training "
                "process(es); every machine needs one: raise train_tasks or lower train_nodes"
            )
        return nodes

    def train_mpi(self, wildcards) -> str | None:
        """snakemake-executor-plugin-slurm's ``mpi`` resource. Set (several tasks), the job's
        shell starts the ranks itself (``ccat_tf.launch``: one ``srun`` step of every task)
        instead of the plugin's one-task ``srun -n1``; None (one task) leaves it unset."""
        return "srun" if self.train_tasks(wildcards) > 1 else None

    def train_gpus(self, wildcards) -> int:
        """GPUs of the whole training job (SLURM ``--gpus``): config ``train_gpus`` per task."""
        return int(self.config["train_gpus"]) * self.train_tasks(wildcards)

    # ---- paths --------------------------------------------------------------------------------

    def train_directory(self, wildcards) -> str:
        return data_directory(wildcards.shot)

    def all_train_directories(self, wildcards) -> list[str]:
        return [data_directory(shot) for shot in self.shots()]

    def shots_of(self, wildcards) -> list[str]:
        return self.shots()

    def all_models(self, wildcards) -> list[str]:
        return [model_file(shot) for shot in self.shots()]

    # ---- inference chunks ---------------------------------------------------------------------

    def infer_frames(self, shot: str) -> tuple[int, ...]:
        """The shot's infer_frames, sorted (chunks are runs of consecutive frames of this list)."""
        if shot not in self._infer_frames:
            spec = self.config["shots"][shot].get("infer_frames")
            self._infer_frames[shot] = tuple(sorted(frame_list(spec)))
        return self._infer_frames[shot]

    def chunks_of(self, shot: str) -> dict[str, list[int]]:
        """{chunk name: frames}: infer_frames cut into infer_chunk_size pieces, named first-last."""
        if shot not in self._chunks:
            frames = self.infer_frames(shot)
            size = self.config["infer_chunk_size"]
            pieces = [frames[i : i + size] for i in range(0, len(frames), size)]
            self._chunks[shot] = {f"{p[0]}-{p[-1]}": list(p) for p in pieces}
        return self._chunks[shot]

    def chunk_frames(self, wildcards) -> list[int]:
        try:
            return self.chunks_of(wildcards.shot)[wildcards.chunk]
        except KeyError:
            raise self.error(
                f"{wildcards.chunk} is not an inference chunk of shot {wildcards.shot} "
                f"(chunks: {', '.join(self.chunks_of(wildcards.shot)) or 'none'})"
            ) from None

    def chunk_frame_spec(self, wildcards) -> str:
        return frame_spec(self.chunk_frames(wildcards))

    def chunk_output_pattern(self, wildcards) -> str:
        shot, ext = wildcards.shot, self.output_ext(wildcards.shot)
        return f"results/{shot}/chunks/{wildcards.chunk}/{shot}.####.{ext}"

    def chunk_dirs(self, wildcards) -> list[str]:
        return [f"results/{wildcards.shot}/chunks/{c}" for c in self.chunks_of(wildcards.shot)]

    def infer_frame_count(self, wildcards) -> int:
        return len(self.infer_frames(wildcards.shot))

    def input_pattern(self, wildcards) -> str:
        return self.settings_of(wildcards.shot)["input"]

    def sample_frames(self, shot: str, count: int = 3) -> list[int]:
        """First, middle and last of the shot's infer_frames (for the report)."""
        frames = self.infer_frames(shot)
        if len(frames) <= count:
            return list(frames)
        picks = [frames[round(i * (len(frames) - 1) / (count - 1))] for i in range(count)]
        return sorted(set(picks))

    # ---- input files --------------------------------------------------------------------------

    def dataset_files(self, wildcards) -> list[str]:
        """Every image ccat-tf validate reads: pairs, validation pairs, preview frames."""
        s = self.settings_of(wildcards.shot)
        files = []
        for key in ("frames", "validation_frames"):
            files += sequence_files(s["input"], s.get(key))
            files += sequence_files(s["ground_truth"], s.get(key))
        if s.get("preview"):
            files += sequence_files(s["preview"], s.get("preview_frames"))
        return files

    def pair_files(self, wildcards) -> list[str]:
        """The training pairs (the cache's input), and with temporal_consistency each pair's
        neighbouring input frame on disk (t+1, else t-1: the one the cache warps)."""
        s = self.settings_of(wildcards.shot)
        files = sequence_files(s["input"], s["frames"]) + sequence_files(
            s["ground_truth"], s["frames"]
        )
        if s.get("temporal_consistency", 0) > 0:
            for frame in frame_list(s["frames"]):
                near = [frame_path(s["input"], n) for n in (frame + 1, frame - 1)]
                files += [p for p in near if os.path.lexists(p)][:1]
            files = list(dict.fromkeys(files))  # a neighbour may be a training frame too
        return files

    def train_extra_files(self, wildcards) -> list[str]:
        """Files training reads beside the cache that decide the model: the checkpoint_file it
        starts from. (Validation and preview frames are read too, but a new one cannot change a
        finished model; validate checks them, and so does `ccat-tf train` when it runs.)"""
        s = self.settings_of(wildcards.shot)
        if s.get("initial_weights") == "checkpoint" and s.get("checkpoint_file"):
            return [s["checkpoint_file"]]
        return []

    def chunk_input_files(self, wildcards) -> list[str]:
        """The chunk's input frames; with ``temporal_blend`` also their neighbours on disk
        (frames t-1 and t+1 the blend reads), so an edited neighbour reruns the chunk."""
        settings = self.settings_of(wildcards.shot)
        pattern, frames = settings["input"], self.chunk_frames(wildcards)
        files = [frame_path(pattern, f) for f in frames]
        if float(settings.get("temporal_blend") or 0) > 0:
            near = sorted({f + d for f in frames for d in (-1, 1)} - set(frames))
            files += [p for p in (frame_path(pattern, f) for f in near) if os.path.isfile(p)]
        return files

    def sample_plate_files(self, wildcards) -> list[str]:
        pattern = self.settings_of(wildcards.shot)["input"]
        return [frame_path(pattern, f) for f in self.sample_frames(wildcards.shot)]

    # ---- report samples -----------------------------------------------------------------------

    def samples_command(self, wildcards, input, output) -> str:
        """The output_samples rule's oiiotool line (see :func:`ccat_tf.workflow.images.samples_command`)."""
        from ccat_tf.workflow.images import samples_command

        shot = wildcards.shot
        return samples_command(
            self.settings_of(shot),
            self.sample_frames(shot),
            f"{input.frames}/{shot}.{{frame:04d}}.{self.output_ext(shot)}",
            str(output.png),
        )

    def stability_plate_files(self, wildcards) -> list[str]:
        """The plates of every rendered frame (the stability command reads some of them)."""
        pattern = self.settings_of(wildcards.shot)["input"]
        return [frame_path(pattern, f) for f in self.infer_frames(wildcards.shot)]

    def stability_command(self, wildcards, input, output) -> str:
        """The stability rule's ``ccat-tf stability`` line: the rendered output against its
        plates, every rendered frame named (the command reads at most 48 of them)."""
        import shlex

        shot, s = wildcards.shot, self.settings_of(wildcards.shot)

        def channels(spec: Any) -> str:
            return spec if isinstance(spec, str) else ",".join(spec)

        args = ["python", "-m", "ccat_tf", "stability"]
        args += [f"{input.frames}/{shot}.####.{self.output_ext(shot)}", "--input", s["input"]]
        args += ["--frames", frame_spec(self.infer_frames(shot))]
        args += ["--input-channels", channels(s["input_channels"])]
        args += ["--output-channels", channels(s["output_channels"])]
        return shlex.join(args + ["--title", shot, "--output", str(output.png)])

    # ---- targets ------------------------------------------------------------------------------

    def shot_targets(self, shot: str) -> list[str]:
        """Every file the workflow makes for ``shot`` (what `snakemake` with no target builds)."""
        s = self.settings_of(shot)
        files = [
            f"results/{shot}/dataset_report.json",
            model_file(shot),
            f"results/{shot}/loss.csv",
            f"results/{shot}/graph.png",
            f"results/{shot}/contact_sheet.png",
        ]
        if s.get("preview"):
            files.append(f"results/{shot}/preview.png")
        if self.infer_frames(shot):
            files += [f"results/{shot}/output", f"results/{shot}/output_samples.png"]
        if len(self.infer_frames(shot)) >= 2:  # flicker is measured between frames
            files.append(f"results/{shot}/stability.png")
        return files

    def all_targets(self, wildcards) -> list[str]:
        files = ["results/overview.png"]
        for shot in self.shots():
            files += self.shot_targets(shot)
        return files
