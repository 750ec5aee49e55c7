"""Frame specs and sequence patterns."""

from __future__ import annotations

import numpy as np
import pytest

from ccat_tf.errors import CcatError, SettingsError
from ccat_tf.frames import (
    Sequence,
    find_frames,
    format_frames,
    frame_path,
    has_frame_token,
    parse_frames,
)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("1001-1005", [1001, 1002, 1003, 1004, 1005]),
        ("1001,1010,1020", [1001, 1010, 1020]),
        ("1001-1100x10", list(range(1001, 1101, 10))),
        ("1-5,10,20-30x5", [1, 2, 3, 4, 5, 10, 20, 25, 30]),
        ("1-10x4", [1, 5, 9]),
        ("  7 ", [7]),
        ("1 2, 3", [1, 2, 3]),
        ("-5--1", [-5, -4, -3, -2, -1]),
        ("-2-2", [-2, -1, 0, 1, 2]),
        ("5,3,1", [5, 3, 1]),  # order kept
        ("1-3,2,1,4", [1, 2, 3, 4]),  # duplicates dropped, first wins
        ("1-1", [1]),
        (1001, [1001]),
        (np.int64(12), [12]),
        ([3, 1, 2, 3], [3, 1, 2]),
        ((10, 20), [10, 20]),
        (range(1, 4), [1, 2, 3]),
        (np.array([4, 5]), [4, 5]),
        ([1001, "1010-1020x5"], [1001, 1010, 1015, 1020]),
    ],
)
def test_parse_frames(spec, expected):
    assert parse_frames(spec) == expected


@pytest.mark.parametrize(
    "spec, why",
    [
        ("", "empty"),
        ("   ", "empty"),
        (",", "empty"),
        ([], "empty"),
        ("abc", "cannot read 'abc'"),
        ("10-1", "ends before it starts"),
        ("1-10x0", "step"),
        ("1-10x-2", "step"),
        ("x0", "cannot read"),
        ("1-", "cannot read"),
        ("1.5", "cannot read"),
        ("1-1000000000", "more than"),
        (True, "not a frame number"),
        ([1, 2.5], "not a frame number"),
        (None, "not a frame number"),
    ],
)
def test_parse_frames_errors(spec, why):
    with pytest.raises(SettingsError) as err:
        parse_frames(spec)
    msg = str(err.value)
    assert why in msg
    assert msg.startswith("frames ")
    assert "use e.g. 1001-1100, 1001,1010 or 1001-1100x10" in msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    "frames, text",
    [
        ([1, 2, 3, 5], "1-3,5"),
        ([1001], "1001"),
        ([1, 3], "1,3"),
        ([1, 2], "1-2"),
        (list(range(1001, 1101, 10)), "1001-1091x10"),
        ([1, 2, 3, 5, 7, 9], "1-3,5-9x2"),
        ([5, 3, 1], "5,3,1"),
        ([-5, -4, -3, 0], "-5--3,0"),
        ([], ""),
    ],
)
def test_format_frames(frames, text):
    assert format_frames(frames) == text


@pytest.mark.parametrize(
    "frames", [[1, 2, 3, 5], [10, 1, 2, 3, 30, 20], [-9, -7, -5, -4, 8, 100, 101], [7]]
)
def test_format_frames_round_trips(frames):
    assert parse_frames(format_frames(frames)) == frames


def test_format_frames_of_random_lists_round_trip():
    rng = np.random.default_rng(3)
    for _ in range(50):
        frames = list(dict.fromkeys(int(v) for v in rng.integers(-20, 60, size=12)))
        frames.sort() if rng.random() < 0.5 else None
        assert parse_frames(format_frames(frames)) == frames


@pytest.mark.parametrize(
    "pattern, frame, path",
    [
        ("shots/a.####.exr", 42, "shots/a.0042.exr"),
        ("a.####.exr", 12345, "a.12345.exr"),
        ("a.#.exr", 7, "a.7.exr"),
        ("a.##.exr", 7, "a.07.exr"),
        ("a.####.exr", -5, "a.-005.exr"),
        ("a.%04d.exr", 1001, "a.1001.exr"),
        ("a.%04d.exr", 3, "a.0003.exr"),
        ("a.%d.exr", 3, "a.3.exr"),
        ("a.%4d.exr", 3, "a.0003.exr"),
        ("a.$F4.exr", 3, "a.0003.exr"),
        ("a.$F.exr", 3, "a.3.exr"),
        ("plate_v2/####/beauty.exr", 9, "plate_v2/0009/beauty.exr"),
        ("still.exr", 1001, "still.exr"),
        ("100%_done.png", 3, "100%_done.png"),
        ("a.$FOO.exr", 3, "a.$FOO.exr"),
    ],
)
def test_frame_path(pattern, frame, path):
    assert frame_path(pattern, frame) == path


