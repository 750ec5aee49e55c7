"""One command-line flag per setting, generated from the settings dataclasses.

``--settings FILE`` (YAML/JSON) and ``--settings-json '{...}'`` give many settings at once (the
Snakemake rules use the latter); individual flags override both.
"""

from __future__ import annotations

import argparse
import dataclasses

from ccat_tf import safe_load
from ccat_tf.errors import SettingsError
from ccat_tf.settings import load_settings_file


def add_settings_arguments(parser: argparse.ArgumentParser, cls, *, skip=()) -> None:
    """One flag per field of the settings class ``cls``, its help from the field's metadata."""
    parser.add_argument(
        "--settings", metavar="FILE", help="YAML or JSON file of settings (keys as below, with _)"
    )
    parser.add_argument("--settings-json", metavar="JSON", help="settings as a JSON mapping")
    group = parser.add_argument_group(
        "settings (CopyCat knob names in snake_case; flags override files)"
    )
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        flag = "--" + f.name.replace("_", "-")
        text = f.metadata.get("help", "").replace("%", "%%")  # argparse formats help with %
        if isinstance(default, bool):
            group.add_argument(
                flag,
                dest=f.name,
                default=None,
                action=argparse.BooleanOptionalAction,
                help=f"{text} (default: {'on' if default else 'off'})".strip(),
            )
        elif isinstance(default, list):
            group.add_argument(
                flag,
                dest=f.name,
                default=None,
                action="append",
                metavar="MODULE:FUNCTION",
                help=f"{text} (repeatable)".strip(),
            )
        else:
            shown = default if default != "" else "unset"
            limits = f"; range {f.metadata['range'].short()}" if f.metadata.get("range") else ""
            group.add_argument(
                flag,
                dest=f.name,
                default=None,
                metavar=f.name.upper(),
                help=f"{text} (default: {shown}{limits})".strip(),
            )


def settings_from_args(args: argparse.Namespace, cls, *, extra: dict | None = None):
    data: dict = {}
    if getattr(args, "settings", None):
        data.update(load_settings_file(args.settings))
    if getattr(args, "settings_json", None):
        inline = safe_load.load_json_text(args.settings_json, "--settings-json")
        if not isinstance(inline, dict):
            raise SettingsError("--settings-json must be a JSON mapping of setting: value")
        data.update(inline)
    for f in dataclasses.fields(cls):
        value = getattr(args, f.name, None)
        if value is not None:
            data[f.name] = value
    data.update({k: v for k, v in (extra or {}).items() if v is not None})
    return cls.from_mapping(data)
