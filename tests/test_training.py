"""The training engine on tiny data: 4 pairs of 96x96, crop 32, small model."""

from __future__ import annotations

import json
import os
import signal
import textwrap

import numpy as np
import pytest
from conftest import run_two_replicas, tiny_settings, write_exr

import ccat_tf
from ccat_tf import catfile, dataset
from ccat_tf.errors import HookError, ModelFileError, SettingsError, TrainingInterrupted


def _files(folder, pattern):
    return sorted(p.name for p in folder.glob(pattern))


def test_train_writes_the_data_directory_as_copycat(tiny_dataset, tmp_path):
    dd = tmp_path / "dd"
    out = tmp_path / "model.cat"
    # 4 pairs, batch 2, 10 epochs -> 20 steps; checkpoints every 10, contact sheets every 5.
    result = ccat_tf.train(tiny_settings(tiny_dataset, dd), output=out, progress_bar=False)
    assert result == out and out.exists()
    assert _files(dd, "*.cat") == ["run1.step0000010.cat", "run1.step0000020.cat"]
    assert len(_files(dd, "run1.contact.step*.png")) == 4
    assert (dd / "progress.ost").exists()
    assert json.loads((dd / "latest.json").read_text()) == {
        "cat": "run1.step0000020.cat",
        "step": 20,
    }
    summaries = list((dd / "run1").glob("events.out.tfevents.*.summary"))
    assert len(summaries) == 1
    meta = catfile.read_metadata(out)
    assert meta["step"] == meta["total_steps"] == 20
    assert meta["input_channels"] == ["R", "G", "B"] and meta["model_size"] == "small"
    assert meta["crop_size"] == 32 and meta["batch_size"] == 2
    assert meta["dataset"]["frames"] == [1, 2, 3, 4]
    runs = ccat_tf.list_runs(dd)
    assert [(r["name"], r["status"], r["last_step"]) for r in runs] == [("run1", "finished", 20)]


def test_loss_falls_and_output_approaches_ground_truth(tiny_dataset, tmp_path):
    from ccat_tf.summary import read_summaries

    dd = tmp_path / "dd"
    settings = tiny_settings(
        tiny_dataset,
        dd,
        epochs=100,
        checkpoint_interval=200,
        contact_sheet_interval=200,
        use_multi_resolution_training=False,
        colour_branch=False,  # the U-Net alone (the colour branch would start at the fit)
    )
    model_file = ccat_tf.train(settings, progress_bar=False)
    df = read_summaries(dd)
    loss = df["loss"].to_numpy()
    assert len(loss) == 200
    assert loss[-20:].mean() < 0.5 * loss[:20].mean()
    # The model maps a held-out frame closer to its ground truth than the identity does.
    from ccat_tf import imageio

    x = imageio.read_image(tiny_dataset["input"].replace("####", "0005"), "rgb")
    y = imageio.read_image(tiny_dataset["ground_truth"].replace("####", "0005"), "rgb")
    pred = ccat_tf.open_model(model_file).predict(x)
    assert np.abs(pred - y).mean() < 0.6 * np.abs(x - y).mean()


def test_multi_resolution_stages_are_visible_in_the_summary(tiny_dataset, tmp_path):
    from ccat_tf.summary import read_summaries

    dd = tmp_path / "dd"
    ccat_tf.train(tiny_settings(tiny_dataset, dd, epochs=20, crop_size=64), progress_bar=False)
    df = read_summaries(dd)
    scales = df.sort_values("step")["stage_scale"].to_numpy()
    # 40 steps: 1/4 for the first quarter, 1/2 for the second, full resolution for the rest.
    assert list(scales[:10]) == [0.25] * 10
    assert list(scales[10:20]) == [0.5] * 10
    assert list(scales[20:]) == [1.0] * 20


def test_crops_are_a_pure_function_of_seed_and_sample(tiny_dataset, tmp_path):
    info = ccat_tf.validate_dataset(tiny_settings(tiny_dataset, tmp_path / "dd"))
    cache = dataset.FrameCache.build_in_memory(info, dataset.STAGE_SCALES)
    plan = dataset.CropPlan(
        3, info.pairs, 2, 32, 8, (0, 5, 10), dataset.STAGE_SCALES, (96, 96), True
    )
    a = [dataset.make_crop(cache, plan, s) for s in (0, 7, 31)]
    b = [dataset.make_crop(cache, plan, s) for s in (31, 7, 0)][::-1]
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
    assert a[0][0].shape == (16, 16, 3)  # stage 1/4: crop 32 -> 16 (minimum)
    assert a[2][0].shape == (32, 32, 3)  # step 15: full resolution
    # Every pair is visited once per epoch.
    pairs = [dataset.sample_params(plan, s, [(96, 96)] * 4)[0] for s in range(8)]
    assert sorted(pairs[:4]) == [0, 1, 2, 3] and sorted(pairs[4:]) == [0, 1, 2, 3]


