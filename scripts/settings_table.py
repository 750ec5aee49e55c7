"""Print the README's settings tables from the settings dataclasses and the CLI help texts.

tests/test_readme.py checks the README holds exactly this output, so the README cannot drift
from the code: after changing a setting, run `python scripts/settings_table.py` and paste.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ccat_tf.commands.infer import HELPS as INFER_HELPS  # noqa: E402
from ccat_tf.commands.train import HELPS as TRAIN_HELPS  # noqa: E402
from ccat_tf.settings import RANGES, InferSettings, TrainSettings  # noqa: E402

# CopyCat / Inference control (knob) for each setting; blank where CopyCat has no such control.
COPYCAT = {
    "input": "Input (input 0)",
    "ground_truth": "Ground Truth (input 1)",
    "frames": "the frames connected to the Input/Ground Truth",
    "input_channels": "Channels (`trainingInfo`, read-only)",
    "output_channels": "Channels (`trainingInfo`, read-only)",
    "preview": "Preview (input 2)",
    "preview_frames": "the frames of the Preview input",
    "data_directory": "Data Directory (`dataDirectory`)",
    "epochs": "Epochs (`epochs`)",
    "use_gpu_if_available": "Use GPU if available (`useGPUIfAvailable`)",
    "initial_weights": "Initial Weights (`initialWeights`)",
    "checkpoint_file": "Checkpoint File (`checkpointFile`)",
    "model_size": "Model Size (`modelSize`)",
    "batch_size": "Batch Size (`batchSizeType`, `batchSize`)",
    "crop_size": "Crop Size (`cropSize`)",
    "checkpoint_interval": "Checkpoint Interval (`checkpointInterval`)",
    "contact_sheet_interval": "Contact Sheet Interval (`imageInterval`)",
    "use_multi_resolution_training": "Use Multi-Resolution Training (`useMultiResolutionTraining`)",
    "run_name": "Runs table Name (`runTable`)",
    "on_training_start": "Python tab: before render (`beforeRender`)",
    "on_checkpoint": "Python tab: after each frame (`afterFrameRender`), here per checkpoint",
    "on_training_end": "Python tab: after render (`afterRender`)",
    "model_file": "Model File (`modelFile`)",
    "optimize_for_speed_and_memory": "Optimize for Speed and Memory (`optimizeForSpeedAndMemory`)",
    "before_render": "Python tab: before render (`beforeRender`)",
    "before_frame_render": "Python tab: before each frame (`beforeFrameRender`)",
    "after_frame_render": "Python tab: after each frame (`afterFrameRender`)",
    "after_render": "Python tab: after render (`afterRender`)",
    "render_progress": "Python tab: render progress (`renderProgress`)",
}


def _default(f) -> str:
    value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if value == "" or value == []:
        return "(unset)"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def table(cls, helps) -> str:
    lines = [
        "| setting (config key) | CLI flag | CopyCat control | default | range | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        limits = RANGES[f.name].short() if f.name in RANGES else "-"
        lines.append(
            f"| `{f.name}` | `{flag}` | {COPYCAT.get(f.name, '-')} | {_default(f)} | {limits} | "
            f"{helps.get(f.name, '').replace('|', '/')} |"
        )
    return "\n".join(lines)


def main() -> None:
    print("### Training (`ccat-tf train`, `ccat_tf.train`)\n")
    print(table(TrainSettings, TRAIN_HELPS))
    print("\n### Inference (`ccat-tf infer`, `ccat_tf.infer`)\n")
    print(table(InferSettings, INFER_HELPS))


if __name__ == "__main__":
    main()
