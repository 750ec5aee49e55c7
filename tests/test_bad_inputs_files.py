"""Hostile files, through the real CLI: decompression bombs and terminal injection (issue 10).

* A .cat (or the model.keras inside it) whose members inflate past what any ccat_tf model needs
  is refused with one line, exit 2, in well under 10 s and 1 GB, whether its zip headers tell the
  size or lie about it.
* Text from a file (a .cat's metadata, a ``runs.json``, a lock file) reaches the terminal with its
  control characters escaped: it can neither clear the screen, set the title, nor forge a
  ``ccat-tf: error:`` line.

The bombs are written by hand (a deflate stream of zeros repeated block by block), so a member
that claims gigabytes costs the test a few megabytes and milliseconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import pytest
from test_bad_inputs import assert_untouched, check_error_output, snapshot

from ccat_tf import bounded_zip, catfile, cli
from ccat_tf.safe_text import visible

GiB, MiB = 1 << 30, 1 << 20
BOMB_SECONDS, BOMB_KB = 10, 1_000_000  # each refusal: under 10 s and 1 GB (ru_maxrss is in KB)
HOSTILE = "\x1b[2J\x1b]0;pwned\x07run\r\nccat-tf: error: forged \u202eby the file"
CONTROL_BYTES = ("\x1b", "\x07", "\r", "\u202e")


# ---- building zips by hand -----------------------------------------------------------------


def zeros_deflated(size: int) -> bytes:
    """A raw deflate stream inflating to ``size`` zero bytes (a multiple of 1 MiB), built from
    one compressed 1 MiB block repeated: a full flush makes every block independent."""
    assert size % MiB == 0
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = comp.compress(bytes(MiB)) + comp.flush(zlib.Z_FULL_FLUSH)
    return block * (size // MiB) + comp.flush(zlib.Z_FINISH)


def raw_zip(members: list[tuple[str, int, bytes, int, int]]) -> bytes:
    """A zip of ``(name, method, stored bytes, recorded size, crc)``: the sizes are what we say."""
    out, directory = io.BytesIO(), io.BytesIO()
    for name, method, data, size, crc in members:
        offset, encoded = out.tell(), name.encode()
        fields = (20, 0, method, 0, 0x21, crc, len(data), size, len(encoded))
        out.write(struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", *fields, 0) + encoded + data)
        directory.write(
            struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, *fields, 0, 0, 0, 0, 0, offset)
            + encoded
        )
    start, table = out.tell(), directory.getvalue()
    out.write(table)
    n = len(members)
    out.write(struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, n, n, len(table), start, 0))
    return out.getvalue()


def stored(name: str, data: bytes) -> tuple[str, int, bytes, int, int]:
    return name, zipfile.ZIP_STORED, data, len(data), zlib.crc32(data)


def pack_cat(path: Path, model_bytes: bytes, meta_extra=None, meta_member=None) -> Path:
    """A .cat around ``model_bytes`` with a valid checksum, as ccat-tf train writes one."""
    meta = {
        "format": 1,
        "model_size": "small",
        "input_channels": ["R", "G", "B"],
        "output_channels": ["R", "G", "B"],
        "residual": True,
        "divisor": 8,
        "model_sha256": hashlib.sha256(model_bytes).hexdigest(),
        **(meta_extra or {}),
    }
    meta_member = meta_member or stored(catfile.META_NAME, json.dumps(meta).encode())
    path.write_bytes(raw_zip([meta_member, stored(catfile.MODEL_NAME, model_bytes)]))
    return path


def inner_members(good_keras: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(good_keras)) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def keras_with(good_keras: bytes, name: str, member) -> bytes:
    """The good model.keras with member ``name`` replaced by the raw ``member`` tuple."""
    parts = inner_members(good_keras)
    return raw_zip([member if n == name else stored(n, data) for n, data in parts.items()])


@pytest.fixture(scope="module")
def good_keras(tmp_path_factory) -> bytes:
    from ccat_tf.models import build_model

    path = tmp_path_factory.mktemp("good") / "m.keras"
    build_model(3, 3, "small").save(path)
    return path.read_bytes()


# ---- running the CLI ---------------------------------------------------------------------------


# Starts the command and writes its peak RSS (KB) to argv[1]. A small process of its own, because
# on Linux a child's ru_maxrss counts the memory of the process it was forked from (pytest's,
# with TensorFlow loaded).
MEASURE = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[2:]).returncode
open(sys.argv[1], "w").write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""


def run_subprocess(argv: list[str], tmp_path: Path) -> tuple[int, str, float, int]:
    """``python -m ccat_tf argv``: exit code, stderr, seconds, and its peak RSS in KB."""
    peak = tmp_path / "peak.txt"
    cmd = [sys.executable, "-c", MEASURE, peak, sys.executable, "-m", "ccat_tf", *argv]
    start = time.monotonic()
    proc = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - start
    peak_kb = int(peak.read_text())
    peak.unlink()
    return proc.returncode, proc.stderr, seconds, peak_kb


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``ccat_tf.cli.main`` in this process: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def assert_bomb_refused(cat: Path, expect: str, tmp_path: Path) -> None:
    before = snapshot(cat.parent)
    code, stderr, seconds, peak_kb = run_subprocess(["info", cat], tmp_path)
    check_error_output(code, stderr, expect)
    assert code == 2, stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert seconds < BOMB_SECONDS, f"took {seconds:.1f} s"
    assert peak_kb < BOMB_KB, f"peak memory {peak_kb / 1024:.0f} MB"
    assert_untouched(before, snapshot(cat.parent))
    print(f"{cat.name}: refused in {seconds:.2f} s, peak {peak_kb / 1024:.0f} MB")


# ---- decompression bombs -----------------------------------------------------------------------


def test_inner_config_bomb_with_an_honest_header(good_keras, tmp_path):
    """The issue's file: model.keras holds a config.json that inflates to 2.5 GiB."""
    bomb = zeros_deflated(2560 * MiB)  # 2.5 MB on disk; the CRC is never reached
    member = ("config.json", zipfile.ZIP_DEFLATED, bomb, 2560 * MiB, 0)
    (tmp_path / "models").mkdir()
    cat = pack_cat(tmp_path / "models" / "bomb.cat", keras_with(good_keras, "config.json", member))
    assert_bomb_refused(
        cat,
        r"bomb\.cat is not a readable \.cat file: member model\.keras/config\.json would "
        r"inflate to 2\.5 GiB, more than the 1 MiB a ccat_tf model of any size needs .*; use "
        r"another checkpoint$",
        tmp_path,
    )


