"""Inference: sequences in and out, channels, transforms, windows, tiling, hooks, bad input."""

from __future__ import annotations

import io
import json
import os
import threading

import numpy as np
import OpenImageIO as oiio
import pytest
from conftest import smooth_noise, write_exr, write_png

from ccat_tf import ensemble, imageio, transform
from ccat_tf.errors import CcatError, DataSetError, HookError, SettingsError
from ccat_tf.inference import FrameProgress, infer
from ccat_tf.settings import InferSettings

FRAMES = "1001-1003"


def _save(path, model, ins, outs, kinds_in, kinds_out, size="small"):
    from ccat_tf.model import Model
    from ccat_tf.model_info import ModelInfo

    info = ModelInfo(
        tuple(ins),
        tuple(outs),
        tuple(kinds_in),
        tuple(kinds_out),
        divisor=8,
        residual=len(ins) == len(outs),
        model_size=size,
        step=10,
        total_steps=10,
    )
    Model(model, info).save(path)
    return str(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Small .cat files: a non-trivial HDR rgb model, an identity, a matte model, an RGBA model."""
    import keras

    from ccat_tf.models import build_model

    root = tmp_path_factory.mktemp("models")
    rng = np.random.default_rng(11)
    keras.utils.set_random_seed(11)
    rgb = build_model(3, 3, "small")
    rgb.set_weights(
        [w + rng.normal(0, 0.03, w.shape).astype(np.float32) for w in rgb.get_weights()]
    )
    ident = build_model(3, 3, "small")
    # The residual model with a zero head returns its input: an exact probe of the transforms.
    ident.set_weights(
        [
            np.zeros_like(w) if "head" in v.path else w
            for v, w in zip(ident.weights, ident.get_weights(), strict=True)
        ]
    )
    matte = build_model(3, 1, "small")
    rgba = build_model(4, 3, "small")
    rgb_names = ["R", "G", "B"]
    return {
        "rgb": _save(root / "rgb.cat", rgb, rgb_names, rgb_names, ["log"] * 3, ["log"] * 3),
        "rgb_model": rgb,
        "identity": _save(root / "id.cat", ident, rgb_names, rgb_names, ["log"] * 3, ["log"] * 3),
        "matte": _save(root / "matte.cat", matte, rgb_names, ["A"], ["linear"] * 3, ["linear"]),
        "matte_model": matte,
        "rgba": _save(
            root / "rgba.cat", rgba, rgb_names + ["A"], rgb_names, ["linear"] * 4, ["linear"] * 3
        ),
    }


@pytest.fixture
def exr_seq(tmp_path):
    """Frames 1001-1003 of 100x72 half EXR with HDR highlights (up to 40)."""
    rng = np.random.default_rng(1)
    (tmp_path / "in").mkdir()
    frames = {}
    for f in range(1001, 1004):
        x = smooth_noise(rng, 72, 100) * 2
        x[10:20, 30:50] = 40.0
        write_exr(tmp_path / "in" / f"plate.{f}.exr", x)
        frames[f] = imageio.read_image(tmp_path / "in" / f"plate.{f}.exr")  # as half stored it
    return {"input": str(tmp_path / "in" / "plate.####.exr"), "pixels": frames, "root": tmp_path}


def _reference(model, x, kinds_in, kinds_out):
    """The untiled recipe written out by hand: encode, reflect-pad, network (averaged over infer's
    default self_ensemble views), crop, decode."""
    h, w = x.shape[:2]
    padded = np.pad(
        transform.encode(x, kinds_in), ((0, -h % 8), (0, -w % 8), (0, 0)), mode="reflect"
    )
    views = InferSettings().self_ensemble
    out = ensemble.averaged(lambda b: model(b, training=False), padded[None], views)
    return transform.decode(out[0, :h, :w], kinds_out)


def _no_temps(folder):
    return [p for p in os.listdir(folder) if ".ccat-tmp-" in p] if os.path.isdir(folder) else []


def test_sequence_hdr_exr_half_by_default(models, exr_seq):
    out = exr_seq["root"] / "out" / "result.####.exr"
    summary = infer(
        models["rgb"], input=exr_seq["input"], frames=FRAMES, output=str(out), progress_bar=False
    )
    assert summary["frames"] == 3 and summary["data_type"] == "half"
    assert summary["device"] == "/CPU:0" and any("no GPU" in n for n in summary["notices"])
    for f, x in exr_seq["pixels"].items():
        path = exr_seq["root"] / "out" / f"result.{f}.exr"
        data, info = imageio.read_image_with_info(path)
        assert info.format == "half" and info.channel_names == ["R", "G", "B"]
        assert data.shape == x.shape
        ref = _reference(models["rgb_model"], x, ["log"] * 3, ["log"] * 3)
        np.testing.assert_allclose(data, ref, rtol=2e-3, atol=2e-3)  # half precision


def test_identity_model_returns_hdr_unclipped_and_float_on_request(models, exr_seq):
    out = exr_seq["root"] / "out" / "id.####.exr"
    infer(
        models["identity"],
        input=exr_seq["input"],
        frames="1002",
        output=str(out),
        output_data_type="float",
        progress_bar=False,
    )
    data, info = imageio.read_image_with_info(str(out).replace("####", "1002"))
    assert info.format == "float"
    assert data.max() == pytest.approx(40.0, rel=1e-5)  # the log shaper was inverted
    np.testing.assert_allclose(data, exr_seq["pixels"][1002], rtol=1e-5, atol=1e-6)


def test_tiled_matches_untiled_through_infer(models, tmp_path):
    x = smooth_noise(np.random.default_rng(4), 203, 301) * 3
    write_exr(tmp_path / "big.0001.exr", x, dtype="float")
    common = dict(
        input=str(tmp_path / "big.####.exr"),
        frames="1",
        output_data_type="float",
        progress_bar=False,
    )
    infer(models["rgb"], output=str(tmp_path / "whole.####.exr"), **common)
    s = infer(
        models["rgb"],
        output=str(tmp_path / "tiles.####.exr"),
        tile_size=128,
        batch_tiles=3,
        **common,
    )
    assert s["tiling"]["301x203"]["tiles"] >= 6
    a = imageio.read_image(tmp_path / "whole.0001.exr")
    b = imageio.read_image(tmp_path / "tiles.0001.exr")
    assert np.abs(a).max() > 1
    assert np.abs(a - b).max() < 1e-3


def test_matte_model_writes_alpha_and_merge_input_writes_rgba(models, tmp_path):
    rng = np.random.default_rng(2)
    (tmp_path / "in").mkdir()
    x = smooth_noise(rng, 48, 64)
    write_png(tmp_path / "in" / "shot.0007.png", x, bits=16)
    src = imageio.read_image(tmp_path / "in" / "shot.0007.png")
    pattern = str(tmp_path / "in" / "shot.####.png")
    s = infer(
        models["matte"],
        input=pattern,
        frames="7",
        output=str(tmp_path / "a.####.png"),
        progress_bar=False,
    )
    assert s["channels"] == ["A"] and s["data_type"] == "uint16"  # the input's bit depth is kept
    spec = oiio.ImageInput.open(str(tmp_path / "a.0007.png")).spec()
    assert spec.nchannels == 1 and str(spec.format) == "uint16"
    infer(
        models["matte"],
        input=pattern,
        frames="7",
        output=str(tmp_path / "m.####.exr"),
        merge_input=True,
        progress_bar=False,
    )
    data, info = imageio.read_image_with_info(tmp_path / "m.0007.exr", "rgba")
    assert info.channel_names == ["R", "G", "B", "A"]
    np.testing.assert_allclose(data[..., :3], src, atol=1e-3)  # input RGB passes through
    ref = _reference(models["matte_model"], src, ["linear"] * 3, ["linear"])
    np.testing.assert_allclose(data[..., 3:], ref, atol=2e-3)


def test_output_bit_depths(models, exr_seq):
    root = exr_seq["root"]
    common = dict(input=exr_seq["input"], frames="1001", progress_bar=False)
    infer(models["rgb"], output=str(root / "d.####.dpx"), **common)
    dpx = oiio.ImageInput.open(str(root / "d.1001.dpx"))
    assert dpx.spec().get_int_attribute("oiio:BitsPerSample") == 10
    dpx.close()
    for dtype, bits in (("uint10", 10), ("uint16", 16)):
        name = f"{dtype}.####.dpx"
        infer(models["rgb"], output=str(root / name), output_data_type=dtype, **common)
        dpx = oiio.ImageInput.open(str(root / name.replace("####", "1001")))
        assert dpx.spec().get_int_attribute("oiio:BitsPerSample") == bits
        dpx.close()
    with pytest.raises(SettingsError, match="output_data_type uint10 cannot be written as .png"):
        infer(models["rgb"], output=str(root / "p.####.png"), output_data_type="uint10", **common)
    infer(models["rgb"], output=str(root / "t.####.tif"), output_data_type="float", **common)
    assert imageio.image_info(root / "t.1001.tif").format == "float"
    infer(models["rgb"], output=str(root / "j.####.jpg"), **common)
    assert imageio.image_info(root / "j.1001.jpg").format == "uint8"


@pytest.mark.parametrize("first_bits", [8, 16])
def test_mixed_bit_depth_input_is_written_at_the_deepest(models, tmp_path, first_bits):
    """A sequence mixing 8- and 16-bit PNGs: auto output keeps 16 bits whichever comes first
    (it used to follow the first frame, writing 16-bit frames at 8 bits)."""
    rng = np.random.default_rng(3)
    for f, bits in ((1, first_bits), (2, 24 - first_bits), (3, 8)):
        write_png(tmp_path / f"in.{f:04d}.png", smooth_noise(rng, 32, 32), bits=bits)
    out = tmp_path / "out" / "o.####.png"
    infer(
        models["rgb"],
        input=str(tmp_path / "in.####.png"),
        frames="1-3",
        output=str(out),
        progress_bar=False,
    )
    for f in (1, 2, 3):
        assert imageio.image_info(str(out).replace("####", f"{f:04d}")).format == "uint16"


def test_exr_windows_and_pixel_aspect_are_kept(models, tmp_path):
    path = tmp_path / "win.0001.exr"
    spec = oiio.ImageSpec(40, 30, 3, "half")
    spec.x, spec.y = 10, 6  # a bbox inside a 64x48 format
    spec.full_x, spec.full_y, spec.full_width, spec.full_height = 0, 0, 64, 48
    spec.attribute("PixelAspectRatio", 2.0)
    out = oiio.ImageOutput.create(str(path))
    assert out.open(str(path), spec)
    out.write_image(np.full((30, 40, 3), 0.5, np.float32))
    out.close()
    infer(
        models["rgb"],
        input=str(tmp_path / "win.####.exr"),
        frames="1",
        output=str(tmp_path / "o" / "r.####.exr"),
        progress_bar=False,
    )
    info = imageio.image_info(tmp_path / "o" / "r.0001.exr")
    assert info.display_window == (0, 0, 64, 48)
    assert info.data_window == (10, 6, 40, 30)
    assert info.pixel_aspect == pytest.approx(2.0)


def test_hooks_are_called_in_order_with_arguments(models, exr_seq):
    events = []

    def before_render(total, frames):
        events.append(("before_render", total, tuple(frames)))

    def before_frame(frame, index, total, path):
        events.append(("before_frame", frame))

    def after_frame(frame, path):
        assert os.path.exists(path)  # called once the frame is on disk
        events.append(("after_frame", frame))

    def progress(done, total, **kw):
        events.append(("progress", done, total))

    def after_render(paths, **kw):
        events.append(("after_render", len(paths)))

    infer(
        models["rgb"],
        input=exr_seq["input"],
        frames=FRAMES,
        output=str(exr_seq["root"] / "h.####.exr"),
        before_render=before_render,
        before_frame_render=before_frame,
        after_frame_render=after_frame,
        render_progress=progress,
        after_render=after_render,
        progress_bar=False,
    )
    assert events[0] == ("before_render", 3, (1001, 1002, 1003))
    assert [e[1] for e in events if e[0] == "before_frame"] == [1001, 1002, 1003]
    assert [e[1] for e in events if e[0] == "after_frame"] == [1001, 1002, 1003]
    assert [e[1] for e in events if e[0] == "progress"] == [1, 2, 3]
    assert events[-1] == ("after_render", 3)


def test_hook_exception_aborts_with_one_line(models, exr_seq):
    def explode(frame):
        if frame == 1002:
            raise RuntimeError("farm quota exceeded")

    out = exr_seq["root"] / "abort"
    with pytest.raises(HookError) as err:
        infer(
            models["rgb"],
            input=exr_seq["input"],
            frames=FRAMES,
            output=str(out / "x.####.exr"),
            before_frame_render=explode,
            progress_bar=False,
        )
    msg = str(err.value)
    assert "before_frame_render hook" in msg and "explode" in msg and "farm quota exceeded" in msg
    assert "\n" not in msg
    assert not os.path.exists(out / "x.1002.exr") and _no_temps(out) == []


def test_reading_and_writing_happen_in_background_threads(models, exr_seq, monkeypatch):
    threads = set()
    real_read, real_write = imageio.read_image_with_info, imageio.write_image

    def read(*a, **k):
        threads.add(("read", threading.current_thread().name))
        return real_read(*a, **k)

    def write(path, *a, **k):
        if ".ccat-tmp-" not in os.path.basename(str(path)):  # not the pre-flight probe
            threads.add(("write", threading.current_thread().name))
        return real_write(path, *a, **k)

    monkeypatch.setattr(imageio, "read_image_with_info", read)
    monkeypatch.setattr(imageio, "write_image", write)
    infer(
        models["rgb"],
        input=exr_seq["input"],
        frames=FRAMES,
        output=str(exr_seq["root"] / "t.####.exr"),
        progress_bar=False,
    )
    assert threads == {("read", "ccat-infer-read"), ("write", "ccat-infer-write")}


def test_write_failure_midway_leaves_complete_frames_only(models, exr_seq, monkeypatch):
    real_write = imageio.write_image
    calls = {"n": 0}

    def flaky(path, *a, **k):
        if ".ccat-tmp-" not in os.path.basename(str(path)):
            calls["n"] += 1
            if calls["n"] == 2:
                raise DataSetError(f"cannot write {path}: disk on fire")
        return real_write(path, *a, **k)

    monkeypatch.setattr(imageio, "write_image", flaky)
    out = exr_seq["root"] / "flaky"
    with pytest.raises(DataSetError, match="disk on fire"):
        infer(
            models["rgb"],
            input=exr_seq["input"],
            frames=FRAMES,
            output=str(out / "f.####.exr"),
            progress_bar=False,
        )
    assert sorted(os.listdir(out)) == ["f.1001.exr"]
    imageio.read_image(out / "f.1001.exr")  # complete and readable


@pytest.mark.parametrize(
    "flags, policy, says",
    [
        ("avx512f avx512_vnni", "mixed_float16", "emulated"),
        ("avx512f avx512_bf16", "mixed_bfloat16", "natively (AVX-512 BF16)"),
        ("amx_bf16", "mixed_bfloat16", "natively (AMX)"),
    ],
)
def test_optimize_for_speed_and_memory_on_cpu(models, exr_seq, monkeypatch, flags, policy, says):
    from ccat_tf import precision

    cpuinfo = exr_seq["root"] / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: fpu sse {flags}\n")
    monkeypatch.setattr(precision, "CPUINFO", cpuinfo)
    out = exr_seq["root"] / "half.####.exr"
    s = infer(
        models["rgb"],
        input=exr_seq["input"],
        frames="1001",
        output=str(out),
        optimize_for_speed_and_memory=True,
        output_data_type="float",
        progress_bar=False,
    )
    assert s["precision"] == policy
    assert any(says in n for n in s["notices"])
    ref = _reference(models["rgb_model"], exr_seq["pixels"][1001], ["log"] * 3, ["log"] * 3)
    data = imageio.read_image(str(out).replace("####", "1001"))
    assert np.abs(data - ref).max() < 0.05 * max(1.0, np.abs(ref).max())


# --- bad input: one line, a CcatError, nothing written -----------------------------------------


def _assert_clean_failure(err, out_dir):
    assert isinstance(err.value, CcatError)
    assert "\n" not in str(err.value)
    assert not os.path.isdir(out_dir) or os.listdir(out_dir) == []


def test_channel_mismatch(models, exr_seq):
    out = exr_seq["root"] / "bad"
    with pytest.raises(DataSetError, match="trained on R, G, B, A") as err:
        infer(
            models["rgba"],
            input=exr_seq["input"],
            frames=FRAMES,
            output=str(out / "o.####.exr"),
            progress_bar=False,
        )
    _assert_clean_failure(err, out)


def test_missing_frames_are_listed(models, exr_seq):
    out = exr_seq["root"] / "bad"
    with pytest.raises(DataSetError) as err:
        infer(
            models["rgb"],
            input=exr_seq["input"],
            frames="1001-1020",
            output=str(out / "o.####.exr"),
            progress_bar=False,
        )
    assert "missing 17 of 20 frames (1004, 1005, 1006, 1007, 1008 and 12 more)" in str(err.value)
    _assert_clean_failure(err, out)


def test_unreadable_frame_fails_before_anything_is_written(models, exr_seq):
    (exr_seq["root"] / "in" / "plate.1003.exr").write_bytes(b"not an exr at all" * 10)
    out = exr_seq["root"] / "bad"
    with pytest.raises(DataSetError, match="plate.1003.exr") as err:
        infer(
            models["rgb"],
            input=exr_seq["input"],
            frames=FRAMES,
            output=str(out / "o.####.exr"),
            progress_bar=False,
        )
    _assert_clean_failure(err, out)


def test_truncated_pixels_stop_the_render_without_half_frames(models, exr_seq):
    path = exr_seq["root"] / "in" / "plate.1002.exr"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])  # header intact, pixels cut
    out = exr_seq["root"] / "trunc"
    with pytest.raises(CcatError, match="plate.1002.exr"):
        infer(
            models["rgb"],
            input=exr_seq["input"],
            frames=FRAMES,
            output=str(out / "o.####.exr"),
            progress_bar=False,
        )
    assert not os.path.exists(out / "o.1002.exr") and _no_temps(out) == []


def test_output_that_would_overwrite_input(models, exr_seq):
    root = exr_seq["root"]
    os.symlink(root / "in", root / "alias")
    for output in (
        exr_seq["input"],
        str(root / "alias" / "plate.%04d.exr"),
        str(root / "in" / ".." / "in" / "plate.$F4.exr"),
    ):
        with pytest.raises(SettingsError, match="would overwrite the input sequence"):
            infer(
                models["rgb"],
                input=exr_seq["input"],
                frames=FRAMES,
                output=output,
                progress_bar=False,
            )
    # A hard link to an input frame under another name is the same file too.
    os.link(root / "in" / "plate.1001.exr", root / "linked.1001.exr")
    with pytest.raises(SettingsError, match="would overwrite"):
        infer(
            models["rgb"],
            input=exr_seq["input"],
            frames="1001",
            output=str(root / "linked.####.exr"),
            progress_bar=False,
        )


@pytest.mark.parametrize(
    "output,kwargs,match",
    [
        ("o.####.gif", {}, "unsupported extension '.gif'"),
        ("o.exr", {}, "has no frame token"),
        (
            "o.####.png",
            {"output_data_type": "half"},
            "output_data_type half cannot be written as .png",
        ),
        ("o.####.exr", {"tile_size": 0.5}, "tile_size"),
        ("o.####.exr", {"merge_input": True}, "merge_input needs a model that predicts one matte"),
        ("o.####.exr", {"before_render": "nowhere_module_q:f"}, "cannot import nowhere_module_q"),
    ],
)
def test_bad_settings(models, exr_seq, output, kwargs, match):
    out = exr_seq["root"] / "bad"
    with pytest.raises(CcatError, match=match) as err:
        infer(
            models["rgb"],
            input=exr_seq["input"],
            frames=FRAMES,
            output=str(out / output),
            progress_bar=False,
            **kwargs,
        )
    _assert_clean_failure(err, out)


def test_overwrite_off_refuses_existing_frames(models, exr_seq):
    out = exr_seq["root"] / "o.####.exr"
    infer(models["rgb"], input=exr_seq["input"], frames="1001", output=str(out), progress_bar=False)
    with pytest.raises(SettingsError, match="overwrite is off"):
        infer(
            models["rgb"],
            input=exr_seq["input"],
            frames="1001",
            output=str(out),
            overwrite=False,
            progress_bar=False,
        )


def test_progress_lines_when_not_a_tty():
    stream = io.StringIO()
    bar = FrameProgress(40, stream=stream)
    for i in range(1, 41):
        bar.update(i, 1000 + i)
    lines = stream.getvalue().splitlines()
    assert 2 < len(lines) <= 22 and lines[-1].startswith("[########################] frame 40/40")
    assert "\r" not in stream.getvalue()


# --- command line ------------------------------------------------------------------------------


def test_cli_infer_info_and_errors(models, exr_seq, capsys, tmp_path):
    from ccat_tf.cli import main

    settings = tmp_path / "s.json"
    settings.write_text(json.dumps({"frames": "1001-1002", "tile_size": "auto"}))
    summary = tmp_path / "summary.json"
    code = main(
        [
            "infer",
            models["rgb"],
            "--input",
            exr_seq["input"],
            "--output",
            str(tmp_path / "cli" / "o.####.exr"),
            "--settings",
            str(settings),
            "--settings-json",
            '{"output_data_type": "float"}',
            "--no-progress",
            "--summary",
            str(summary),
        ]
    )
    assert code == 0 and "wrote 2 frames" in capsys.readouterr().out
    assert json.loads(summary.read_text())["frames"] == 2
    assert imageio.image_info(tmp_path / "cli" / "o.1002.exr").format == "float"

    assert main(["info", models["matte"], "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["output_channels"] == ["A"] and info["receptive_field_radius"] > 0
    assert main(["info", models["matte"]]) == 0
    out = capsys.readouterr().out
    assert "output channels  A" in out and "architecture     the image only" in out

    code = main(
        [
            "infer",
            models["rgba"],
            "--input",
            exr_seq["input"],
            "--frames",
            "1001",
            "--output",
            str(tmp_path / "x.####.exr"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("ccat-tf: error: ") and "R, G, B, A" in err[-1]


def test_package_level_api_stays_callable(models, exr_seq):
    """``ccat_tf.infer`` is the function even after ``import ccat_tf.inference``."""
    import ccat_tf
    import ccat_tf.inference  # noqa: F401 - once bound the package attribute to a module

    with pytest.raises(SettingsError, match="unsupported extension"):
        ccat_tf.infer(models["rgb"], input=exr_seq["input"], frames="1001", output="x.####.gif")


def test_info_says_what_the_network_sees_besides_the_image():
    from ccat_tf.commands.info import format_info

    base = {"model_file": "m.cat", "parameters": 10, "network_divisor": 16}
    base.update(receptive_field_radius=5, auto_tile_overlap=8)

    def row(**flags) -> str:
        line = [x for x in format_info({**base, **flags}).splitlines() if x.startswith("arch")]
        assert len(line) == 1
        return line[0]

    assert "the image only" in row()
    now = row(position=True, colour=True, colour_input=True, position_fit_only=True)
    assert "colour branch" in now and "also fed to the U-Net" in now
    assert "frame coordinates (u, v, r^2) for the colour fit only" in now
    old = row(position=True, colour=True)
    assert "also fed" not in old and "coordinates (u, v, r^2) for the U-Net" in old
