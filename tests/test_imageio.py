"""OpenImageIO reading and writing: formats, channels, windows, errors, atomic writes, resize."""

from __future__ import annotations

import os

import numpy as np
import OpenImageIO as oiio
import pytest

from ccat_tf import imageio
from ccat_tf.errors import CcatError, DataDirectoryError, DataSetError, SettingsError
from ccat_tf.imageio import (
    ImageInfo,
    channel_names_for,
    image_info,
    is_finite_report,
    read_image,
    read_image_with_info,
    resize,
    resolve_channels,
    write_image,
)


def raw_write(path, array, fmt="float", names=None, window=None, attrs=None):
    """Write with OIIO directly (independent of write_image). window: (x, y, fx, fy, fw, fh)."""
    array = np.asarray(array, np.float32)
    h, w, c = array.shape
    spec = oiio.ImageSpec(w, h, c, fmt)
    if names:
        spec.channelnames = tuple(names)
    if window:
        spec.x, spec.y, spec.full_x, spec.full_y, spec.full_width, spec.full_height = window
    for key, value in (attrs or {}).items():
        spec.attribute(key, value)
    out = oiio.ImageOutput.create(str(path))
    assert out is not None, oiio.geterror()
    assert out.open(str(path), spec), out.geterror()
    assert out.write_image(np.ascontiguousarray(array)), out.geterror()
    out.close()


@pytest.fixture
def rgba():
    rng = np.random.default_rng(11)
    return rng.random((12, 20, 4)).astype(np.float32)


# ------------------------------------------------------------------ round trips per format


def test_exr_half_round_trip(tmp_path, rgba):
    path = tmp_path / "a.exr"
    write_image(path, rgba, ["R", "G", "B", "A"])
    info = image_info(path)
    assert (info.format, info.file_format) == ("half", "openexr")
    assert info.channel_names == ["R", "G", "B", "A"]
    assert (info.width, info.height) == (20, 12)
    assert info.data_window == info.display_window == (0, 0, 20, 12)
    back = read_image(path, "rgba")
    assert back.dtype == np.float32 and back.shape == (12, 20, 4)
    np.testing.assert_allclose(back, rgba, atol=1e-3)


def test_exr_float_keeps_scene_linear_values(tmp_path):
    array = np.zeros((4, 6, 3), np.float32)
    array[0, 0] = 5.0
    array[1, 1] = -0.5
    array[2, 2] = 1234.5678
    path = tmp_path / "hdr.exr"
    write_image(path, array, ["R", "G", "B"], data_type="float")
    assert image_info(path).format == "float"
    back = read_image(path)
    np.testing.assert_array_equal(back, array)
    assert back[0, 0, 0] == 5.0 and back[1, 1, 1] == -0.5
    # half keeps them too, within half precision
    write_image(tmp_path / "hdr_half.exr", array, ["R", "G", "B"])
    half = read_image(tmp_path / "hdr_half.exr")
    assert half[0, 0, 0] == 5.0 and half[1, 1, 1] == -0.5


def test_exr_compression(tmp_path, rgba):
    write_image(tmp_path / "zip.exr", rgba, list("RGBA"))
    write_image(tmp_path / "piz.exr", rgba, list("RGBA"), compression="piz")
    assert _spec(tmp_path / "zip.exr").get_string_attribute("compression") == "zip"
    assert _spec(tmp_path / "piz.exr").get_string_attribute("compression") == "piz"
    with pytest.raises(SettingsError, match="not an EXR compression"):
        write_image(tmp_path / "bad.exr", rgba, list("RGBA"), compression="lzma")


def _spec(path):
    inp = oiio.ImageInput.open(str(path))
    try:
        return inp.spec()
    finally:
        inp.close()


