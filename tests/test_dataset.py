"""Data set validation and the frame cache."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from conftest import tiny_settings, write_exr, write_png

import ccat_tf
from ccat_tf import dataset
from ccat_tf.cli import main
from ccat_tf.dataset import DataSetProblems


def test_validate_reports_channels_batch_and_total_steps(tiny_dataset, tmp_path):
    report = tmp_path / "report.json"
    info = ccat_tf.validate_dataset(
        tiny_settings(tiny_dataset, tmp_path / "dd", epochs=7), report=report
    )
    assert info.pairs == 4 and (info.width, info.height) == (96, 96)
    assert info.total_steps == 14  # ceil(7 x 4 / 2)
    assert info.channels_line() == "Channels: R+G+B -> R+G+B   Batch Size: 2   Total Steps: 14"
    data = json.loads(report.read_text())
    assert data["ok"] and data["pairs"] == 4 and data["batch_size"] == 2 and not data["hdr"]


def test_total_steps_matches_copycat_example():
    # CopyCat's docs: 10000 epochs, 6 pairs, batch 4 -> 15000 steps.
    assert dataset.total_steps(10000, 6, 4) == 15000


def test_crop_larger_than_frames_is_reduced_with_a_notice(tiny_dataset, tmp_path):
    info = ccat_tf.validate_dataset(tiny_settings(tiny_dataset, tmp_path, crop_size=256))
    assert info.crop_size == 96
    assert any(
        "crop_size 256 does not fit the 96x96 frames; reduced to 96" in n for n in info.notices
    )


def test_auto_batch_size_never_exceeds_pairs(tiny_dataset, tmp_path):
    info = ccat_tf.validate_dataset(tiny_settings(tiny_dataset, tmp_path, batch_size="auto"))
    assert 1 <= info.batch_size <= 4
    assert any(n.startswith("batch_size auto:") for n in info.notices)


@pytest.mark.parametrize(
    "break_it, expected",
    [
        (
            lambda r: (r / "gt" / "shot.0003.png").unlink(),
            r"frame 3: ground truth file .*shot.0003.png does not exist",
        ),
        (
            lambda r: write_png(r / "gt" / "shot.0002.png", np.zeros((64, 96, 3))),
            r"frame 2: input .* is 96x96 but ground truth .* is 96x64; reformat",
        ),
        (lambda r: (r / "in" / "shot.0001.png").write_bytes(b""), r"shot.0001.png"),
    ],
)
def test_broken_pairs_are_named(tiny_dataset, tmp_path, break_it, expected):
    break_it(tiny_dataset["root"])
    with pytest.raises(DataSetProblems, match=expected) as err:
        ccat_tf.validate_dataset(tiny_settings(tiny_dataset, tmp_path / "dd"))
    assert "\n" not in str(err.value)


def test_missing_channel_nan_pixels_and_batch_size(tiny_dataset, tmp_path):
    with pytest.raises(DataSetProblems, match="has no channel"):
        ccat_tf.validate_dataset(tiny_settings(tiny_dataset, tmp_path, output_channels="alpha"))
    with pytest.raises(DataSetProblems, match="batch_size 9 is more than the 4 image pairs"):
        ccat_tf.validate_dataset(tiny_settings(tiny_dataset, tmp_path, batch_size=9))
    bad = np.ones((96, 96, 3), np.float32)
    bad[3, 4, 1] = np.nan
    write_exr(tmp_path / "nan.0001.exr", bad)
    write_exr(tmp_path / "ok.0001.exr", np.ones((96, 96, 3), np.float32))
    with pytest.raises(DataSetProblems, match=r"nan.0001.exr has 1 NaN and 0 infinite"):
        ccat_tf.validate_dataset(
            input=str(tmp_path / "nan.####.exr"),
            ground_truth=str(tmp_path / "ok.####.exr"),
            frames="1",
            batch_size=1,
            data_directory=str(tmp_path),
        )


def test_validation_frames_must_be_held_out(tiny_dataset, tmp_path):
    with pytest.raises(DataSetProblems, match="validation_frames 3 are also training frames"):
        ccat_tf.validate_dataset(tiny_settings(tiny_dataset, tmp_path, validation_frames="3,5"))


def test_validate_cli_lists_every_problem_and_writes_nothing(tiny_dataset, tmp_path, capsys):
    (tiny_dataset["root"] / "gt" / "shot.0001.png").unlink()
    (tiny_dataset["root"] / "gt" / "shot.0002.png").unlink()
    report = tmp_path / "r.json"
    code = main(
        [
            "validate",
            "--input",
            tiny_dataset["input"],
            "--ground-truth",
            tiny_dataset["ground_truth"],
            "--frames",
            "1-4",
            "--batch-size",
            "2",
            "--report",
            str(report),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and not report.exists()
    assert err.count("ccat-tf: error: frame") == 2


def test_hdf5_cache_round_trips_and_refuses_another_data_set(tiny_dataset, tmp_path):
    info = ccat_tf.validate_dataset(tiny_settings(tiny_dataset, tmp_path))
    path = dataset.FrameCache.write_hdf5(info, tmp_path / "c.h5")
    mem = dataset.FrameCache.build_in_memory(info, dataset.STAGE_SCALES)
    h5 = dataset.FrameCache.open_hdf5(info, path, dataset.STAGE_SCALES)
    for s in dataset.STAGE_SCALES:
        for a, b in zip(mem.level(s)[0], h5.level(s)[0], strict=True):
            assert np.array_equal(a, b[()])
    h5.close()
    other = ccat_tf.validate_dataset(tiny_settings(tiny_dataset, tmp_path, frames="1-3"))
    with pytest.raises(ccat_tf.CcatError, match="built for another data set"):
        dataset.FrameCache.open_hdf5(other, path, dataset.STAGE_SCALES)


def test_pipelines_are_not_autotuned(tiny_dataset, tmp_path):
    """tf.data's autotuning runs a model thread whose timed wait an iterator's destructor joins:
    ending a run's pipelines took 20-126 s after its final .cat. No pipeline here uses it, and
    each still gives its batches."""
    from ccat_tf.pretrain.train import paired_dataset

    info = ccat_tf.validate_dataset(tiny_settings(tiny_dataset, tmp_path))
    cache = dataset.FrameCache.build_in_memory(info, dataset.STAGE_SCALES)
    plan = dataset.CropPlan(
        seed=0,
        pairs=info.pairs,
        batch_size=2,
        crop_size=32,
        divisor=8,
        stage_bounds=(0, 1, 2),
        stage_scales=dataset.STAGE_SCALES,
        frame_hw=(96, 96),
        augment=True,
    )
    image = np.zeros((40, 40, 3), np.float32)
    pipelines = {
        "training": dataset.make_tf_dataset(cache, plan, 0, 3, 3, 3),
        "pretraining": paired_dataset([image], [image], 16, 2, seed=0, count=4),
    }
    for name, ds in pipelines.items():
        assert ds.options().autotune.enabled is False, name
        batches = list(ds.as_numpy_iterator())
        assert batches and all(len(b[0]) == 2 for b in batches), name


def test_augment_mirrors_crops_and_turns_them_only_with_augment_rotations(tiny_dataset):
    """By default a crop is mirrored left-right at random and never turned; with
    ``augment_rotations`` all four quarter turns come too, and the crop positions and mirrors
    are the same stream either way. A run from before the setting (which turned its crops)
    resumes only with ``augment_rotations`` on."""
    from ccat_tf.settings import TrainSettings
    from ccat_tf.training import signature_of

    plan = dataset.CropPlan(0, 6, 4, 32, 8, (0, 0, 0), (1.0,) * 3, (96, 96), augment=True)
    shapes = [(96, 96)] * 6
    mirror = [dataset.sample_params(plan, i, shapes) for i in range(200)]
    assert {p[4] for p in mirror} == {0} and {p[5] for p in mirror} == {0, 1}
    turned = replace(plan, rotations=True)
    both = [dataset.sample_params(turned, i, shapes) for i in range(200)]
    assert {p[4] for p in both} == {0, 1, 2, 3}
    assert [p[:4] + p[5:] for p in both] == [p[:4] + p[5:] for p in mirror]
    off = replace(turned, augment=False)
    assert {p[4:] for p in (dataset.sample_params(off, i, shapes) for i in range(50))} == {(0, 0)}

    base = {k: tiny_dataset[k] for k in ("input", "ground_truth", "frames")}
    base |= {"model_size": "small", "crop_size": 32, "batch_size": 1}
    info = dataset.validate_dataset(base)
    assert signature_of(TrainSettings.from_mapping(base), info)["augment_rotations"] is False
    turns = TrainSettings.from_mapping(base, augment_rotations=True)
    assert "augment_rotations" not in signature_of(turns, info)  # as an older run's signature
    no_augment = TrainSettings.from_mapping(base, augment=False)
    assert "augment_rotations" not in signature_of(no_augment, info)