@pytest.mark.slow  # three trainings, ~17 s
def test_compatible_change_continues_and_incompatible_starts_a_new_run(tiny_dataset, tmp_path):
    dd = tmp_path / "dd"
    ccat_tf.train(tiny_settings(tiny_dataset, dd, epochs=5), progress_bar=False)  # 10 steps
    ccat_tf.train(tiny_settings(tiny_dataset, dd, epochs=10), progress_bar=False)  # more epochs
    runs = ccat_tf.list_runs(dd)
    assert [(r["name"], r["first_step"], r["last_step"]) for r in runs] == [
        ("run1", 0, 10),
        ("run2", 10, 20),
    ]
    # Same settings again: nothing to train, no new run.
    ccat_tf.train(tiny_settings(tiny_dataset, dd, epochs=10), progress_bar=False)
    assert len(ccat_tf.list_runs(dd)) == 2
    # Another crop size is incompatible: a new run from step 0; the old progress is kept aside.
    ccat_tf.train(tiny_settings(tiny_dataset, dd, epochs=5, crop_size=48), progress_bar=False)
    runs = ccat_tf.list_runs(dd)
    assert (runs[-1]["name"], runs[-1]["first_step"], runs[-1]["last_step"]) == ("run3", 0, 10)
    assert (dd / "run2.progress.ost").exists()
    assert (dd / "run2.step0000020.cat").exists()


def test_hdr_frames_train_in_log_space_and_store_the_transform(tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "in").mkdir()
    (tmp_path / "gt").mkdir()
    for f in range(1, 3):
        x = (rng.random((48, 48, 3)) * 8).astype(np.float32)  # scene-linear, up to 8
        write_exr(tmp_path / "in" / f"p.{f:04d}.exr", x)
        write_exr(tmp_path / "gt" / f"p.{f:04d}.exr", x * 0.5)
    settings = dict(
        input=str(tmp_path / "in/p.####.exr"),
        ground_truth=str(tmp_path / "gt/p.####.exr"),
        frames="1-2",
        data_directory=str(tmp_path / "dd"),
        model_size="small",
        crop_size=32,
        batch_size=2,
        epochs=4,
        use_gpu_if_available=False,
    )
    info = ccat_tf.validate_dataset(settings)
    assert info.hdr and info.input_transform == ["log"] * 3
    meta = catfile.read_metadata(ccat_tf.train(settings, progress_bar=False))
    assert meta["output_transform"] == ["log"] * 3 and meta["dataset"]["hdr"] is True


def test_initial_weights_checkpoint_loads_a_compatible_cat(tiny_dataset, tmp_path):
    first = ccat_tf.train(tiny_settings(tiny_dataset, tmp_path / "a", epochs=2), progress_bar=False)
    ccat_tf.train(
        tiny_settings(
            tiny_dataset,
            tmp_path / "b",
            epochs=2,
            initial_weights="checkpoint",
            checkpoint_file=str(first),
        ),
        progress_bar=False,
    )
    with pytest.raises(ModelFileError, match="does not fit this run.*model_size small"):
        ccat_tf.train(
            tiny_settings(
                tiny_dataset,
                tmp_path / "c",
                epochs=2,
                model_size="medium",
                initial_weights="checkpoint",
                checkpoint_file=str(first),
            ),
            progress_bar=False,
        )
    with pytest.raises(SettingsError, match="human_matting fits rgb -> alpha"):
        ccat_tf.train(
            tiny_settings(tiny_dataset, tmp_path / "d", initial_weights="human_matting"),
            progress_bar=False,
        )