@pytest.mark.parametrize(
    "name, data_type, file_type, bits, atol",
    [
        ("a.dpx", "auto", "uint16", 10, 1.0 / 1023),
        ("a.dpx", "uint16", "uint16", 16, 1.0 / 65535),
        ("a.tif", "uint8", "uint8", 8, 1.0 / 255),
        ("a.tiff", "auto", "uint16", 16, 1.0 / 65535),
        ("a.tif", "float", "float", 32, 1e-7),
        ("a.png", "auto", "uint8", 8, 1.0 / 255),
        ("a.png", "uint16", "uint16", 16, 1.0 / 65535),
    ],
)
def test_integer_and_tiff_round_trips(tmp_path, rgba, name, data_type, file_type, bits, atol):
    path = tmp_path / name
    write_image(path, rgba, list("RGBA"), data_type=data_type)
    info = image_info(path)
    assert info.format == file_type
    assert _spec(path).get_int_attribute("oiio:BitsPerSample", 0) in (0, bits)
    back = read_image(path, "rgba")
    # nearest code (half a step) plus OIIO widening 10-bit codes by bit replication
    np.testing.assert_allclose(back, rgba, atol=atol * 0.5 + 2e-5)


def test_dpx_is_10_bit_by_default(tmp_path, rgba):
    write_image(tmp_path / "a.dpx", rgba[..., :3], list("RGB"))
    assert _spec(tmp_path / "a.dpx").get_int_attribute("oiio:BitsPerSample") == 10


def test_tiff_float_keeps_hdr(tmp_path):
    array = np.full((3, 5, 3), 7.25, np.float32)
    array[0, 0, 0] = -2.0
    write_image(tmp_path / "f.tif", array, list("RGB"), data_type="float")
    np.testing.assert_array_equal(read_image(tmp_path / "f.tif"), array)


def test_jpeg_round_trip_is_approximate(tmp_path):
    yy, xx = np.mgrid[0:32, 0:48].astype(np.float32)
    smooth = np.stack([xx / 47, yy / 31, 0.5 + 0 * xx], axis=-1)
    for name in ("a.jpg", "a.jpeg"):
        write_image(tmp_path / name, smooth, list("RGB"))
        assert image_info(tmp_path / name).file_format == "jpeg"
        back = read_image(tmp_path / name)
        assert back.shape == smooth.shape
        assert np.abs(back - smooth).mean() < 0.02


def test_integer_outputs_are_clipped(tmp_path):
    array = np.array([[[-1.0, 0.5, 3.0], [np.nan, np.inf, -np.inf]]], np.float32)
    write_image(tmp_path / "c.png", array, list("RGB"))
    back = read_image(tmp_path / "c.png")
    np.testing.assert_allclose(back, [[[0.0, 128 / 255, 1.0], [0.0, 1.0, 0.0]]], atol=1e-6)


def test_two_dimensional_array_is_one_channel(tmp_path):
    matte = np.linspace(0, 1, 30, dtype=np.float32).reshape(5, 6)
    write_image(tmp_path / "m.exr", matte, ["A"], data_type="float")
    assert image_info(tmp_path / "m.exr").channel_names == ["A"]
    np.testing.assert_array_equal(read_image(tmp_path / "m.exr", "alpha")[..., 0], matte)


def test_uppercase_extension(tmp_path, rgba):
    write_image(tmp_path / "A.EXR", rgba, list("RGBA"))
    assert image_info(tmp_path / "A.EXR").file_format == "openexr"


# ------------------------------------------------------------------ write errors


def test_unknown_extension_lists_supported(tmp_path, rgba):
    with pytest.raises(SettingsError) as err:
        write_image(tmp_path / "a.bmp", rgba, list("RGBA"))
    msg = str(err.value)
    assert "a.bmp" in msg and ".bmp" in msg
    for ext in imageio.SUPPORTED_EXTENSIONS:
        assert ext in msg
    with pytest.raises(SettingsError, match="none"):
        write_image(tmp_path / "noext", rgba, list("RGBA"))
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "name, data_type", [("a.png", "float"), ("a.jpg", "uint16"), ("a.exr", "uint8"), ("a.exr", "x")]
)
def test_bad_data_type(tmp_path, rgba, name, data_type):
    with pytest.raises(SettingsError, match=f"data_type '{data_type}' cannot be written"):
        write_image(tmp_path / name, rgba[..., :3], list("RGB"), data_type=data_type)


@pytest.mark.parametrize("name, nch", [("a.jpg", 4), ("a.jpg", 2), ("a.png", 5), ("a.dpx", 2)])
def test_channel_counts_the_format_cannot_hold(tmp_path, name, nch):
    array = np.zeros((4, 4, nch), np.float32)
    with pytest.raises(SettingsError, match=f"not {nch}"):
        write_image(tmp_path / name, array, [f"c{i}" for i in range(nch)])


