"""The flow-guided temporal blend (issue 14 item 3): ``ccat_tf.temporal.blend`` cuts flicker where
the input's motion explains the neighbours and leaves the frame alone where it does not; through
``infer(temporal_blend=...)`` a frame depends only on its input neighbours, so chunks render what
one run renders."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_png

from ccat_tf import imageio, temporal
from ccat_tf.settings import InferSettings

H, W = 64, 96


def _plate(rng, h=H * 2, w=W * 3):
    """A textured still the camera pans across: smooth blobs plus fine detail, 0..1."""
    import cv2

    small = rng.random((h // 8, w // 8, 3)).astype(np.float32)
    big = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(big + 0.1 * rng.random(big.shape).astype(np.float32), 0, 1)


def _pan(plate, t, dx=1.5, dy=0.5):
    import cv2

    m = np.float32([[1, 0, -t * dx], [0, 1, -t * dy]])
    return cv2.warpAffine(plate, m, (W, H), flags=cv2.INTER_LINEAR)


def _look(x):
    """The 'network's' clean answer: a warm grade with a gamma."""
    return np.clip(x * np.float32([1.1, 1.0, 0.8]), 0, 1) ** 0.8


@pytest.fixture(scope="module")
def shot():
    """8 frames of a pan: noisy inputs (sd 0.02) and outputs = the clean answer + fresh noise on
    every frame (sd 0.03): what a few-shot network's flicker looks like."""
    rng = np.random.default_rng(3)
    plate = _plate(rng)
    clean = [_pan(plate, t) for t in range(8)]
    inputs = [c + rng.normal(0, 0.02, c.shape).astype(np.float32) for c in clean]
    truths = [_look(c) for c in clean]
    outputs = [y + rng.normal(0, 0.03, y.shape).astype(np.float32) for y in truths]
    return {"inputs": inputs, "truths": truths, "outputs": outputs, "rng": rng}


def _blend_all(outputs, inputs, weight):
    n = len(outputs)
    done = []
    for t in range(n):
        near = [k for k in (t - 1, t + 1) if 0 <= k < n]
        done.append(
            temporal.blend(
                outputs[t], [outputs[k] for k in near], inputs[t], [inputs[k] for k in near], weight
            )
        )
    return done


def test_blend_cuts_flicker_without_raising_the_error(shot):
    ins, outs, truths = shot["inputs"], shot["outputs"], shot["truths"]
    flows = temporal.sequence_flows(ins)
    blended = _blend_all(outs, ins, 0.5)
    before = temporal.warp_error_ratio(outs, ins, flows)["ratio"]
    after = temporal.warp_error_ratio(blended, ins, flows)["ratio"]
    assert after <= 0.7 * before, (before, after)  # measured: 1.75 -> 0.36 (-79%)
    err = [float(np.mean((o - y) ** 2)) for o, y in zip(outs, truths, strict=True)]
    err_b = [float(np.mean((o - y) ** 2)) for o, y in zip(blended, truths, strict=True)]
    assert np.mean(err_b) <= np.mean(err), (err, err_b)  # measured: 0.37x the MSE
    assert max(b - e for b, e in zip(err_b, err, strict=True)) <= 0


def test_an_answer_fixed_to_the_screen_is_not_dragged_by_the_motion(shot):
    """A vignette grade on a pan: the answer's vignette stays where the screen has it while the
    content moves, so a neighbour warped by the motion brings a shifted vignette. Only the
    neighbours' fine detail is blended in: perfect frames stay (nearly) perfect, and the
    flicker of noisy ones is still cut."""
    ins, truths = shot["inputs"], shot["truths"]
    v, u = np.mgrid[-1 : 1 : H * 1j, -1 : 1 : W * 1j]
    vignette = (1 - 0.8 * (u**2 + v**2) / 2).astype(np.float32)[..., None]
    graded = [y * vignette for y in truths]
    flow = temporal.pair_flow(ins[2], ins[3])
    moved = temporal.warp(graded[2], flow) - graded[3]  # what a plain blend would pull in
    shift = float(np.sqrt(np.mean(moved[flow.valid] ** 2)))
    assert shift > 0.01, shift  # measured 0.012: the warped answer is not this frame's
    # one neighbour (the other's shift would cancel a linear slope): measured RMS 0.0022 of a
    # perfect frame, where blending the whole difference gave 0.0060 (half the shift)
    out = temporal.blend(graded[3], [graded[2]], ins[3], [ins[2]], 0.5)
    assert float(np.sqrt(np.mean((out - graded[3]) ** 2))) < 0.25 * shift
    rng = np.random.default_rng(11)
    noisy = [y + rng.normal(0, 0.03, y.shape).astype(np.float32) for y in graded]
    blended = _blend_all(noisy, ins, 0.5)
    err = np.mean([np.mean((o - y) ** 2) for o, y in zip(noisy, graded, strict=True)])
    err_b = np.mean([np.mean((o - y) ** 2) for o, y in zip(blended, graded, strict=True)])
    assert err_b < 0.7 * err, (err, err_b)