def _hook_module(tmp_path, monkeypatch):
    (tmp_path / "my_hooks.py").write_text(
        textwrap.dedent("""
        calls = []
        def start(**kw): calls.append(("start", kw["total_steps"]))
        def checkpoint(**kw): calls.append(("checkpoint", kw["step"]))
        def end(**kw): calls.append(("end", kw["step"]))
        def boom(**kw): raise RuntimeError("disk quota reached")
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    import my_hooks

    return importlib.reload(my_hooks)


def test_hooks_are_called_and_a_failing_hook_stops_cleanly(tiny_dataset, tmp_path, monkeypatch):
    hooks = _hook_module(tmp_path, monkeypatch)
    dd = tmp_path / "dd"
    ccat_tf.train(
        tiny_settings(
            tiny_dataset,
            dd,
            on_training_start="my_hooks:start",
            on_checkpoint=["my_hooks:checkpoint"],
            on_training_end="my_hooks:end",
        ),
        progress_bar=False,
    )
    assert hooks.calls == [("start", 20), ("checkpoint", 10), ("checkpoint", 20), ("end", 20)]
    with pytest.raises(HookError, match="on_checkpoint.*disk quota reached"):
        ccat_tf.train(
            tiny_settings(tiny_dataset, tmp_path / "dd2", on_checkpoint="my_hooks:boom"),
            progress_bar=False,
        )
    # Progress at the failing checkpoint was saved: training again resumes there.
    assert (tmp_path / "dd2" / "progress.ost").exists()


@pytest.mark.slow  # a training stopped, then resumed, ~12 s
def test_sigterm_saves_progress_and_resume_is_bit_exact(tiny_dataset, tmp_path):
    import keras

    base = tiny_settings(
        tiny_dataset,
        tmp_path / "x",
        epochs=10,
        deterministic=True,
        checkpoint_interval=100,
        contact_sheet_interval=100,
    )
    straight = ccat_tf.load_model(
        ccat_tf.train({**base, "data_directory": str(tmp_path / "a")}, progress_bar=False)
    )

    class KillAt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch + 1 == 7:  # inside an epoch (2 steps each) and a stage (1/4 .. 1/2 at 5)
                os.kill(os.getpid(), signal.SIGTERM)

    b = {**base, "data_directory": str(tmp_path / "b")}
    with pytest.raises(
        TrainingInterrupted, match="SIGTERM received: progress saved at step 8 of 20"
    ) as err:
        ccat_tf.train(b, callbacks=[KillAt()], progress_bar=False)
    assert err.value.exit_code == 75
    resumed = ccat_tf.load_model(ccat_tf.train(b, progress_bar=False))
    runs = ccat_tf.list_runs(tmp_path / "b")
    assert [(r["status"], r["first_step"], r["last_step"]) for r in runs] == [
        ("interrupted", 0, 8),
        ("finished", 8, 20),
    ]
    for wa, wb in zip(straight.get_weights(), resumed.get_weights(), strict=True):
        assert np.array_equal(wa, wb)


TWO_REPLICAS = r"""
import sys, json, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import ccat_tf
from ccat_tf.summary import read_summaries
settings = json.loads(sys.argv[1])
weights, losses = {}, {}
for name, devices in (("one", ["/cpu:0"]), ("two", ["/cpu:0", "/cpu:1"])):
    s = dict(settings, data_directory=settings["data_directory"] + name)
    net = ccat_tf.load_model(ccat_tf.train(s, devices=devices, progress_bar=False))
    weights[name] = net.get_weights()
    losses[name] = read_summaries(s["data_directory"])["loss"].tolist()
diff = max(float(np.max(np.abs(a - b))) for a, b in zip(weights["one"], weights["two"]))
print("RESULT" + json.dumps({"weight_diff": diff, "losses": losses}))
"""


@pytest.mark.slow  # two trainings, ~20 s
def test_two_replicas_on_two_logical_cpus_match_one_replica(tiny_dataset, tmp_path):
    settings = tiny_settings(
        tiny_dataset,
        tmp_path / "dd",
        epochs=3,
        batch_size=4,
        checkpoint_interval=100,
        contact_sheet_interval=100,
    )
    result = run_two_replicas(TWO_REPLICAS, settings)
    one, two = result["losses"]["one"], result["losses"]["two"]
    # Step 1 starts from identical weights: the reported loss is the global batch mean (replica
    # losses averaged, not summed), so it matches one replica's to float precision.
    assert len(one) == len(two) == 3
    assert abs(one[0] - two[0]) < 1e-6 * max(1.0, one[0])
    # Gradients are all-reduced across replicas; afterwards only float reordering differs, which
    # Adam's normalisation can amplify on near-zero gradients: close, not bit-equal.
    assert np.allclose(one, two, rtol=2e-2)
    assert result["weight_diff"] < 1e-2


def test_a_run_left_running_by_a_killed_process_is_marked_interrupted(tiny_dataset, tmp_path):
    from ccat_tf import runs as runtable

    dd = tmp_path / "dd"
    dd.mkdir()
    # What a SIGKILLed training leaves in the run table: an entry still "running".
    runtable.start_run(dd, settings={}, first_step=0, total_steps=20)
    ccat_tf.train(tiny_settings(tiny_dataset, dd, epochs=2), progress_bar=False)
    assert [(r["name"], r["status"]) for r in ccat_tf.list_runs(dd)] == [
        ("run1", "interrupted"),
        ("run2", "finished"),
    ]