def test_many_channels_in_exr_and_tiff(tmp_path):
    array = np.random.default_rng(1).random((4, 5, 7)).astype(np.float32)
    names = [f"layer.c{i}" for i in range(7)]
    write_image(tmp_path / "m.exr", array, names, data_type="float")
    np.testing.assert_array_equal(read_image(tmp_path / "m.exr", names), array)
    # TIFF keeps the channels but not custom names (OIIO reads them back as channel4...)
    write_image(tmp_path / "m.tif", array, list("RGBA") + ["Z1", "Z2", "Z3"], data_type="float")
    tif_names = image_info(tmp_path / "m.tif").channel_names
    assert len(tif_names) == 7
    np.testing.assert_array_equal(read_image(tmp_path / "m.tif", tif_names), array)


def test_channel_names_must_match_array(tmp_path, rgba):
    with pytest.raises(ValueError, match="4 channels but 3"):
        write_image(tmp_path / "a.exr", rgba, list("RGB"))


def test_write_into_unwritable_folder(tmp_path, rgba):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DataDirectoryError) as err:
        write_image(blocker / "a.exr", rgba, list("RGBA"))
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------ atomic writes


def test_write_image_is_atomic(tmp_path, rgba, monkeypatch):
    path = tmp_path / "frame.0001.exr"
    write_image(path, rgba, list("RGBA"))
    before = path.read_bytes()

    def broken_writer(tmp, pixels, spec):
        with open(tmp, "wb") as fh:
            fh.write(b"\x76\x2f\x31\x01 half a file")
        raise RuntimeError("killed midway")

    monkeypatch.setattr(imageio, "_write_pixels", broken_writer)
    with pytest.raises(RuntimeError, match="killed midway"):
        write_image(path, rgba * 0.5, list("RGBA"))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frame.0001.exr"]


def test_oiio_write_failure_is_a_one_line_error(tmp_path, rgba, monkeypatch):
    path = tmp_path / "frame.exr"
    path.write_bytes(b"old")

    def failing(tmp, pixels, spec):
        open(tmp, "wb").close()
        raise imageio._WriteFailed("Could not write\nsecond line")

    monkeypatch.setattr(imageio, "_write_pixels", failing)
    with pytest.raises(DataDirectoryError) as err:
        write_image(path, rgba, list("RGBA"))
    msg = str(err.value)
    assert str(path) in msg and "Could not write" in msg and "\n" not in msg
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["frame.exr"]


def test_write_replaces_existing_file(tmp_path, rgba):
    path = tmp_path / "a.png"
    write_image(path, rgba, list("RGBA"))
    write_image(path, 1 - rgba, list("RGBA"))
    np.testing.assert_allclose(read_image(path, "rgba"), 1 - rgba, atol=0.5 / 255 + 1e-6)
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


# ------------------------------------------------------------------ channels


def test_resolve_keywords():
    names = ["R", "G", "B", "A"]
    assert resolve_channels("rgb", names) == [0, 1, 2]
    assert resolve_channels("RGBA", names) == [0, 1, 2, 3]
    assert resolve_channels("alpha", names) == [3]
    assert resolve_channels("a", names) == [3]
    assert resolve_channels("g", names) == [1]
    assert resolve_channels("rgb", ["B", "G", "R"]) == [2, 1, 0]  # by name, not position
    assert resolve_channels("rgba", ["red", "green", "blue", "alpha"]) == [0, 1, 2, 3]
    assert resolve_channels("rgb", ["r", "g", "b"]) == [0, 1, 2]


def test_resolve_lists_and_layers():
    names = ["R", "G", "B", "A", "diffuse.R", "diffuse.G", "diffuse.B", "beauty.R", "Z"]
    assert resolve_channels(["diffuse.R", "diffuse.G", "diffuse.B"], names) == [4, 5, 6]
    assert resolve_channels("diffuse.R,diffuse.G,Z", names) == [4, 5, 8]
    assert resolve_channels(["BEAUTY.r"], names) == [7]
    assert resolve_channels("z", names) == [8]
    assert resolve_channels(["red", "A"], names) == [0, 3]
    assert channel_names_for(["diffuse.r", "z"], names) == ["diffuse.R", "Z"]
    assert channel_names_for("rgb", names) == ["R", "G", "B"]