def test_a_matte_blends_too_and_the_noise_estimate_is_the_inputs(shot):
    ins, outs = shot["inputs"], shot["outputs"]
    assert temporal.noise_sigma(ins[3]) == pytest.approx(0.02, rel=0.25)
    mattes = [o[..., :1] for o in outs]
    out = temporal.blend(mattes[3], [mattes[2], mattes[4]], ins[3], [ins[2], ins[4]], 0.5)
    assert out.shape == mattes[3].shape and out.dtype == np.float32
    assert not np.array_equal(out, mattes[3])
    flat = temporal.blend(mattes[3][..., 0], [mattes[2][..., 0]], ins[3], [ins[2]], 0.5)
    assert flat.shape == (H, W)


def test_pair_flows_are_both_pair_flow_directions(shot):
    a, b = shot["inputs"][2], shot["inputs"][3]
    to_a, to_b = temporal.pair_flows(a, b)
    for got, want in ((to_a, temporal.pair_flow(a, b)), (to_b, temporal.pair_flow(b, a))):
        np.testing.assert_array_equal(got.backward, want.backward)
        np.testing.assert_array_equal(got.valid, want.valid)
    given = temporal.blend(shot["outputs"][3], [shot["outputs"][2]], b, [a], 0.5, flows=[to_a])
    np.testing.assert_array_equal(
        given, temporal.blend(shot["outputs"][3], [shot["outputs"][2]], b, [a], 0.5)
    )


def test_nothing_leaks_across_a_scene_cut_and_zero_is_off(shot):
    ins, outs = shot["inputs"], shot["outputs"]
    rng = shot["rng"]
    other_in = _pan(_plate(rng), 0) + rng.normal(0, 0.02, (H, W, 3)).astype(np.float32)
    other_out = _look(other_in)
    cut = temporal.blend(outs[3], [other_out], ins[3], [other_in], 0.5)
    np.testing.assert_array_equal(cut, outs[3])
    # a cut on one side: the other neighbour is still used, the cut one is not
    one = temporal.blend(outs[3], [other_out, outs[4]], ins[3], [other_in, ins[4]], 0.5)
    only = temporal.blend(outs[3], [outs[4]], ins[3], [ins[4]], 0.5)
    np.testing.assert_array_equal(one, only)
    assert not np.array_equal(only, outs[3])
    assert temporal.blend(outs[3], [outs[2]], ins[3], [ins[2]], 0.0) is outs[3]
    assert temporal.blend(outs[3], [], ins[3], [], 0.5) is outs[3]
    with pytest.raises(ValueError, match="from 0 to 1"):
        temporal.blend(outs[3], [outs[2]], ins[3], [ins[2]], 1.5)


# ---- through infer() ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_and_plates(tmp_path_factory):
    """A small rgb .cat with perturbed weights (a non-trivial, deterministic network) and input
    frames 1-7 of a noisy pan (16-bit PNG); frame 0 is not on disk."""
    import keras

    from ccat_tf.model import Model
    from ccat_tf.model_info import ModelInfo
    from ccat_tf.models import build_model

    root = tmp_path_factory.mktemp("blend")
    rng = np.random.default_rng(5)
    keras.utils.set_random_seed(5)
    net = build_model(3, 3, "small")
    net.set_weights(
        [w + rng.normal(0, 0.03, w.shape).astype(np.float32) for w in net.get_weights()]
    )
    names = ("R", "G", "B")
    info = ModelInfo(
        names, names, ("linear",) * 3, ("linear",) * 3, divisor=8, residual=True,
        model_size="small", step=10, total_steps=10,
    )  # fmt: skip
    cat = root / "rgb.cat"
    Model(net, info).save(cat)
    plate = _plate(rng)
    (root / "in").mkdir()
    for f in range(1, 8):
        x = _pan(plate, f) + rng.normal(0, 0.02, (H, W, 3)).astype(np.float32)
        write_png(root / "in" / f"shot.{f:04d}.png", x, bits=16)
    write_png(root / "in" / "lone.0010.png", _pan(plate, 10), bits=16)
    return {"cat": str(cat), "input": str(root / "in" / "shot.####.png"), "root": root}