def test_inner_config_bomb_whose_header_lies(good_keras, tmp_path):
    """config.json claims 512 KiB (under its cap) while its stream inflates to 2.5 GiB."""
    bomb = zeros_deflated(2560 * MiB)
    member = ("config.json", zipfile.ZIP_DEFLATED, bomb, 512 * 1024, 0)
    (tmp_path / "models").mkdir()
    cat = pack_cat(tmp_path / "models" / "lying.cat", keras_with(good_keras, "config.json", member))
    assert_bomb_refused(
        cat, r"lying\.cat: the model inside is damaged .*CRC.*; use another checkpoint$", tmp_path
    )


def test_outer_model_bomb_with_an_honest_header(tmp_path):
    """The issue's other file: model.keras itself inflates to 1.5 GiB."""
    (tmp_path / "models").mkdir()
    cat = tmp_path / "models" / "outer.cat"
    meta = stored(catfile.META_NAME, json.dumps({"format": 1}).encode())
    model = (catfile.MODEL_NAME, zipfile.ZIP_DEFLATED, zeros_deflated(1536 * MiB), 1536 * MiB, 0)
    cat.write_bytes(raw_zip([meta, model]))
    assert_bomb_refused(
        cat,
        r"outer\.cat is not a readable \.cat file: member model\.keras would inflate to 1\.5 GiB, "
        r"more than the 129 MiB a ccat_tf model of any size needs .*; use another checkpoint$",
        tmp_path,
    )