def test_greyscale_replicates_to_rgb():
    assert resolve_channels("rgb", ["Y"]) == [0, 0, 0]
    assert channel_names_for("rgb", ["Y"]) == ["R", "G", "B"]
    assert resolve_channels("rgb", ["Y", "A"]) == [0, 0, 0]
    assert resolve_channels("rgba", ["Y", "A"]) == [0, 0, 0, 1]
    assert resolve_channels("alpha", ["Y", "A"]) == [1]
    assert resolve_channels("rgb", ["A", "Y"]) == [1, 1, 1]


def test_greyscale_matte_is_alpha():
    assert resolve_channels("alpha", ["Y"]) == [0]
    assert resolve_channels("a", ["mask"]) == [0]
    assert resolve_channels(["A"], ["Y"]) == [0]
    assert channel_names_for("alpha", ["Y"]) == ["A"]


def test_missing_channel_message():
    with pytest.raises(DataSetError) as err:
        resolve_channels("rgba", ["R", "G", "B"], path="/shots/gt.1001.png")
    assert str(err.value) == (
        "/shots/gt.1001.png has no channel 'A' (it has R, G, B); choose "
        "input_channels/output_channels from those or fix the file"
    )
    with pytest.raises(DataSetError, match="choose output_channels from those"):
        resolve_channels("alpha", ["R", "G", "B"], path="x.exr", setting="output_channels")
    with pytest.raises(DataSetError, match="no channel 'A'"):
        resolve_channels("rgba", ["Y"])  # one channel is grey or alpha, not both
    with pytest.raises(DataSetError, match=r"no channel 'B' \(it has R, G\)"):
        resolve_channels("rgb", ["R", "G"])
    with pytest.raises(DataSetError, match="no channel 'diffuse.R'"):
        resolve_channels(["diffuse.R"], ["R", "G", "B"])


@pytest.mark.parametrize("spec", ["", "  ", [], [""], 3, None, ["R", 2], ","])
def test_bad_channel_spec_is_a_settings_error(spec):
    with pytest.raises(SettingsError, match="rgb, rgba, alpha or a list of channel names"):
        resolve_channels(spec, ["R", "G", "B"])


def test_read_greyscale_png_as_rgb_and_alpha(tmp_path):
    grey = np.random.default_rng(2).random((6, 7, 1)).astype(np.float32)
    raw_write(tmp_path / "g.png", grey, "uint8")
    assert image_info(tmp_path / "g.png").channel_names == ["Y"]
    rgb = read_image(tmp_path / "g.png", "rgb")
    assert rgb.shape == (6, 7, 3)
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])
    np.testing.assert_allclose(rgb[..., 1:2], grey, atol=0.5 / 255 + 1e-6)
    alpha = read_image(tmp_path / "g.png", "alpha")
    assert alpha.shape == (6, 7, 1)
    np.testing.assert_array_equal(alpha[..., 0], rgb[..., 0])


def test_read_picks_channels_from_a_multilayer_exr(tmp_path):
    array = np.arange(3 * 4 * 6, dtype=np.float32).reshape(3, 4, 6)
    names = ["R", "G", "B", "A", "depth.Z", "spec.R"]
    raw_write(tmp_path / "ml.exr", array, "float", names)
    np.testing.assert_array_equal(
        read_image(tmp_path / "ml.exr", ["spec.R", "R"]), array[..., [5, 0]]
    )
    np.testing.assert_array_equal(read_image(tmp_path / "ml.exr", "depth.Z"), array[..., 4:5])
    with pytest.raises(DataSetError) as err:
        read_image(tmp_path / "ml.exr", ["beauty.R"])
    assert str(tmp_path / "ml.exr") in str(err.value)
    assert "it has R, G, B, A, depth.Z, spec.R" in str(err.value)


# ------------------------------------------------------------------ windows and templates


def test_exr_data_window_smaller_than_display_window(tmp_path):
    data = np.full((3, 4, 3), 2.0, np.float32)
    data[0, 0] = [1, 2, 3]
    raw_write(tmp_path / "dw.exr", data, "half", list("RGB"), window=(5, 2, 0, 0, 10, 8))
    info = image_info(tmp_path / "dw.exr")
    assert (info.width, info.height) == (10, 8)
    assert info.data_window == (5, 2, 4, 3)
    assert info.display_window == (0, 0, 10, 8)
    img = read_image(tmp_path / "dw.exr")
    assert img.shape == (8, 10, 3)
    np.testing.assert_array_equal(img[2:5, 5:9], data)
    np.testing.assert_array_equal(img[2, 5], [1, 2, 3])
    mask = np.ones(img.shape[:2], bool)
    mask[2:5, 5:9] = False
    assert not img[mask].any()


