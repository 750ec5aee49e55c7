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
    assert_inert(out, 11)
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
    dd = tmp_path / "dd"
    dd.mkdir()
    run = {
        "id": 1,
        "name": HOSTILE,
        "started": HOSTILE,
        "ended": None,
        "status": "finished\x1b]0;title\x07",
        "settings": {"model_size": "\u202esmall", "batch_size": "\x1b[2J", "crop_size": 64},
        "first_step": 0,
        "last_step": "\r\nccat-tf: error: forged",
        "last_loss": None,
        "total_steps": 10,
    }
    (dd / "runs.json").write_text(
        json.dumps({"runs": [run, {"id": 2, "name": 7, "settings": "x"}]})
    )
    return dd


def test_runs_table_shows_hostile_entries_escaped(hostile_runs):
    before = snapshot(hostile_runs)
    code, out, err = run_cli(["runs", hostile_runs])
    assert code == 0 and err == "", err
    assert_inert(out, 4)  # header, rule, two runs
    code, out, err = run_cli(["runs", hostile_runs, "--json"])
    assert code == 0 and "\x1b" not in out and json.loads(out)["runs"][0]["name"] == HOSTILE
    assert_untouched(before, snapshot(hostile_runs))


def test_runs_errors_quoting_the_run_table_are_escaped(hostile_runs):
    before = snapshot(hostile_runs)
    code, out, err = run_cli(["runs", hostile_runs, "--rename", "nope", "other"])
    check_error_output(
        code, err, r"no run 'nope' in \S+ \(runs: \\x1b\[2J.*forged \\u202eby the file, 7\)"
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