def test_outer_model_bomb_whose_header_lies(tmp_path):
    (tmp_path / "models").mkdir()
    cat = tmp_path / "models" / "outer_lying.cat"
    meta = stored(catfile.META_NAME, json.dumps({"format": 1}).encode())
    model = (catfile.MODEL_NAME, zipfile.ZIP_DEFLATED, zeros_deflated(1536 * MiB), 10 * MiB, 0)
    cat.write_bytes(raw_zip([meta, model]))
    assert_bomb_refused(
        cat, r"outer_lying\.cat is damaged \(.*CRC.*\); use another checkpoint$", tmp_path
    )


def test_metadata_bomb(tmp_path):
    (tmp_path / "models").mkdir()
    meta = (catfile.META_NAME, zipfile.ZIP_DEFLATED, zeros_deflated(64 * MiB), 64 * MiB, 0)
    cat = pack_cat(tmp_path / "models" / "meta.cat", b"", meta_member=meta)
    assert_bomb_refused(
        cat, r"member ccat\.json would inflate to 64 MiB, more than the 4 MiB", tmp_path
    )


def test_a_huge_table_of_contents_is_refused_before_it_is_parsed(tmp_path):
    (tmp_path / "models").mkdir()
    cat = tmp_path / "models" / "toc.cat"
    cat.write_bytes(raw_zip([stored(f"m{i:05d}", b"") for i in range(20000)]))
    assert_bomb_refused(
        cat, r"toc\.cat is not a readable \.cat file: its table of contents takes", tmp_path
    )


def test_weights_that_unpack_past_the_cap_are_refused(good_keras, tmp_path):
    """model.weights.h5 declares a 1 GiB dataset (HDF5 stores none of it): Keras would allocate it."""
    import h5py

    h5_path = tmp_path / "w.h5"
    h5_path.write_bytes(inner_members(good_keras)[catfile.WEIGHTS_MEMBER])
    with h5py.File(h5_path, "r+") as h5:
        h5.create_dataset(
            "bomb", shape=(1 << 28,), dtype="float32", chunks=(1 << 20,), compression="gzip"
        )
    member = stored(catfile.WEIGHTS_MEMBER, h5_path.read_bytes())
    h5_path.unlink()
    (tmp_path / "models").mkdir()
    cat = pack_cat(
        tmp_path / "models" / "h5.cat", keras_with(good_keras, catfile.WEIGHTS_MEMBER, member)
    )
    assert_bomb_refused(
        cat,
        r"h5\.cat is not a readable \.cat file: its weights unpack to 1 GiB, more than the 128 MiB",
        tmp_path,
    )


def test_stream_stops_at_the_cap_whatever_the_header_says(tmp_path):
    """Past the header check, the bytes inflated are counted: reading stops one chunk past the cap."""
    path = tmp_path / "z.zip"
    path.write_bytes(
        raw_zip([("big", zipfile.ZIP_DEFLATED, zeros_deflated(256 * MiB), 256 * MiB, 0)])
    )
    seen = []
    with (
        zipfile.ZipFile(path) as zf,
        pytest.raises(bounded_zip.LimitExceeded, match="inflates past 1 MiB"),
    ):
        bounded_zip.stream(zf, "big", MiB, seen.append)
    assert sum(map(len, seen)) <= MiB


def test_the_largest_model_fits_the_caps(tmp_path):
    """The caps leave room for the largest network with the most channels (see catfile)."""
    from ccat_tf.models import build_model

    path = catfile.save_cat(
        tmp_path / "large.cat", build_model(64, 64, "large"), {"model_size": "large"}
    )
    model, meta = catfile.load_cat(path)
    assert model.count_params() > 4_000_000 and meta["model_size"] == "large"


# ---- terminal injection ------------------------------------------------------------------------


def assert_inert(text: str, lines: int | None = None) -> None:
    """No control character in ``text``; ``lines`` lines, none of them an error (when given)."""
    for char in CONTROL_BYTES:
        assert char not in text, f"{char!r} reached the terminal: {text!r}"
    if lines is not None:
        assert len(text.splitlines()) == lines, text
        assert not [line for line in text.splitlines() if line.startswith("ccat-tf: error")], text


