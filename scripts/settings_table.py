"""Print the README's settings tables from the settings dataclasses (ccat_tf/settings.py).

Each field's default, range, CopyCat control and help text are declared once, beside the field;
tests/test_readme.py checks the README holds exactly this output, so the README cannot drift
from the code: after changing a setting, run `python scripts/settings_table.py` and paste.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ccat_tf.settings import InferSettings, PretrainSettings, TrainSettings, describe  # noqa: E402


def _default(value) -> str:
    if value == "" or value == []:
        return "(unset)"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def table(cls) -> str:
    lines = [
        "| setting (config key) | CLI flag | CopyCat control | default | range | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for name, d in describe(cls).items():
        flag = "--" + name.replace("_", "-")
        limits = d["range"].short() if d["range"] else "-"
        lines.append(
            f"| `{name}` | `{flag}` | {d['knob']} | {_default(d['default'])} | {limits} | "
            f"{d['help'].replace('|', '/')} |"
        )
    return "\n".join(lines)


def main() -> None:
    print("### Training (`ccat-tf train`, `ccat_tf.train`)\n")
    print(table(TrainSettings))
    print("\n### Inference (`ccat-tf infer`, `ccat_tf.infer`)\n")
    print(table(InferSettings))
    print("\n### Pretraining (`ccat-tf pretrain`, `workflow/pretrain.yaml`)\n")
    print(table(PretrainSettings))


if __name__ == "__main__":
    main()
