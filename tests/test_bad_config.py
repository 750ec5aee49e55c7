"""Hostile settings and config files: every YAML/JSON ccat_tf reads is bounded (ccat_tf.safe_load).

A 1 KB YAML "billion laughs" (nine levels of nine aliases), an oversized file, duplicate keys and
a shot whose frames do not exist, given as a ``--settings`` file (the CLI), as config.yaml, a
``--configfile``, ``--config`` or a pretraining settings file (``snakemake -n``). Each must give
one ``ccat-tf: error:`` / ``config:`` line naming the file (and line) and the fix, a non-zero
exit, no traceback, well under 10 s of CPU and 1 GB, and leave every file as it was. Unit tests
of the loader come first.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from ccat_tf import safe_load
from ccat_tf.errors import SettingsError
from ccat_tf.safe_load import MAX_BYTES, MAX_VALUES, LoadError

GB = 1 << 30


def bomb(levels: int = 9, width: int = 9) -> list[str]:
    """YAML sequence items: level k is ``width`` aliases of level k-1 (width**levels values)."""
    items = [f"- &a0 [{', '.join(['1'] * width)}]"]
    for k in range(1, levels):
        items.append(f"- &a{k} [{', '.join([f'*a{k - 1}'] * width)}]")
    return items


def indented(lines: list[str], indent: str) -> str:
    return "".join(f"{indent}{line}\n" for line in lines)


# ---- the loader -------------------------------------------------------------------------------

LOADERS = [safe_load._PyLoader] + (
    [safe_load._LOADER] if safe_load._LOADER is not safe_load._PyLoader else []
)


@pytest.fixture(params=LOADERS, ids=lambda c: c.__name__)
def loader(request, monkeypatch):
    monkeypatch.setattr(safe_load, "_LOADER", request.param)


def test_alias_bomb_stops_at_the_alias_that_crosses_the_budget(loader):
    text = "frames:\n" + indented(bomb(), "  ")
    start = time.process_time()
    with pytest.raises(LoadError) as err:
        safe_load.load_yaml_text(text, "bomb.yaml")
    assert time.process_time() - start < 1
    assert err.value.kind == "values"
    # item k holds 9**(k+1) values: a5 (line 7) takes the count past 100 000
    assert str(err.value).startswith(f"bomb.yaml line 7: YAML aliases expand past {MAX_VALUES}")
    assert "write the values out" in str(err.value)


def test_aliases_and_merge_keys_within_the_budget_load_as_safe_load(loader):
    text = (
        "base: &base {model_size: small, epochs: 5}\n"
        "shots:\n"
        "  a: {<<: *base, epochs: 7}\n"
        "  b: *base\n"
        "frames:\n" + indented(bomb(levels=4, width=9), "  ")  # 9**4 = 6561 values
    )
    assert safe_load.load_yaml_text(text, "ok.yaml") == yaml.safe_load(text)


@pytest.mark.parametrize(
    "path",
    ["config.yaml", "workflow/pretrain.yaml", "tests/configs/tiny.yaml", "envs/ccat_tf-cpu.yaml"],
)
def test_shipped_files_load_as_safe_load(path):
    assert safe_load.load_file(REPO / path) == yaml.safe_load((REPO / path).read_text())


@pytest.mark.parametrize(
    "text, message",
    [
        ("a: 1\nb: 2\na: 3\n", "f.yaml line 3: a is given twice (first on line 1); keep one"),
        (
            "shots:\n  s:\n    frames: 1\n    epochs: 2\n    frames: 3\n",
            "f.yaml line 5: shots.s.frames is given twice (first on line 3); keep one",
        ),
        ("{x: 1, x: 1}\n", "f.yaml line 1: x is given twice (first on line 1); keep one"),
        ("true: 1\nyes: 2\n", "f.yaml line 2: True is given twice (first on line 1); keep one"),
    ],
    ids=["top", "nested", "flow", "same-value"],
)
def test_duplicate_keys_name_the_line_and_the_path(loader, text, message):
    with pytest.raises(LoadError) as err:
        safe_load.load_yaml_text(text, "f.yaml")
    assert str(err.value) == message
    assert err.value.kind == "duplicate"


def test_recursive_alias_is_refused(loader):
    with pytest.raises(LoadError, match=r"^f line 2: alias \*a refers to a value that contains"):
        safe_load.load_yaml_text("a: &a\n  - *a\n", "f")


def test_plain_values_and_nesting_are_bounded_too(loader, monkeypatch):
    monkeypatch.setattr(safe_load, "MAX_VALUES", 1000)  # the pure-Python parser takes 5 s at 100k
    assert len(safe_load.load_yaml_text("[" + "1," * 998 + "1]", "f")) == 999
    with pytest.raises(LoadError, match="f line 1: more than 1000 values, the limit"):
        safe_load.load_yaml_text("[" + "1," * 999 + "1]", "f")
    with pytest.raises(LoadError, match="nested more than 50 levels deep"):
        safe_load.load_yaml_text("a: " + "[" * 60 + "]" * 60, "f")
    assert safe_load.load_yaml_text("a: " + "[" * 40 + "]" * 40, "f")


def test_syntax_errors_keep_their_position():
    with pytest.raises(LoadError, match=r"^f is not valid YAML/JSON at line 2, column 1: "):
        safe_load.load_yaml_text("epochs: [1,\n", "f")


def test_an_oversized_file_is_refused_unread(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("#" * MAX_BYTES + "\nepochs: 3\n")
    with pytest.raises(LoadError, match=rf"^settings file \S+ is larger than {MAX_BYTES} bytes"):
        safe_load.load_file(big, f"settings file {big}")
    # an endless file (a device) is not read at all
    start = time.process_time()
    with pytest.raises(LoadError, match="it is a device, not a regular file"):
        safe_load.load_file("/dev/zero")
    assert time.process_time() - start < 1


def test_unreadable_and_non_utf8_files(tmp_path):
    with pytest.raises(LoadError, match=r"^cannot read \S+nope\.yaml: No such file"):
        safe_load.load_file(tmp_path / "nope.yaml")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"note: caf\xe9\n")
    with pytest.raises(LoadError, match=r"is not UTF-8 text \(byte 9\); save it as UTF-8"):
        safe_load.load_file(bad)


def test_json_is_bounded_and_refuses_duplicate_keys(tmp_path):
    with pytest.raises(LoadError, match=r"^j: key 'a' is given twice; keep one$"):
        safe_load.load_json_text('{"a": 1, "b": {"a": 2}, "a": 3}', "j")
    assert safe_load.load_json_text('{"a": 1, "b": {"a": 2}}', "j") == {"a": 1, "b": {"a": 2}}
    with pytest.raises(LoadError, match="nested more than 50 levels"):
        safe_load.load_json_text("[" * 100000 + "]" * 100000, "j", max_bytes=1 << 21)
    many = json.dumps([0] * (MAX_VALUES + 1))
    with pytest.raises(LoadError, match=f"more than {MAX_VALUES} values"):
        safe_load.load_json_text(many, "j")
    assert len(safe_load.load_json_text(many, "j", max_values=None)) == MAX_VALUES + 1
    path = tmp_path / "s.json"
    path.write_text('{"epochs": 3,\n "epochs": 4}')
    with pytest.raises(LoadError, match="key 'epochs' is given twice"):
        safe_load.load_file(path)


def test_check_values_counts_shared_containers_at_each_use():
    bomb_value = yaml.safe_load("x:\n" + indented(bomb(), "  "))  # cheap: shared lists
    start = time.process_time()
    with pytest.raises(LoadError, match=f"the config expands to more than {MAX_VALUES}"):
        safe_load.check_values(bomb_value, "the config")
    assert time.process_time() - start < 1
    shared = [1, 2, 3]
    assert safe_load.check_values({"a": shared, "b": shared}, "c") == 1 + 2 * (1 + 4)
    loop: list = []
    loop.append(loop)
    with pytest.raises(LoadError, match="contains itself"):
        safe_load.check_values({"a": loop}, "c")


def test_load_error_is_a_settings_error_and_a_value_error():
    with pytest.raises(LoadError) as err:
        safe_load.load_json_text("{", "j")
    assert isinstance(err.value, SettingsError) and isinstance(err.value, ValueError)
    assert err.value.exit_code == 2


# ---- running the CLI and Snakemake, measured -------------------------------------------------


@dataclass
class Run:
    code: int
    output: str
    cpu: float  # user + system seconds of the child
    wall: float
    peak: int  # bytes (the child's own peak RSS, from wait4's rusage)


# Runs argv[2:] and writes its rusage (CPU seconds, peak RSS in KiB) to argv[1]. A small process
# of its own: on Linux a child's ru_maxrss also counts the process it was forked from (pytest's,
# which holds TensorFlow and grows over a session), so measuring pytest's child directly would
# report pytest's memory.
LAUNCH = """
import json, resource, subprocess, sys
code = subprocess.run(sys.argv[2:]).returncode
u = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write(json.dumps([u.ru_utime + u.ru_stime, u.ru_maxrss]))
sys.exit(code)
"""


def run_measured(argv: list[str], cwd: Path, timeout: float = 60) -> Run:
    """Run argv; kill it (its whole process group) past `timeout`: a regression must not eat
    the machine."""
    out_file = cwd.parent / f".{cwd.name}.out"  # beside, not inside, the hashed folder
    usage_file = cwd.parent / f".{cwd.name}.usage"
    with open(out_file, "w+b") as out:
        start = time.perf_counter()
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        cmd = [sys.executable, "-c", LAUNCH, str(usage_file), *map(str, argv)]
        proc = subprocess.Popen(
            cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        timer = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
        timer.start()
        try:
            proc.wait()
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
        out.seek(0)
        text = out.read().decode(errors="replace")
    out_file.unlink()
    cpu, peak_kib = json.loads(usage_file.read_text()) if usage_file.exists() else (timeout, 0)
    usage_file.unlink(missing_ok=True)
    return Run(proc.returncode, text, cpu, wall, peak_kib * 1024)


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".snakemake" not in p.parts
    }


def check_one_line(run: Run, prefix: str, expect: str) -> None:
    assert run.code not in (0, None), run.output
    assert "Traceback" not in run.output, run.output
    lines = [line for line in run.output.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, f"expected one {prefix!r} line:\n{run.output}"
    assert re.search(expect, lines[0]), f"{lines[0]!r} does not match {expect!r}"


def check_cheap(run: Run) -> None:
    assert run.cpu < 10, f"{run.cpu:.1f} s of CPU"
    assert run.wall < 30, f"{run.wall:.1f} s"  # CPU is the measure; wall allows a shared machine
    assert run.peak < GB, f"peak RSS {run.peak / GB:.2f} GB"


SETTINGS_CASES = {
    "alias-bomb": (
        "input: plates/shot.####.png\nground_truth: paint/shot.####.png\nframes:\n"
        + indented(bomb(), "  "),
        r"^ccat-tf: error: settings file \S*bomb\.yaml line 9: YAML aliases expand past 100000 "
        r"values, the limit .*; write the values out instead of nesting aliases$",
    ),
    "oversized": (
        "# padding\n" * (MAX_BYTES // 10 + 1) + "epochs: 3\n",
        r"^ccat-tf: error: settings file \S*oversized\.yaml is larger than 1048576 bytes, the "
        r"limit for this file; .*check it is the right file$",
    ),
    "duplicate-key": (
        "epochs: 3\nmodel_size: small\nepochs: 30\n",
        r"^ccat-tf: error: settings file \S*duplicate-key\.yaml line 3: epochs is given twice "
        r"\(first on line 1\); keep one$",
    ),
}


@pytest.mark.parametrize("case", list(SETTINGS_CASES))
def test_cli_refuses_a_hostile_settings_file(tmp_path, case):
    text, expect = SETTINGS_CASES[case]
    folder = tmp_path / "shot"
    folder.mkdir()
    (folder / f"{case}.yaml").write_text(text)
    before = snapshot(folder)
    argv = [sys.executable, "-m", "ccat_tf", "train", "--settings", f"{case}.yaml"]
    run = run_measured([*argv, "--data-directory", "dd", "--no-progress"], folder)
    check_one_line(run, "ccat-tf: error:", expect)
    assert run.code == 2
    check_cheap(run)
    assert snapshot(folder) == before


# ---- the workflow (snakemake -n) -------------------------------------------------------------


def frames_on_disk(folder: Path, name: str, frames) -> str:
    for f in frames:
        (folder / f"{name}.{f:04d}.png").write_bytes(b"")  # -n only checks that they exist
    return f"{name}.####.png"


def shot(**overrides) -> dict:
    return {
        "input": "plate.####.png",
        "ground_truth": "paint.####.png",
        "frames": "1-4",
        **overrides,
    }


def write(folder: Path, name: str, text_or_config) -> None:
    text = text_or_config
    if not isinstance(text, str):
        text = yaml.safe_dump(text, sort_keys=False)
    (folder / name).write_text(text)


def two_shots_named_alike(folder):
    shot_a = "  shotA:\n    input: plate.####.png\n    ground_truth: paint.####.png\n"
    write(
        folder,
        "config.yaml",
        "shots:\n" + shot_a + "    frames: 1-4\n" + shot_a + "    frames: 1\n",
    )


def duplicate_key_in_a_shot(folder):
    write(folder, "config.yaml", yaml.safe_dump({"shots": {"shotA": shot()}}) + "    frames: 2\n")


def oversized_config(folder):
    write(folder, "config.yaml", "#" * MAX_BYTES + "\n" + yaml.safe_dump({"shots": {"s": shot()}}))


def bomb_in_frames(folder):
    text = "shots:\n  shotA:\n    input: plate.####.png\n    ground_truth: paint.####.png\n"
    write(folder, "config.yaml", text + "    frames:\n" + indented(bomb(), "      "))


def bomb_in_a_configfile(folder):
    write(folder, "other.yaml", "shots:\n  shotA:\n    frames:\n" + indented(bomb(), "      "))
    return ["--configfile", "other.yaml"]


def bomb_in_config_args(folder):
    write(folder, "config.yaml", {"shots": {"shotA": shot()}})
    levels = ["&a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    levels += [f"&a{k} [{', '.join([f'*a{k - 1}'] * 9)}]" for k in range(1, 9)]
    return ["--config", f"pretrain_settings=[{', '.join(levels)}]"]


def bomb_in_pretrain_settings(folder):
    write(folder, "config.yaml", {"shots": {"shotA": shot()}, "pretrain_settings": "pre.yaml"})
    write(folder, "pre.yaml", "tasks:\n" + indented(bomb(), "  "))


def missing_input_frame(folder):
    frames_on_disk(folder, "plate", [1, 2, 4])
    write(folder, "config.yaml", {"shots": {"shotA": shot()}})


def missing_validation_ground_truth(folder):
    frames_on_disk(folder, "plate", [1, 2, 3, 4, 5])
    frames_on_disk(folder, "paint", [1, 2, 3, 4])
    write(folder, "config.yaml", {"shots": {"shotA": shot(validation_frames="5")}})


def missing_checkpoint_file(folder):
    weights = {"initial_weights": "checkpoint", "checkpoint_file": "old/model.cat"}
    write(folder, "config.yaml", {"shots": {"shotA": shot(**weights)}})


def no_config_at_all(folder):
    pass


def good_config_with_anchors(folder):
    """Positive control: anchors, a merge key and another shot's model.cat as checkpoint."""
    text = (
        "shots:\n"
        "  A: &base\n    input: plate.####.png\n    ground_truth: paint.####.png\n"
        "    frames: 1-4\n    model_size: small\n"
        "  B:\n    <<: *base\n    initial_weights: checkpoint\n"
        "    checkpoint_file: results/A/model.cat\n"
    )
    write(folder, "config.yaml", text)