def test_visible_escapes_every_control_and_keeps_the_rest():
    assert visible(HOSTILE) == (
        "\\x1b[2J\\x1b]0;pwned\\x07run\\r\\nccat-tf: error: forged \\u202eby the file"
    )
    assert visible("\x00\t\x7f\x85\x9b\u2028\u2066") == "\\x00\\t\\x7f\\x85\\x9b\\u2028\\u2066"
    assert visible("shot_v2/comp.####.exr é ✓ 日本") == "shot_v2/comp.####.exr é ✓ 日本"
    assert visible(7) == "7"


@pytest.fixture
def hostile_cat(tmp_path) -> Path:
    from ccat_tf.models import build_model

    meta = {
        "model_size": "small",
        "input_channels": ["R", "G", HOSTILE],
        "output_channels": ["R", "G", "B"],
        "residual": True,
        "divisor": 8,
        "run_name": HOSTILE,
        "created": HOSTILE,
        "dataset": {"input": HOSTILE, "ground_truth": "gt\x1b[31m", "frames": HOSTILE, "width": 8},
    }
    (tmp_path / "models").mkdir()
    return catfile.save_cat(tmp_path / "models" / "hostile.cat", build_model(3, 3, "small"), meta)


def test_info_shows_hostile_metadata_escaped(hostile_cat):
    before = snapshot(hostile_cat.parent)
    code, out, err = run_cli(["info", hostile_cat])
    assert code == 0 and err == "", err
    assert_inert(out, 12)  # one row per fact, the architecture row included
    assert visible(HOSTILE) in out and "run\\r\\nccat-tf: error: forged \\u202eby" in out
    code, out, err = run_cli(["info", hostile_cat, "--json"])
    assert code == 0 and "\x1b" not in out and "\n\x1b" not in out
    assert json.loads(out)["run_name"] == HOSTILE  # JSON escapes, and round-trips
    assert_untouched(before, snapshot(hostile_cat.parent))


def test_info_refuses_a_hostile_transform_in_one_escaped_line(hostile_cat):
    """Metadata of the wrong kind is refused where it is read (ModelInfo), its text escaped."""
    meta = catfile.read_metadata(hostile_cat)
    meta["input_transform"] = ["linear", "linear", HOSTILE]
    cat = catfile.save_cat(
        hostile_cat.with_name("kind.cat"), catfile.load_cat(hostile_cat)[0], meta
    )
    before = snapshot(hostile_cat.parent)
    code, out, err = run_cli(["info", cat])
    check_error_output(code, err, r"kind\.cat: its input_transform .*\\x1b\[2J")
    assert_untouched(before, snapshot(hostile_cat.parent))


def test_errors_quoting_metadata_are_escaped(hostile_cat, tiny_dataset, tmp_path):
    """A checkpoint_file whose model_size is hostile text: the error quotes it, escaped."""
    meta = catfile.read_metadata(hostile_cat)
    meta["model_size"] = HOSTILE
    cat = catfile.save_cat(
        hostile_cat.with_name("size.cat"), catfile.load_cat(hostile_cat)[0], meta
    )
    before = snapshot(tmp_path)
    argv = ["train", "--no-progress", "--input", tiny_dataset["input"], "--frames", "1-4"]
    argv += ["--ground-truth", tiny_dataset["ground_truth"], "--data-directory", tmp_path / "dd"]
    argv += ["--initial-weights", "checkpoint", "--checkpoint-file", cat, "--model-size", "small"]
    argv += ["--no-use-gpu-if-available"]
    code, out, err = run_cli(argv)
    check_error_output(code, err, r"size\.cat does not fit this run: it has model_size \\x1b\[2J")
    assert code == 2
    assert_inert(err)  # the notices before it are the training's own
    assert err.splitlines()[-1].startswith("ccat-tf: error: checkpoint_file ")
    assert_untouched(before, {k: v for k, v in snapshot(tmp_path).items() if k != "dd/.ccat.lock"})


