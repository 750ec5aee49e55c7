"""The training step's number format: auto picks bfloat16 only on CPUs that compute it natively
(AMX or AVX-512 BF16), a bfloat16 run trains and resumes like a float32 one, and every .cat
holds the float32 network."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from conftest import tiny_settings

import ccat_tf
from ccat_tf import precision
from ccat_tf.errors import TrainingInterrupted
from ccat_tf.model import Model, open_model
from ccat_tf.model_info import ModelInfo

RGB = ("R", "G", "B")
AMX = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
AVX512_BF16 = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n"
PLAIN = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n"


def test_auto_chooses_bfloat16_only_where_the_cpu_computes_it(tmp_path):
    amx, zen4, plain = tmp_path / "amx", tmp_path / "zen4", tmp_path / "plain"
    amx.write_text(AMX)
    zen4.write_text(AVX512_BF16)
    plain.write_text(PLAIN)
    assert precision.resolve("auto", on_gpu=False, cpuinfo=amx) == (
        "bfloat16",
        "precision auto: bfloat16 (this CPU has AMX: 1.5-2x the steps)",
    )
    assert precision.resolve("auto", on_gpu=False, cpuinfo=zen4)[0] == "bfloat16"
    assert "AVX-512 BF16" in precision.resolve("auto", on_gpu=False, cpuinfo=zen4)[1]
    assert precision.resolve("auto", on_gpu=False, cpuinfo=plain)[0] == "float32"
    assert precision.resolve("auto", on_gpu=True, cpuinfo=amx)[0] == "float32"
    assert precision.resolve("auto", on_gpu=False, cpuinfo=tmp_path / "none")[0] == "float32"
    assert precision.resolve("bfloat16", on_gpu=False, cpuinfo=plain)[0] == "bfloat16"
    assert precision.resolve("float32", on_gpu=False, cpuinfo=amx)[0] == "float32"


def test_a_mixed_network_is_saved_as_its_float32_network(tmp_path):
    import keras

    from ccat_tf.models import build_model

    keras.utils.set_random_seed(1)
    net = build_model(3, 3, "small", dtype_policy="mixed_bfloat16")
    kinds = ("linear",) * 3
    info = ModelInfo(RGB, RGB, kinds, kinds, divisor=8, residual=True, model_size="small")
    loaded = open_model(Model(net, info).save(tmp_path / "m.cat"), device="/CPU:0")
    assert {layer.dtype_policy.name for layer in loaded.net.layers} == {"float32"}
    for a, b in zip(net.get_weights(), loaded.net.get_weights(), strict=True):
        assert np.array_equal(a, b)
    x = np.random.default_rng(0).uniform(0, 1, (1, 32, 32, 3)).astype(np.float32)
    mixed, full = np.asarray(net(x)), loaded.network_output(x)
    assert 0 < np.abs(mixed - full).max() < 0.05  # bfloat16 rounding, nothing else


def _psnr_on_frame_6(model, ds) -> float:
    from ccat_tf import imageio

    x = imageio.read_image(ds["input"].replace("####", "0006"), RGB)
    y = imageio.read_image(ds["ground_truth"].replace("####", "0006"), RGB)
    return float(10 * np.log10(1 / np.mean((model.predict(x) - y) ** 2)))


@pytest.mark.slow  # two trainings, ~16 s
def test_a_bfloat16_run_learns_as_float32_does_and_writes_a_float32_cat(
    tiny_dataset, tmp_path, capfd
):
    psnr = {}
    for name in ("float32", "bfloat16"):
        s = tiny_settings(
            tiny_dataset, tmp_path / name, epochs=30, precision=name, colour_branch=False
        )
        model = open_model(ccat_tf.train(s, progress_bar=False))
        assert f"precision {name} (as set)" in capfd.readouterr().err
        assert {layer.dtype_policy.name for layer in model.net.layers} == {"float32"}
        psnr[name] = _psnr_on_frame_6(model, tiny_dataset)
    identity = _psnr_on_frame_6(_Identity(), tiny_dataset)
    # the U-Net alone (no colour fit) learnt the grade in both formats, about as well
    assert psnr["bfloat16"] > identity + 3, (psnr, identity)
    assert abs(psnr["bfloat16"] - psnr["float32"]) < 1.5, psnr


class _Identity:
    def predict(self, x):
        return x


@pytest.mark.parametrize("name", ["float32", "bfloat16"])
def test_every_precision_resumes_bit_exactly(tiny_dataset, tmp_path, name):
    import keras

    base = tiny_settings(tiny_dataset, tmp_path / "x", epochs=6, deterministic=True, precision=name)
    straight = ccat_tf.load_model(
        ccat_tf.train({**base, "data_directory": str(tmp_path / "a")}, progress_bar=False)
    )

    class KillAt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch + 1 == 5:  # inside the 1/2-resolution stage
                os.kill(os.getpid(), signal.SIGTERM)

    b = {**base, "data_directory": str(tmp_path / "b")}
    with pytest.raises(TrainingInterrupted):
        ccat_tf.train(b, callbacks=[KillAt()], progress_bar=False)
    resumed = ccat_tf.load_model(ccat_tf.train(b, progress_bar=False))
    assert [r["last_step"] for r in ccat_tf.list_runs(tmp_path / "b")][-1] == 12
    for wa, wb in zip(straight.get_weights(), resumed.get_weights(), strict=True):
        assert np.array_equal(wa, wb)