def good_configfile_only(folder):
    """Positive control: no config.yaml, a --configfile."""
    write(folder, "other.yaml", {"shots": {"shotA": shot()}})
    return ["--configfile", "other.yaml"]


FRAMES = ("plate", [1, 2, 3, 4]), ("paint", [1, 2, 3, 4])

# id: (set-up, regex of the one config: line, or None for a dry run that must succeed)
WORKFLOW_CASES = {
    "bomb-as-shot-frames": (
        bomb_in_frames,
        r"^config: config\.yaml line 11: YAML aliases expand past 100000 values",
    ),
    "bomb-in-configfile": (
        bomb_in_a_configfile,
        r"^config: \S+/other\.yaml line 9: YAML aliases expand past 100000 values",
    ),
    "bomb-in-config-args": (
        bomb_in_config_args,
        r"^config: the config \(config files and --config\) expands to more than 100000 values",
    ),
    "bomb-in-pretrain-settings": (
        bomb_in_pretrain_settings,
        r"^config: pretrain_settings: \S*pre\.yaml line 7: YAML aliases expand past 100000",
    ),
    "duplicate-shot-names": (
        two_shots_named_alike,
        r"^config: config\.yaml line 6: shot 'shotA' is defined twice; give each shot its own "
        r"name$",
    ),
    "duplicate-key-in-a-shot": (
        duplicate_key_in_a_shot,
        r"^config: config\.yaml line 6: shots\.shotA\.frames is given twice \(first on line 3\); "
        r"keep one$",
    ),
    "oversized-config": (
        oversized_config,
        r"^config: config\.yaml is larger than 1048576 bytes, the limit for this file",
    ),
    "missing-input-frame": (
        missing_input_frame,
        r"^config: shots\.shotA\.input: frame 3 \(plate\.0003\.png\) does not exist; render it "
        r"or fix frames$",
    ),
    "missing-validation-ground-truth": (
        missing_validation_ground_truth,
        r"^config: shots\.shotA\.ground_truth: frame 5 \(paint\.0005\.png\) does not exist; "
        r"render it or fix validation_frames$",
    ),
    "missing-checkpoint-file": (
        missing_checkpoint_file,
        r"^config: shots\.shotA\.checkpoint_file: old/model\.cat does not exist; train that "
        r"model first or fix checkpoint_file$",
    ),
    "no-config-yaml": (
        no_config_at_all,
        r"^config: config\.yaml not found in \S+; write one .* or pass --configfile$",
    ),
    "good-config-with-anchors": (good_config_with_anchors, None),
    "good-configfile-only": (good_configfile_only, None),
}
NEEDS_FRAMES = {
    "bomb-in-config-args",
    "bomb-in-pretrain-settings",
    "missing-checkpoint-file",
    "good-config-with-anchors",
    "good-configfile-only",
}


