"""synthetic_ecg builder: built, read back without TensorFlow, checked against the generator."""

from __future__ import annotations

import sys
from pathlib import Path

import grain.python as grain
import numpy as np
import pytest
import tensorflow_datasets as tfds

import data_builders
from beatssl_jax.ecg.features import fit_feature_stats
from beatssl_jax.ecg.peaks import match_peaks
from beatssl_jax.ecg.synthetic import CONDITIONS, SUPERCLASSES, generate_record, record_seed
from data_builders import build, common
from data_builders.synthetic_ecg import synthetic_ecg_dataset_builder as synth

NAME = "synthetic_ecg/tiny"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    data_dir = tmp_path_factory.mktemp("tfds")
    builder = tfds.builder(NAME, data_dir=data_dir, num_workers=2)
    builder.download_and_prepare()
    assert builder.report.written == {"train": 24, "validation": 8, "test": 8}
    assert builder.report.skipped == {}
    return data_dir


def test_registered_on_import():
    assert "synthetic_ecg" in data_builders.AVAILABLE_BUILDERS
    assert "synthetic_ecg" in tfds.list_builders(with_community_datasets=False)


def test_reads_back_without_tensorflow(built):
    for split, size in {"train": 24, "validation": 8, "test": 8}.items():
        source = tfds.data_source(NAME, data_dir=built, split=split)
        assert len(source) == size
    example = tfds.data_source(NAME, data_dir=built, split="test")[0]
    assert example["ecg"].shape == (5000, 12) and example["ecg"].dtype == np.float32
    assert example["wave_mask"].dtype == np.int8 and example["annotated"].all()
    assert example["r_peaks"].shape == (32,) and example["beat_class"].dtype == np.int32
    first = grain.MapDataset.source(tfds.data_source(NAME, data_dir=built, split="test"))[0]
    assert np.array_equal(first["ecg"], example["ecg"])
    assert "tensorflow" not in sys.modules


def test_examples_match_the_generator(built):
    source = tfds.data_source(NAME, data_dir=built, split="validation")
    seeds = {record_seed(synth.split_seed(0, "validation"), i) for i in range(8)}
    assert {int(source[i]["seed"]) for i in range(len(source))} == seeds
    for i in range(3):
        ex = source[i]
        rec = generate_record(int(ex["seed"]))
        assert np.array_equal(ex["wave_mask"], rec.wave_mask)
        n_true = int(ex["num_true_beats"])
        assert np.array_equal(ex["true_r_peaks"][:n_true], rec.r_peaks)
        assert np.array_equal(ex["true_beat_class"][:n_true], rec.beat_class)
        assert CONDITIONS[int(ex["condition"])] == rec.condition_name
        hot = np.zeros(5, np.float32)
        hot[SUPERCLASSES.index(rec.condition_name)] = 1.0
        assert np.array_equal(ex["superdiagnostic"], hot) and ex["has_superdiagnostic"]
        n = int(ex["num_beats"])
        # Detected beats against the generator's, within 50 ms (METHOD.md section 4).
        tp, fp, fn = match_peaks(ex["r_peaks"][:n], rec.r_peaks, 25)
        assert fp + fn <= 1 and tp >= len(rec.r_peaks) - 1


def test_metadata_holds_train_feature_stats(built):
    builder = tfds.builder(NAME, data_dir=built)
    stats = common.feature_stats(builder)
    train = tfds.data_source(NAME, data_dir=built, split="train")
    matrix = np.stack([train[i]["features"] for i in range(len(train))])
    expected = fit_feature_stats(matrix)
    np.testing.assert_allclose(stats.low, expected.low, rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(stats.high, expected.high, rtol=1e-6, equal_nan=True)
    assert builder.info.metadata["feature_stats_records"] == 24
    assert builder.info.metadata["signal_config"]["num_samples"] == 5000


def test_identical_files_run_to_run_and_across_worker_counts(built, tmp_path, capsys):
    args = ["synthetic_ecg", "--config=tiny", f"--data_dir={tmp_path}", "--num_workers=1"]
    assert build.main(args) == 0
    out = capsys.readouterr().out
    assert "records written: 40 (train 24, validation 8, test 8); skipped: 0" in out
    first = Path(built) / "synthetic_ecg" / "tiny" / "1.0.0"
    again = tmp_path / "synthetic_ecg" / "tiny" / "1.0.0"
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    for name in names:
        assert (first / name).read_bytes() == (again / name).read_bytes(), name