def test_exr_overscan_is_cropped_to_display_window(tmp_path):
    data = np.arange(6 * 8, dtype=np.float32).reshape(6, 8, 1)
    # data window (-2, -1, 8x6) around a display window (0, 0, 5x4)
    raw_write(tmp_path / "os.exr", data, "float", ["Y"], window=(-2, -1, 0, 0, 5, 4))
    img = read_image(tmp_path / "os.exr", "alpha")
    assert img.shape == (4, 5, 1)
    np.testing.assert_array_equal(img, data[1:5, 2:7])


def test_display_window_with_origin(tmp_path):
    data = np.ones((4, 4, 1), np.float32)
    raw_write(tmp_path / "o.exr", data, "float", ["A"], window=(12, 10, 10, 10, 6, 6))
    img = read_image(tmp_path / "o.exr", "alpha")
    assert img.shape == (6, 6, 1)
    np.testing.assert_array_equal(img[0:4, 2:6], data)
    assert img[4:].sum() == 0 and img[:, :2].sum() == 0


def test_template_keeps_display_window_and_pixel_aspect(tmp_path):
    src = np.random.default_rng(4).random((5, 7, 3)).astype(np.float32)
    raw_write(
        tmp_path / "in.exr",
        src,
        "half",
        list("RGB"),
        window=(3, 4, 2, 3, 9, 8),
        attrs={"PixelAspectRatio": 2.0},
    )
    info = image_info(tmp_path / "in.exr")
    assert info.pixel_aspect == 2.0
    assert info.display_window == (2, 3, 9, 8)
    pixels = read_image(tmp_path / "in.exr")
    write_image(tmp_path / "out.exr", pixels, list("RGB"), template=info)
    out = image_info(tmp_path / "out.exr")
    assert out.display_window == (2, 3, 9, 8)
    assert out.data_window == (2, 3, 9, 8)
    assert out.pixel_aspect == 2.0
    np.testing.assert_array_equal(read_image(tmp_path / "out.exr"), pixels)

    write_image(tmp_path / "out.dpx", np.clip(pixels, 0, 1), list("RGB"), template=info)
    assert image_info(tmp_path / "out.dpx").pixel_aspect == pytest.approx(2.0, rel=1e-3)

    with pytest.raises(ValueError, match="display window"):
        write_image(tmp_path / "bad.exr", pixels[:4], list("RGB"), template=info)


def test_read_image_with_info(tmp_path, rgba):
    write_image(tmp_path / "a.exr", rgba, list("RGBA"))
    pixels, info = read_image_with_info(tmp_path / "a.exr", "rgb")
    assert isinstance(info, ImageInfo)
    assert pixels.shape == (12, 20, 3) and info.nchannels == 4


# ------------------------------------------------------------------ read errors


def _big_image(tmp_path, name, fmt):
    arr = np.random.default_rng(5).random((64, 64, 3)).astype(np.float32)
    path = tmp_path / name
    raw_write(path, arr, fmt, attrs={"compression": "none"} if name.endswith(".exr") else None)
    return path


def _assert_read_error(path, *words):
    for call in (lambda: read_image(path), lambda: image_info(path)):
        with pytest.raises(DataSetError) as err:
            call()
        msg = str(err.value)
        assert str(path) in msg
        assert "\n" not in msg
        assert msg.startswith(f"cannot read frame {path}: ")
        for word in words:
            assert word in msg
    # the global OIIO error state is left clean for the next caller
    assert oiio.geterror() == ""


def test_missing_file(tmp_path):
    _assert_read_error(tmp_path / "gone.0001.exr", "does not exist")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.exr"
    path.write_bytes(b"")
    _assert_read_error(path, "empty")


def test_folder_instead_of_file(tmp_path):
    (tmp_path / "dir.exr").mkdir()
    _assert_read_error(tmp_path / "dir.exr", "folder")