def _read(pattern, frames):
    return {f: imageio.read_image(pattern.replace("####", f"{f:04d}")) for f in frames}


def test_chunks_render_what_one_run_renders(model_and_plates, tmp_path, monkeypatch):
    from ccat_tf import inference

    runs = []
    network = inference._network
    monkeypatch.setattr(
        inference, "_network", lambda r, m, fr: runs.append(fr.job.frame) or network(r, m, fr)
    )
    m = model_and_plates
    common = dict(input=m["input"], output_data_type="float", progress_bar=False)
    one = str(tmp_path / "one" / "o.####.exr")
    infer = inference.infer
    infer(m["cat"], frames="1-6", output=one, temporal_blend=0.5, **common)
    assert runs == [1, 2, 3, 4, 5, 6, 7]  # once per frame, +1 for the neighbour past the end
    runs.clear()
    two = str(tmp_path / "two" / "o.####.exr")
    infer(m["cat"], frames="4-6", output=two, temporal_blend=0.5, **common)  # any order
    infer(m["cat"], frames="1-3", output=two, temporal_blend=0.5, **common)
    assert runs == [3, 4, 5, 6, 7, 1, 2, 3, 4]  # one extra network run at each chunk end
    a, b = _read(one, range(1, 7)), _read(two, range(1, 7))
    for f in range(1, 7):
        np.testing.assert_array_equal(a[f], b[f], err_msg=f"frame {f}")

    runs.clear()
    off = str(tmp_path / "off" / "o.####.exr")
    infer(m["cat"], frames="1-6", output=off, temporal_blend=0, **common)
    assert runs == [1, 2, 3, 4, 5, 6]
    from ccat_tf.model import open_model

    net = open_model(m["cat"], self_ensemble=InferSettings().self_ensemble)  # infer's default
    plain = _read(off, range(1, 7))
    for f, x in _read(m["input"], range(1, 7)).items():
        np.testing.assert_array_equal(plain[f], net.predict(x))  # what infer wrote before
    changed = [float(np.abs(a[f] - plain[f]).mean()) for f in range(1, 7)]
    assert min(changed) > 1e-4, changed  # the blend did something on every frame
    flows = temporal.sequence_flows(list(_read(m["input"], range(1, 7)).values()))
    ins = list(_read(m["input"], range(1, 7)).values())
    r_off = temporal.warp_error_ratio(list(plain.values()), ins, flows)["ratio"]
    r_on = temporal.warp_error_ratio(list(a.values()), ins, flows)["ratio"]
    assert r_on < r_off, (r_off, r_on)


def test_a_frame_without_neighbours_renders(model_and_plates, tmp_path):
    from ccat_tf.inference import infer
    from ccat_tf.model import open_model

    m = model_and_plates
    lone = m["input"].replace("shot.", "lone.")
    out = str(tmp_path / "l.####.exr")
    infer(
        m["cat"], input=lone, frames="10", output=out, temporal_blend=1.0,
        output_data_type="float", progress_bar=False,
    )  # fmt: skip
    x = _read(lone, [10])[10]
    net = open_model(m["cat"], self_ensemble=InferSettings().self_ensemble)  # infer's default
    np.testing.assert_array_equal(_read(out, [10])[10], net.predict(x))


def test_a_neighbour_gets_the_frames_checks(model_and_plates, tmp_path):
    """A neighbour on disk is read as a frame is: one that is not an image file fails before
    anything is written (one line naming it); with temporal_blend 0 it is not read at all."""
    import shutil

    from ccat_tf.errors import DataSetError
    from ccat_tf.inference import infer

    m = model_and_plates
    (tmp_path / "in").mkdir()
    shutil.copy(m["input"].replace("####", "0002"), tmp_path / "in" / "s.0002.png")
    (tmp_path / "in" / "s.0003.png").mkdir()  # frame 3, a neighbour, is a folder
    common = dict(input=str(tmp_path / "in" / "s.####.png"), frames="2", progress_bar=False)
    out = tmp_path / "out"
    with pytest.raises(DataSetError, match=r"s\.0003\.png \(a neighbour the temporal blend"):
        infer(m["cat"], output=str(out / "o.####.exr"), temporal_blend=0.5, **common)
    assert not out.exists() or not list(out.iterdir())
    infer(m["cat"], output=str(out / "o.####.exr"), temporal_blend=0, **common)
    assert (out / "o.0002.exr").exists()