@pytest.fixture
def hostile_runs(tmp_path) -> Path:
    """A run table whose text fields hold control sequences (names must be run names: a table
    with another name is refused, see test_runs_json_with_a_wrong_type_is_one_line)."""
    dd = tmp_path / "dd"
    dd.mkdir()
    run = {
        "id": 1,
        "name": "run1",
        "started": HOSTILE,
        "ended": "\r\nccat-tf: error: forged",
        "status": "finished\x1b]0;title\x07",
        "settings": {"model_size": "\u202esmall", "batch_size": "\x1b[2J", "crop_size": 64},
        "first_step": 0,
        "last_step": 10,
        "last_loss": None,
        "total_steps": 10,
    }
    (dd / "runs.json").write_text(
        json.dumps({"runs": [run, {"id": 2, "name": "7", "settings": {"model_size": HOSTILE}}]})
    )
    return dd


def test_runs_table_shows_hostile_entries_escaped(hostile_runs):
    before = snapshot(hostile_runs)
    code, out, err = run_cli(["runs", hostile_runs])
    assert code == 0 and err == "", err
    assert_inert(out, 4)  # header, rule, two runs
    code, out, err = run_cli(["runs", hostile_runs, "--json"])
    assert code == 0 and "\x1b" not in out and json.loads(out)["runs"][0]["started"] == HOSTILE
    assert_untouched(before, snapshot(hostile_runs))


def test_runs_errors_quoting_the_run_table_are_escaped(hostile_runs):
    """A name that is not a run name refuses the table, quoting the name escaped."""
    table = json.loads((hostile_runs / "runs.json").read_text())
    table["runs"][0]["name"] = HOSTILE
    (hostile_runs / "runs.json").write_text(json.dumps(table))
    before = snapshot(hostile_runs)
    for argv in (["runs", hostile_runs], ["runs", hostile_runs, "--rename", "nope", "other"]):
        code, out, err = run_cli(argv)
        check_error_output(
            code, err, r"runs\.json is damaged: run 1's name '\\x1b\[2J.* is not a run name"
        )
        assert code == 2
        assert_inert(err)
        assert len(err.splitlines()) == 1, err
    assert_untouched(before, {k: v for k, v in snapshot(hostile_runs).items() if k != ".ccat.lock"})


def test_a_hostile_lock_file_is_quoted_escaped(hostile_runs):
    """The lock file names its holder; a forged one cannot drive the terminal either."""
    from ccat_tf.atomic import DirectoryLock

    lock = DirectoryLock(hostile_runs, purpose="test").acquire()
    try:
        (hostile_runs / ".ccat.lock").write_text(HOSTILE)
        code, out, err = run_cli(["runs", hostile_runs, "--rename", "7", "other"])
    finally:
        lock.release()
    check_error_output(code, err, r"it is in use by a training process \(\\x1b\[2J")
    assert_inert(err)
    assert len(err.splitlines()) == 1, err


# ---- run tables: every entry typed, a run's files never the Data Directory's own ---------------


def _finished_run_folder(tmp_path: Path) -> Path:
    """A Data Directory with one finished run's files, a dotfile and the lock file."""
    from ccat_tf import runs

    dd = tmp_path / "dd"
    dd.mkdir()
    runs.start_run(dd, {"model_size": "small"}, 0, 4, name="run1")
    (dd / "run1.step0000004.cat").write_bytes(b"PK\x05\x06" + bytes(18))
    (dd / "run1").mkdir()
    (dd / "run1" / "events.out.tfevents.1.host.summary").write_text("events")
    (dd / ".gitignore").write_text("x\n")
    (dd / ".ccat.lock").write_text("")
    return dd


def _files(snap: dict) -> dict:
    """A snapshot without the lock file (the lock's holder writes its pid there)."""
    return {k: v for k, v in snap.items() if k != ".ccat.lock"}


def _edit_run(dd: Path, **fields) -> None:
    table = json.loads((dd / "runs.json").read_text())
    table["runs"][0].update(fields)
    (dd / "runs.json").write_text(json.dumps(table))