@pytest.mark.parametrize(
    "name", ["garbage.exr", "garbage.png", "garbage.jpg", "garbage.dpx", "garbage.tif"]
)
def test_non_image_with_image_extension(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"this is a text file, not an image\n" * 20)
    _assert_read_error(path, "check the file is a complete image")


@pytest.mark.parametrize(
    "name, fmt",
    [
        ("t.exr", "half"),
        ("t.png", "uint8"),
        ("t.tif", "uint16"),
        ("t.jpg", "uint8"),
        ("t.dpx", "uint16"),
    ],
)
def test_truncated_file(tmp_path, name, fmt):
    path = _big_image(tmp_path, name, fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # header intact, pixels cut off
    with pytest.raises(DataSetError) as err:
        read_image(path)
    msg = str(err.value)
    assert msg.startswith(f"cannot read frame {path}: ") and "\n" not in msg
    assert msg.endswith("check the file is a complete image")
    assert oiio.geterror() == ""
    path.write_bytes(data[:30])  # header cut off too
    _assert_read_error(path, "check the file is a complete image")


def test_errors_do_not_leak_between_calls(tmp_path, rgba):
    bad = tmp_path / "bad.exr"
    bad.write_bytes(b"garbage" * 10)
    good = tmp_path / "good.exr"
    write_image(good, rgba, list("RGBA"))
    with pytest.raises(DataSetError):
        read_image(bad)
    assert read_image(good).shape == (12, 20, 3)
    with pytest.raises(DataSetError) as err:
        read_image(tmp_path / "gone.exr")
    assert "garbage" not in str(err.value) and "magic" not in str(err.value)


def test_read_errors_are_ccat_errors(tmp_path):
    with pytest.raises(CcatError):
        read_image(tmp_path / "nothing.png")


# ------------------------------------------------------------------ resize and finite report


def test_resize_halves_and_quarters_by_area():
    rng = np.random.default_rng(6)
    array = rng.random((32, 48, 5)).astype(np.float32) * 4 - 1
    half = resize(array, 24, 16)
    assert half.shape == (16, 24, 5) and half.dtype == np.float32
    np.testing.assert_allclose(half, array.reshape(16, 2, 24, 2, 5).mean(axis=(1, 3)), atol=1e-5)
    quarter = resize(array, 12, 8)
    np.testing.assert_allclose(quarter, array.reshape(8, 4, 12, 4, 5).mean(axis=(1, 3)), atol=1e-5)
    np.testing.assert_allclose(quarter.mean(axis=(0, 1)), array.mean(axis=(0, 1)), atol=1e-5)


def test_resize_odd_sizes_and_channels():
    rng = np.random.default_rng(8)
    for c in (1, 2, 3, 4, 9):
        array = rng.random((37, 53, c)).astype(np.float32)
        out = resize(array, 26, 18)
        assert out.shape == (18, 26, c)
        np.testing.assert_allclose(out.mean(), array.mean(), atol=0.01)
    assert resize(np.ones((8, 8), np.float32), 4, 4).shape == (4, 4)
    same = rng.random((4, 4, 3)).astype(np.float32)
    np.testing.assert_array_equal(resize(same, 4, 4), same)
    assert resize(same, 8, 8).shape == (8, 8, 3)
    with pytest.raises(ValueError):
        resize(same, 0, 4)


def test_is_finite_report():
    a = np.zeros((3, 3, 3), np.float32)
    assert is_finite_report(a) == (0, 0)
    a[0, 0, 0] = np.nan
    a[1, 1, 1] = np.inf
    a[2, 2, 2] = -np.inf
    assert is_finite_report(a) == (1, 2)
    assert is_finite_report(np.zeros(3, np.uint8)) == (0, 0)


def test_files_written_are_readable_by_plain_oiio(tmp_path, rgba):
    """Output is normal image files: nothing but the final file is left in the folder."""
    for ext in imageio.SUPPORTED_EXTENSIONS:
        nch = 3 if ext in (".jpg", ".jpeg") else 4
        write_image(tmp_path / f"f{ext}", rgba[..., :nch], list("RGBA")[:nch])
    names = sorted(os.listdir(tmp_path))
    assert names == sorted(f"f{ext}" for ext in imageio.SUPPORTED_EXTENSIONS)
    for name in names:
        buf = oiio.ImageBuf(str(tmp_path / name))
        assert not buf.has_error, buf.geterror()
        assert buf.spec().width == 20