@pytest.fixture(scope="module")
def workflow_runs(tmp_path_factory):
    """Every case's `snakemake -n`, two at a time (each takes ~2.5 s of CPU)."""
    root = tmp_path_factory.mktemp("bad_config")
    jobs = {}
    for name, (setup, _) in WORKFLOW_CASES.items():
        folder = root / name
        folder.mkdir()
        if name in NEEDS_FRAMES:
            for prefix, frames in FRAMES:
                frames_on_disk(folder, prefix, frames)
        extra = setup(folder) or []
        cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", "."]
        jobs[name] = (folder, [*cmd, "-n", "--cores", "1", "--workflow-profile", "none", *extra])
    before = {name: snapshot(folder) for name, (folder, _) in jobs.items()}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {n: pool.submit(run_measured, argv, folder) for n, (folder, argv) in jobs.items()}
        runs = {name: future.result() for name, future in futures.items()}
    after = {name: snapshot(folder) for name, (folder, _) in jobs.items()}
    return runs, before, after


@pytest.mark.slow  # 13 snakemake -n runs; CI runs the slow tests
@pytest.mark.parametrize("case", list(WORKFLOW_CASES))
def test_workflow_config(workflow_runs, case):
    runs, before, after = workflow_runs
    run, expect = runs[case], WORKFLOW_CASES[case][1]
    if expect is None:
        assert run.code == 0, run.output
        assert "This was a dry-run" in run.output, run.output
    else:
        check_one_line(run, "config:", expect)
    check_cheap(run)
    assert after[case] == before[case], "files changed"