def test_rename_of_a_run_with_an_empty_name_renames_nothing(tmp_path):
    """An empty name read from runs.json matched every dotfile: .gitignore became
    shot.gitignore and the held lock file shot.ccat.lock."""
    from ccat_tf import runs

    dd = _finished_run_folder(tmp_path)
    _edit_run(dd, name="")
    before = snapshot(dd)
    code, _, err = run_cli(["runs", "--rename", "1", "shot", dd])
    check_error_output(code, err, r"runs\.json is damaged: run 1's name '' is not a run name")
    assert code == 2 and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in dd.iterdir()) == sorted(
        [".ccat.lock", ".gitignore", "run1", "run1.step0000004.cat", "runs.json"]
    )
    assert_untouched(_files(before), _files(snapshot(dd)))
    # Whatever a caller passes, a name that is not a run name owns no file.
    for name in ("", ".", "..", ".ccat", "runs", "a/b"):
        assert runs.run_files(dd, name) == []
    # And a rename below the table check refuses such an old name too.
    table = [{"id": 1, "name": ""}]
    with pytest.raises(Exception, match="is not a run name"):
        from unittest import mock

        with mock.patch.object(runs, "load_runs", return_value=table):
            runs._rename_locked(dd, "1", "shot")  # noqa: SLF001
    assert (dd / ".gitignore").exists() and (dd / ".ccat.lock").exists()


BAD_RUN_ENTRIES = [
    ("id-text", {"id": "abc"}, r"run 1's id is 'abc', not a whole number"),
    ("id-list", {"id": [1]}, r"run 1's id is \[1\], not a whole number"),
    ("id-bool", {"id": True}, r"run 1's id is True"),
    ("id-float", {"id": 1.5}, r"run 1's id is 1\.5"),
    ("name-null", {"name": None}, r"run 1's name None is not a run name"),
    ("name-int", {"name": 5}, r"run 1's name 5 is not a run name"),
    ("name-list", {"name": ["a"]}, r"run 1's name \['a'\] is not a run name"),
    ("name-path", {"name": "../x"}, r"run 1's name '\.\./x' is not a run name"),
    ("loss-10-400", {"last_loss": 10**400}, r"run 1's last_loss is 1000.*not a finite number"),
    ("loss-text", {"last_loss": "nan?"}, r"run 1's last_loss is 'nan\?'"),
    ("steps-text", {"first_step": "x"}, r"run 1's first_step is 'x'"),
    ("step-negative", {"last_step": -1}, r"run 1's last_step is -1"),
    ("settings-list", {"settings": [1]}, r"run 1's settings is \[1\], not a mapping"),
    ("started-int", {"started": 12345}, r"run 1's started is 12345, not text"),
    ("status-dict", {"status": {"x": 1}}, r"run 1's status is \{'x': 1\}, not text"),
]


@pytest.mark.parametrize(
    "fields,expect", [c[1:] for c in BAD_RUN_ENTRIES], ids=[c[0] for c in BAD_RUN_ENTRIES]
)
def test_runs_json_with_a_wrong_type_is_one_line(tmp_path, fields, expect):
    """`runs`, `runs --rename` and a training read the table: each says which entry is wrong
    (they raised OverflowError or TypeError, exit 1, a training after 18 s of work)."""
    from ccat_tf import runs

    dd = _finished_run_folder(tmp_path)
    _edit_run(dd, **fields)
    before = snapshot(dd)
    for argv in (["runs", dd], ["runs", dd, "--json"], ["runs", "--rename", "1", "hero", dd]):
        code, out, err = run_cli(argv)
        check_error_output(code, err, r"runs\.json is damaged: " + expect)
        assert code == 2 and len(err.splitlines()) == 1 and out == "", err
    # What a training calls first: refused before any work.
    with pytest.raises(Exception, match=expect) as raised:
        runs.start_run(dd, {}, 0, 4)
    assert type(raised.value).__name__ == "DataDirectoryError"
    assert_untouched(_files(before), _files(snapshot(dd)))


