"""The command line's output: library log lines kept out, missing optional parts named."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from conftest import REPO

from ccat_tf import cli

FAKE_LOGS = textwrap.dedent(
    r"""
    import os, sys, time
    from ccat_tf.native_stderr import without_library_logs

    with without_library_logs():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, b"I0000 00:00:1796011681.854198   27760 cudart_stub.cc:31] Could not find cuda drivers\n")
        os.write(2, b"E0000 00:00:1796011686.269104   27760 cuda_platform.cc:52] failed call to cuInit\n")
        os.write(2, b"2024-01-01 12:00:00.000000: I tensorflow/core/util/port.cc:113] oneDNN custom operations are on\n")
        os.write(2, b"libpng error: IDAT: Read error\n")
        print("ccat-tf: Channels: R+G+B -> R+G+B", file=sys.stderr, flush=True)
        os.write(2, b"\r[#####] step 1/2")  # a progress bar's partial line passes at once
        time.sleep(0.3)
        os.write(2, b"\r[##########] step 2/2\n")
        os.write(2, b"E0000 00:00:1.2 1 half")  # a log line cut short at exit is dropped too
    print("after", file=sys.stderr)
    """
)


def test_library_log_lines_are_filtered_and_everything_else_passes():
    proc = subprocess.run(
        [sys.executable, "-c", FAKE_LOGS], capture_output=True, timeout=60, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == (
        b"ccat-tf: Channels: R+G+B -> R+G+B\n\r[#####] step 1/2\r[##########] step 2/2\nafter\n"
    )


def test_debug_shows_library_log_lines():
    code = FAKE_LOGS.replace("with without_library_logs():", "if True:")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "cudart_stub.cc:31]" in proc.stderr


def test_a_missing_optional_package_names_its_extra(tmp_path, monkeypatch, capsys):
    from ccat_tf.model import Model
    from ccat_tf.model_info import ModelInfo
    from ccat_tf.models import build_model

    rgb, linear = ("R", "G", "B"), ("linear",) * 3
    info = ModelInfo(rgb, rgb, linear, linear, divisor=8, residual=True, model_size="small")
    model = Model(build_model(3, 3, "small"), info).save(tmp_path / "m.cat")
    for name in ("onnx", "tf2onnx"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    code = cli.main(
        ["export", str(model), "--format", "onnx", "--output", str(tmp_path / "m.onnx")]
    )
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ccat-tf: error: export needs the optional ")
    assert lines[0].endswith("; install it with pip install 'ccat_tf[export]'")
    assert not (tmp_path / "m.onnx").exists()


def test_every_command_prints_its_help(capsys):
    """--help of every command (help texts hold '%', which argparse would try to format)."""
    import pytest

    commands = sorted(cli.build_parser()._subparsers._group_actions[0].choices)
    assert {"train", "infer", "pretrain"} <= set(commands)
    for command in commands:
        with pytest.raises(SystemExit) as stop:
            cli.main([command, "--help"])
        assert stop.value.code == 0, command
        assert "usage:" in capsys.readouterr().out, command


def test_a_lost_rank_ends_the_process_right_after_its_one_line(monkeypatch, capsys):
    """A distributed runtime that lost a peer cannot be torn down quietly (TensorFlow's
    collectives leave a pool whose finaliser prints a traceback at exit, after the error line):
    the CLI ends the process with os._exit once the line is out. Other errors return normally."""
    from ccat_tf import distributed
    from ccat_tf.commands import info
    from ccat_tf.errors import DataSetError

    cluster = distributed.Cluster(0, 2, "127.0.0.1", 1, "COPYCAT")
    lost = distributed.lost_rank_error(
        __import__("tensorflow").errors.UnavailableError(None, None, "task:1 Socket closed"),
        cluster,
        20,
    )
    exits = []

    def fake_exit(code):
        exits.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(cli.os, "_exit", fake_exit)
    for err, ended in ((lost, True), (DataSetError("bad"), False)):

        def fail(args, err=err):
            raise err

        monkeypatch.setattr(info, "run", fail)
        exits.clear()
        if ended:
            with pytest.raises(SystemExit):
                cli.main(["info", "x.cat"])
        else:
            assert cli.main(["info", "x.cat"]) == 2
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert exits == ([2] if ended else [])
        assert line.startswith("ccat-tf: error: ")
    assert "rank 0: rank 1 stopped answering" in str(lost)
