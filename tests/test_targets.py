"""The offline target stage on synthetic records with known ground truth."""

import numpy as np

from beatssl_jax.ecg.beats import BEAT_CLASSES, NUM_BEAT_FEATURES
from beatssl_jax.ecg.features import FEATURE_INDEX, NUM_FEATURES
from beatssl_jax.ecg.synthetic import SyntheticConfig, generate_record
from beatssl_jax.ecg.targets import PAD_INDEX, class_counts, compute_targets, select_beats


def test_select_beats_spreads_over_the_record():
    np.testing.assert_array_equal(select_beats(np.arange(5), 8), np.arange(5))
    chosen = select_beats(np.arange(20), 4)
    np.testing.assert_array_equal(chosen, [0, 6, 13, 19])


def test_targets_layout_and_padding_with_true_peaks():
    rec = generate_record(3, SyntheticConfig(heart_rate_bpm=(60.0, 60.0), rr_std_frac=(0, 0)))
    capacity = 16
    tgt = compute_targets(rec.ecg, rec.fs, capacity, rec.r_peaks)
    n = len(rec.r_peaks)
    assert n < capacity and tgt.num_beats == n == tgt.total_beats
    assert tgt.r_peaks.shape == (capacity,) and tgt.r_peaks.dtype == np.int32
    np.testing.assert_array_equal(tgt.r_peaks[:n], rec.r_peaks)
    assert np.all(tgt.r_peaks[n:] == PAD_INDEX) and np.all(tgt.beat_class[n:] == PAD_INDEX)
    assert tgt.beat_features.shape == (capacity, NUM_BEAT_FEATURES)
    assert np.all(np.isnan(tgt.beat_features[n:]))
    assert tgt.features.shape == (NUM_FEATURES,)
    assert abs(tgt.features[FEATURE_INDEX["heart_rate_bpm"]] - rec.heart_rate_bpm) < 0.5


def test_capacity_cap_keeps_beats_from_the_whole_record():
    rec = generate_record(4, SyntheticConfig(heart_rate_bpm=(110.0, 110.0)))
    tgt = compute_targets(rec.ecg, rec.fs, 4, rec.r_peaks)
    assert tgt.num_beats == 4 and tgt.total_beats == len(rec.r_peaks) > 4
    assert tgt.r_peaks[0] == rec.r_peaks[0] and tgt.r_peaks[-1] == rec.r_peaks[-1]


def test_detected_targets_find_the_generated_ventricular_beats():
    config = SyntheticConfig(pvc_prob=0.15, pac_prob=0.0)
    found = expected = 0
    for seed in range(6):
        rec = generate_record(seed, config, condition=0)
        tgt = compute_targets(rec.ecg, rec.fs, 64)
        expected += int(np.sum(rec.beat_class == 2))
        found += class_counts(tgt.beat_class)["V"]
    assert expected > 5
    assert abs(found - expected) <= max(1, expected // 10)


def test_class_counts_ignores_padding():
    counts = class_counts(np.array([0, 0, 2, 3, -1, -1], np.int8))
    assert counts == {"N": 2, "S": 0, "V": 1, "Q": 1} and tuple(counts) == BEAT_CLASSES