def test_duplicate_ids_or_names_refuse_the_table(tmp_path):
    dd = _finished_run_folder(tmp_path)
    table = json.loads((dd / "runs.json").read_text())
    first = table["runs"][0]
    for second, expect in (
        (dict(first, name="run2"), r"run 2's id 1 is used by an earlier run too"),
        (dict(first, id=2), r"run 2's name 'run1' is used by an earlier run too"),
    ):
        (dd / "runs.json").write_text(json.dumps({"runs": [first, second]}))
        code, _, err = run_cli(["runs", dd])
        check_error_output(code, err, expect)


def test_run_table_formatting_never_raises():
    from ccat_tf import runs

    odd = [{"id": 1, "name": "a", "last_loss": 10**400}, {"id": 2, "name": "b", "last_loss": "x"}]
    text = runs.format_run_table(odd)
    assert text.count("\n") == 3 and " - " in text
    assert runs._finite_or_none(10**400) is None  # noqa: SLF001
    assert runs._finite_or_none([1]) is None and runs._finite_or_none(True) is None  # noqa: SLF001
    assert runs._finite_or_none("0.5") == 0.5  # noqa: SLF001


# ---- files that are not regular files: devices never end, FIFOs block -------------------------


def test_what_a_path_is_is_said(tmp_path):
    import os

    from ccat_tf import regular_file

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    (tmp_path / "zero").symlink_to("/dev/zero")
    (tmp_path / "file").write_text("x")
    assert regular_file.problem(tmp_path / "file") is None
    assert regular_file.problem(fifo) == "it is a named pipe (FIFO), not a regular file"
    assert regular_file.problem("/dev/zero") == "it is a device, not a regular file"
    assert regular_file.problem(tmp_path / "zero") == "it is a device, not a regular file"
    assert "symbolic link loop" in regular_file.problem(tmp_path / "loop")
    assert "which does not exist" in regular_file.problem(tmp_path / "dangling")
    assert regular_file.problem(tmp_path / "nope") == "it does not exist"
    assert regular_file.problem(tmp_path) == "it is a folder, not a file"
    start = time.monotonic()
    with pytest.raises(regular_file.NotRegularFile, match="named pipe"):
        regular_file.open_regular(fifo)  # returns at once: no writer is waited for
    assert time.monotonic() - start < 5
    with regular_file.open_regular(tmp_path / "file") as fh:
        assert fh.read() == b"x"


@pytest.mark.parametrize("kind", ["fifo", "device", "loop", "dangling"])
def test_a_frame_that_is_not_a_file_says_what_it_is(tmp_path, kind):
    """It said "the file is empty (0 bytes)" (a FIFO, a link to /dev/zero) or "does not exist"
    (a link loop)."""
    import os

    from ccat_tf import imageio
    from ccat_tf.errors import DataSetError

    frame = tmp_path / "shot.0001.png"
    expect = {
        "fifo": "it is a named pipe (FIFO), not a regular file",
        "device": "it is a device, not a regular file",
        "loop": "it is a symbolic link loop",
        "dangling": f"it is a symbolic link to {tmp_path / 'gone.png'}, which does not exist",
    }[kind]
    if kind == "fifo":
        os.mkfifo(frame)
    elif kind == "device":
        frame.symlink_to("/dev/zero")
    elif kind == "loop":
        frame.symlink_to(frame)
    else:
        frame.symlink_to(tmp_path / "gone.png")
    with pytest.raises(DataSetError) as err:
        imageio.read_image(frame)
    assert f"cannot read frame {frame}: {expect}" in str(err.value)


