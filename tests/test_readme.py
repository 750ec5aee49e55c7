"""The README stays true to the code: its settings and model tables are regenerated here."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO

from ccat_tf.models import PRESETS, describe


def test_settings_tables_match_the_code():
    table = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "settings_table.py")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert table in (REPO / "README.md").read_text(), (
        "README settings tables are stale: run python scripts/settings_table.py and paste"
    )


def test_model_table_matches_the_presets():
    readme = (REPO / "README.md").read_text()
    for size, preset in PRESETS.items():
        d = describe(size)
        row = (
            f"| {size} | {', '.join(map(str, preset.filters))} x{preset.convs_per_level} | "
            f"{d['parameters']:,} | {d['forward_gflops_per_crop']:.1f} | "
            f"{d['training_gflops_per_crop']:.1f} |"
        )
        assert row in readme, row


def test_readme_starts_with_the_two_commands():
    lines = (REPO / "README.md").read_text().splitlines()
    code = lines[lines.index("```bash") + 1 : lines.index("```bash") + 3]
    assert code[0].startswith("bash scripts/demo.sh") and code[1].startswith("bash scripts/test.sh")