def test_frame_path_accepts_pathlike(tmp_path):
    assert frame_path(tmp_path / "a.####.png", 1) == str(tmp_path / "a.0001.png")


def test_has_frame_token():
    assert has_frame_token("a.####.exr")
    assert has_frame_token("a.%04d.exr")
    assert has_frame_token("a.$F4.exr")
    assert not has_frame_token("a.exr")


@pytest.mark.parametrize("pattern", ["a.####.%04d.exr", "a.##_##.exr", "$F4.%d.png"])
def test_two_tokens_are_an_error(pattern):
    with pytest.raises(SettingsError, match="frame tokens.*use exactly one"):
        frame_path(pattern, 1)
    with pytest.raises(SettingsError):
        has_frame_token(pattern)
    with pytest.raises(SettingsError):
        Sequence(pattern, "1-2")


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


def test_find_frames(tmp_path):
    for f in (1001, 1002, 1005, 12345):
        _touch(tmp_path / f"shot.{f:04d}.exr")
    _touch(tmp_path / "shot.01003.exr")  # wrong padding: not frame 1003 of shot.####.exr
    _touch(tmp_path / "shot.1004.exr.bak")
    _touch(tmp_path / "shot.1006.png")
    _touch(tmp_path / "other.1007.exr")
    _touch(tmp_path / "shot.abcd.exr")
    (tmp_path / "shot.1008.exr").mkdir()  # a folder is not a frame
    assert find_frames(tmp_path / "shot.####.exr") == [1001, 1002, 1005, 12345]
    assert find_frames(str(tmp_path / "shot.%04d.exr")) == [1001, 1002, 1005, 12345]
    assert find_frames(tmp_path / "shot.%d.exr") == [1001, 1002, 1005, 12345]
    assert find_frames(tmp_path / "shot.#####.exr") == [1003, 12345]
    assert find_frames(tmp_path / "nothing.####.exr") == []
    assert find_frames(tmp_path / "shot.1001.exr") == []  # a still has no frame numbers


def test_find_frames_negative_and_odd_folder_names(tmp_path):
    folder = tmp_path / "v[1] (final)"
    for f in (-3, -1, 0, 2):
        _touch(folder / f"m.{f:03d}.png")
    assert find_frames(folder / "m.###.png") == [-3, -1, 0, 2]


def test_find_frames_with_token_in_folder(tmp_path):
    for f in (1, 2):
        _touch(tmp_path / f"{f:04d}" / "beauty.exr")
    (tmp_path / "0003").mkdir()  # no beauty.exr inside
    assert find_frames(tmp_path / "####" / "beauty.exr") == [1, 2]


def test_sequence(tmp_path):
    for f in (1, 3):
        _touch(tmp_path / f"s.{f:04d}.exr")
    seq = Sequence(str(tmp_path / "s.####.exr"), "1-3")
    assert len(seq) == 3
    assert seq.frames == [1, 2, 3]
    assert seq.paths() == [str(tmp_path / f"s.{f:04d}.exr") for f in (1, 2, 3)]
    assert seq.missing() == [2]
    assert list(seq)[0] == (1, str(tmp_path / "s.0001.exr"))
    assert not seq.is_still
    assert "1-3" in str(seq)


def test_still_sequence(tmp_path):
    _touch(tmp_path / "still.exr")
    seq = Sequence(tmp_path / "still.exr", [1001, 1002])
    assert seq.is_still
    assert seq.paths() == [str(tmp_path / "still.exr")] * 2
    assert seq.missing() == []
    assert Sequence(tmp_path / "gone.exr", [5]).missing() == [5]


def test_sequence_rejects_bad_frames():
    with pytest.raises(CcatError, match="10-1"):
        Sequence("a.####.exr", "10-1")
    assert len(Sequence("a.####.exr")) == 0