def test_a_million_frames_of_a_four_frame_shot_are_counted_from_one_listing(tmp_path):
    """14 s (a stat per frame) before; the count stays exact."""
    from ccat_tf import frames

    for f in (1, 2, 3, 4):
        (tmp_path / f"s.{f:04d}.png").write_bytes(b"x")
    import os

    os.mkfifo(tmp_path / "s.0002.png.fifo")  # a name that is no frame of the pattern
    (tmp_path / "s.0003.png").unlink()
    (tmp_path / "s.0003.png").symlink_to("/dev/zero")
    seq = frames.Sequence(str(tmp_path / "s.####.png"), "1-1000000")
    start = time.monotonic()
    absent, not_files = seq.scan()
    assert time.monotonic() - start < 5
    assert len(absent) == 999_996 and absent[:2] == [5, 6] and not_files == [3]
    assert seq.missing()[:3] == [3, 5, 6] and len(seq.missing()) == 999_997
    # Frames in folders of their own are looked at one by one, with the same answer.
    nested = frames.Sequence(str(tmp_path / "####" / "s.png"), "1-3")
    assert nested.scan() == ([1, 2, 3], [])


def test_an_exr_with_4000_channels_says_how_many_it_may_have(tmp_path):
    """OIIO's own words were 'raise the OIIO global attribute limits:channels'."""
    import numpy as np
    from conftest import write_exr

    from ccat_tf import imageio
    from ccat_tf.errors import DataSetError

    names = ["R", "G", "B"] + [f"c{i}" for i in range(3997)]
    frame = tmp_path / "wide.0001.exr"
    write_exr(frame, np.zeros((4, 4, 4000), np.float32), names)
    with pytest.raises(DataSetError) as err:
        imageio.read_image(frame)
    message = str(err.value)
    assert "it has 4000 channels (at most 1024)" in message
    assert "limits:channels" not in message and "OIIO" not in message


# ---- hooks cannot end the command silently ----------------------------------------------------


@pytest.mark.parametrize("raiser", ["exit", "sys.exit(3)", "GeneratorExit"])
def test_a_hook_raising_system_exit_is_a_hook_error(raiser):
    """`--before-render builtins:exit` ended infer with status 0, no output and no frames."""
    from ccat_tf import hooks
    from ccat_tf.errors import HookError

    def hook():
        if raiser == "exit":
            exit()  # noqa: PLR1722 - the builtin a user names
        if raiser == "sys.exit(3)":
            sys.exit(3)
        raise GeneratorExit

    with pytest.raises(
        HookError, match=r"on_checkpoint hook \S+ raised (SystemExit|GeneratorExit)"
    ):
        hooks.call_hooks("on_checkpoint", [hook], step=1)

    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # Ctrl-C still stops at once
        hooks.call_hooks("on_checkpoint", [interrupted])


def test_a_hook_file_that_exits_while_loading_is_a_hook_error(tmp_path):
    from ccat_tf import hooks
    from ccat_tf.errors import HookError

    script = tmp_path / "quits.py"
    script.write_text("import sys\nsys.exit(0)\n")
    with pytest.raises(HookError, match=r"loading \S+quits\.py raised SystemExit"):
        hooks.resolve_hook(f"{script}:f")


# ---- graph: a hostile loss table -------------------------------------------------------------


def test_graph_of_absurd_loss_values_plots_the_rest_silently(tmp_path):
    """±1e308 losses printed three RuntimeWarnings and ended in 'unexpected ValueError: arange'."""
    import subprocess

    table = tmp_path / "loss.csv"
    table.write_text(
        "run,step,loss,stage_scale\n"
        "run1,1,1e308,0.25\nrun1,2,-1e308,0.25\nrun1,3,0.5,1e308\nrun1,4,0.25,1.0\n"
        "run$x,1e308,0.3,1.0\nrun$x,5,inf,1.0\nrun$x,6,0.2,1.0\n"
    )
    out = tmp_path / "graph.png"
    argv = [sys.executable, "-m", "ccat_tf", "graph", str(table), "--output", str(out)]
    argv += ["--title", "$\\bad{"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"wrote {out}"], proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Nothing plottable left: one line.
    table.write_text("run,step,loss\nrun1,1,1e308\nrun1,2,-1e308\nrun1,1e300,0.5\n")
    code, _, err = run_cli(["graph", table, "--output", tmp_path / "g2.png"])
    check_error_output(code, err, r"loss\.csv has no loss values \(a finite loss of at most")
    assert not (tmp_path / "g2.png").exists()
