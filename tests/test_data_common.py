"""Tests of data_builders.common: the common fields, label alignment, the parallel map."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from tensorflow_datasets.core import example_serializer
from tensorflow_datasets.core.features import TensorInfo

from beatssl_jax.ecg.errors import RecordError
from beatssl_jax.ecg.peaks import match_peaks
from beatssl_jax.ecg.preprocess import PreprocessConfig
from beatssl_jax.ecg.synthetic import SyntheticConfig, generate_record
from data_builders import common

NO_NOISE = {"baseline_wander_mv": (0.0, 0.0), "mains_mv": (0.0, 0.0), "emg_mv": (0.0, 0.0)}
QUIET = SyntheticConfig(**NO_NOISE)


def test_target_features_shapes_and_dtypes():
    spec = common.target_features(num_samples=2500, capacity=16)
    assert set(spec) == set(common.COMMON_FIELDS)
    assert spec["ecg"].shape == (2500, 12) and spec["ecg"].np_dtype == np.float32
    assert spec["r_peaks"].shape == (16,) and spec["r_peaks"].np_dtype == np.int32
    assert spec["beat_features"].shape == (16, 10)
    assert spec["features"].shape == (20,)


def test_padding_creates_no_beats_and_peaks_match_the_generator():
    rec = generate_record(3, SyntheticConfig(duration_s=6.0, **NO_NOISE))
    fields = common.common_fields(rec.ecg, rec.fs, common.SignalConfig(), record="short")
    assert fields["ecg"].shape == (5000, 12)
    assert np.all(fields["ecg"][3000:] == 0.0)  # 6 s at 500 Hz, zero-padded to 10 s
    n = int(fields["num_beats"])
    peaks = fields["r_peaks"][:n]
    assert np.all(fields["r_peaks"][n:] == -1) and np.all(peaks < 3000)
    tp, fp, fn = match_peaks(peaks, rec.r_peaks, tolerance_samples=5)  # 10 ms
    assert (fp, fn) == (0, 0) and tp == len(rec.r_peaks)


def test_crop_center_and_resample_move_peaks_with_the_signal():
    rec = generate_record(5, QUIET)  # 10 s at 500 Hz
    cfg = common.SignalConfig(
        preprocess=PreprocessConfig(fs=250.0), num_samples=1500, crop="center"
    )
    fields = common.common_fields(rec.ecg, rec.fs, cfg, record="r")
    assert fields["ecg"].shape == (1500, 12)
    # 2500 samples at 250 Hz, centre 1500 kept: offset 500 (2 s).
    assert common.crop_offset(2500, cfg) == 500
    expected, inside = common.align_positions(rec.r_peaks, rec.fs, 5000, cfg)
    assert np.array_equal(expected, np.round(rec.r_peaks[inside] / 2).astype(int) - 500)
    n = int(fields["num_beats"])
    _, fp, fn = match_peaks(fields["r_peaks"][:n], expected, tolerance_samples=3)
    assert fp <= 1 and fn <= 1  # a beat cut by a window edge may go either way


def test_align_labels_hand_computed():
    labels = np.array([0, 0, 1, 1, 1, 2, 2, 3, 3, 0], np.int8)
    cfg = common.SignalConfig(preprocess=PreprocessConfig(fs=250.0), num_samples=7)
    # 10 samples at 500 Hz -> 5 at 250 Hz, taking input samples 0, 2, 4, 6, 8; padded with 0.
    out = common.align_labels(labels, 500.0, cfg, fill=0)
    assert out.tolist() == [0, 1, 1, 2, 3, 0, 0]
    cfg = common.SignalConfig(num_samples=4, crop="start")
    assert common.align_labels(labels, 500.0, cfg).tolist() == [0, 0, 1, 1]


def test_normalisation_one_scale_and_nu_left_alone():
    rec = generate_record(7, QUIET)
    std = common.SignalConfig(preprocess=PreprocessConfig(normalization="std"))
    out = common.common_fields(rec.ecg, rec.fs, std, record="r")["ecg"]
    centred = out - out.mean(axis=0, keepdims=True)
    assert np.std(centred) == pytest.approx(1.0, rel=1e-4)
    # The ratio between leads is kept: one scale for all twelve.
    raw = common.common_fields(rec.ecg, rec.fs, common.SignalConfig(), record="r")["ecg"]
    ratio = out[:, 1] / np.where(np.abs(raw[:, 1]) > 1e-3, raw[:, 1], np.nan)
    assert np.nanstd(ratio) < 1e-4 * np.nanmean(np.abs(ratio))
    nu = common.common_fields(rec.ecg, rec.fs, std, record="r", units="NU")["ecg"]
    assert np.allclose(nu, raw)


def test_non_finite_signal_names_the_record():
    x = generate_record(1, QUIET).ecg.copy()
    x[100, 4] = np.nan
    with pytest.raises(RecordError, match=r"^rec-42: .*NaN.*aVL"):
        common.common_fields(x, 500.0, common.SignalConfig(), record="rec-42")


def square_or_fail(x: int) -> int:
    if x == 3:
        raise RecordError("ignored", "three is not allowed")
    if x == 5:
        raise ZeroDivisionError("five")
    return x * x


@pytest.mark.parametrize("workers", [1, 2])
def test_parallel_map_order_errors_and_skips(workers):
    tasks = list(range(10))
    names = [f"rec{i}" for i in tasks]
    good = [t for t in tasks if t not in (3, 5)]
    with common.worker_pool(workers) as pool:
        run = functools.partial(
            common.parallel_map, square_or_fail, num_workers=workers, pool=pool, progress=False
        )
        ok = list(run(good, [f"rec{i}" for i in good]))
        assert ok == [(f"rec{i}", i * i) for i in good]
        with pytest.raises(RecordError, match=r"^rec3: three is not allowed"):
            list(run(tasks, names))
        out = list(run(tasks, names, skip_errors=True))
    failures = {n: r for n, r in out if isinstance(r, common.RecordFailure)}
    assert set(failures) == {"rec3", "rec5"}
    assert failures["rec5"].problem == "ZeroDivisionError: five"
    assert [n for n, _ in out] == names


def test_deterministic_serializer_ignores_insertion_order():
    spec = {k: TensorInfo(shape=(), dtype=np.int64) for k in "qwertyuiopasdfgh"}
    serializer = common.DeterministicExampleSerializer(spec)
    forward = {k: i for i, k in enumerate(spec)}
    backward = dict(reversed(list(forward.items())))
    assert serializer.serialize_example(forward) == serializer.serialize_example(backward)
    parsed = example_serializer.ExampleSerializer(spec).get_tf_example(forward)
    assert parsed.SerializeToString(deterministic=True) == serializer.serialize_example(forward)


def test_build_report_summary():
    report = common.BuildReport(written={"train": 3, "test": 1}, skipped={"9": "bad"}, seconds=2)
    text = report.summary()
    assert "records written: 4 (train 3, test 1); skipped: 1" in text
    assert "2.5 records/s" in text and "skipped 9: bad" in text
