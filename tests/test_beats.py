"""Tests of per-beat features, AAMI-style beat classes and fixed-capacity padding.

References: hand-computed RR features of a known peak train, hand-built records whose odd
beat is known, the synthetic generator's true per-beat classes (AAMI EC57 N / S / V), and
LUDB records whose listed rhythm has no extrasystoles.
"""

from __future__ import annotations

import csv
import dataclasses
import time

import numpy as np
import pytest
import wfdb

from beatssl_jax.ecg import synthetic
from beatssl_jax.ecg.beats import (
    BEAT_CLASSES,
    BEAT_FEATURE_INDEX,
    BEAT_FEATURE_NAMES,
    BEAT_FEATURE_UNITS,
    BEAT_N,
    BEAT_Q,
    BEAT_S,
    BEAT_V,
    BeatRules,
    beat_features,
    classify_beats,
    pad_beats,
)
from beatssl_jax.ecg.peaks import detect_r_peaks
from beatssl_jax.ecg.records import read_wfdb
from tests.conftest import shared_data
from tests.test_features import frontal_dipole_ecg

FS = 500.0


def test_names_and_units_align():
    assert len(BEAT_FEATURE_NAMES) == len(BEAT_FEATURE_UNITS) == len(set(BEAT_FEATURE_NAMES))
    assert BEAT_CLASSES == ("N", "S", "V", "Q")
    assert [BEAT_CLASSES[c] for c in (BEAT_N, BEAT_S, BEAT_V, BEAT_Q)] == list(BEAT_CLASSES)


def test_rr_features_of_a_known_peak_train():
    # Sinus RR 1000 ms with one beat 300 ms early (beat 5) and a full compensatory pause.
    peaks = np.array([250, 750, 1250, 1750, 2250, 2600, 3250, 3750, 4250])
    ecg = frontal_dipole_ecg(5000, [(r, 60.0, 12.0, 1.0) for r in peaks])
    f = beat_features(ecg, FS, peaks)
    assert f.shape == (len(peaks), len(BEAT_FEATURE_NAMES)) and f.dtype == np.float32
    rr = np.diff(peaks) * 2.0  # ms
    median_rr = np.median(rr)
    before = f[:, BEAT_FEATURE_INDEX["rr_before_ms"]]
    after = f[:, BEAT_FEATURE_INDEX["rr_after_ms"]]
    np.testing.assert_allclose(before[1:], rr)
    np.testing.assert_allclose(after[:-1], rr)
    # Fallbacks: the record's median RR for the first beat's "before", the last's "after".
    assert before[0] == pytest.approx(median_rr) and after[-1] == pytest.approx(median_rr)
    local = f[:, BEAT_FEATURE_INDEX["local_rr_ms"]]
    np.testing.assert_allclose(local[5], 1000.0)  # median of 4 intervals on each side
    assert f[5, BEAT_FEATURE_INDEX["prematurity"]] == pytest.approx(700.0 / 1000.0)
    assert f[5, BEAT_FEATURE_INDEX["pause_ratio"]] == pytest.approx(1300.0 / 1000.0)
    classes = classify_beats(f)
    assert classes[5] == BEAT_S  # early, with the dominant narrow QRS
    assert np.all(classes[np.arange(len(peaks)) != 5] == BEAT_N)
    # The optional rule "no full compensatory pause" turns it back to N (0.7 + 1.3 = 2).
    strict = classify_beats(f, BeatRules(s_max_cycle_sum=1.9))
    assert strict[5] == BEAT_N


def test_a_wide_beat_of_another_direction_is_v_and_an_all_wide_record_is_n():
    peaks = np.arange(250, 4800, 450)
    odd = 5
    waves = [
        (r, -120.0, 45.0, 1.5) if i == odd else (r, 60.0, 12.0, 1.0) for i, r in enumerate(peaks)
    ]
    f = beat_features(frontal_dipole_ecg(5000, waves), FS, peaks)
    classes = classify_beats(f)
    assert classes[odd] == BEAT_V
    assert np.all(classes[np.arange(len(peaks)) != odd] == BEAT_N)
    width = f[:, BEAT_FEATURE_INDEX["qrs_width_ms"]]
    assert width[odd] > 120.0 > np.max(np.delete(width, odd))
    # Every beat wide (bundle-branch-block-like): all resemble the dominant beat, all N.
    wide = frontal_dipole_ecg(5000, [(r, 60.0, 35.0, 1.0) for r in peaks])
    f_wide = beat_features(wide, FS, peaks)
    assert np.all(f_wide[:, BEAT_FEATURE_INDEX["qrs_width_ms"]] >= 120.0)
    assert np.all(classify_beats(f_wide) == BEAT_N)


def test_edge_beats_are_q():
    peaks = np.array([30, 500, 1000, 1500, 2000, 2490])
    ecg = frontal_dipole_ecg(2500, [(r, 60.0, 12.0, 1.0) for r in peaks])
    f = beat_features(ecg, FS, peaks)
    classes = classify_beats(f)
    assert classes[0] == BEAT_Q and classes[-1] == BEAT_Q
    assert np.all(classes[1:-1] == BEAT_N)
    assert np.isnan(f[0, BEAT_FEATURE_INDEX["qrs_width_ms"]])
    assert np.isfinite(f[0, BEAT_FEATURE_INDEX["rr_after_ms"]])


def test_degenerate_inputs():
    ecg = frontal_dipole_ecg(2000, [(1000, 60.0, 12.0, 1.0)])
    assert beat_features(ecg, FS, np.array([], dtype=int)).shape == (0, len(BEAT_FEATURE_NAMES))
    one = beat_features(ecg, FS, np.array([1000]))
    assert np.all(np.isnan(one))  # no RR, and no median beat from a single beat
    assert classify_beats(one).tolist() == [BEAT_Q]
    with pytest.raises(ValueError, match="12"):
        beat_features(ecg[:, :8], FS, np.array([1000]))


def test_pad_beats():
    peaks = np.array([10, 20, 30])
    padded, count = pad_beats(peaks, 5, -1)
    assert count == 3 and padded.tolist() == [10, 20, 30, -1, -1]
    feats = np.ones((3, 4), dtype=np.float32)
    padded, count = pad_beats(feats, 4, np.nan)
    assert padded.shape == (4, 4) and padded.dtype == np.float32 and count == 3
    assert np.all(np.isnan(padded[3])) and np.all(padded[:3] == 1)
    truncated, count = pad_beats(peaks, 2, -1)
    assert count == 2 and truncated.tolist() == [10, 20]
    with pytest.raises(ValueError):
        pad_beats(peaks, -1, 0)


# --- synthetic records with ectopic beats --------------------------------------------------


def test_classes_match_the_generator():
    config = dataclasses.replace(synthetic.SyntheticConfig(), pac_prob=0.1, pvc_prob=0.1)
    confusion = np.zeros((3, 4), dtype=np.int64)  # true N, S, V x predicted N, S, V, Q
    times = []
    for seed in range(80):
        rec = synthetic.generate_record(seed, config)
        start = time.perf_counter()
        f = beat_features(rec.ecg, rec.fs, rec.r_peaks)
        times.append(time.perf_counter() - start)
        predicted = classify_beats(f)
        np.add.at(confusion, (rec.beat_class.astype(int), predicted.astype(int)), 1)
        # Q only where the QRS window leaves the record.
        q = predicted == BEAT_Q
        assert np.all((rec.r_peaks[q] < 0.25 * rec.fs) | (rec.r_peaks[q] > 9.75 * rec.fs))
    m = confusion[:, :3]
    recall = np.diag(m) / m.sum(axis=1)
    precision = np.diag(m) / m.sum(axis=0)
    print(
        f"\nbeat classes, rows true N/S/V, columns predicted N/S/V/Q:\n{confusion}\n"
        f"recall N/S/V {np.round(recall, 3)}, precision {np.round(precision, 3)}; "
        f"beat_features median {1e3 * np.median(times):.1f} ms per record"
    )
    assert confusion[2].sum() >= 50 and confusion[1].sum() >= 50
    assert recall[2] >= 0.95 and precision[2] >= 0.95  # V
    assert recall[0] >= 0.98 and precision[0] >= 0.95  # N
    # S: the generator guarantees only 10 % prematurity (an early P may not overlap the
    # previous T), and the first beat of a record has no RR before it; 0.8 recall allows that.
    assert recall[1] >= 0.8 and precision[1] >= 0.95
    assert confusion[:, 3].sum() <= 0.05 * confusion.sum()


def test_bundle_branch_block_records_stay_n():
    config = dataclasses.replace(synthetic.SyntheticConfig(), pac_prob=0.0, pvc_prob=0.0)
    cd = synthetic.CONDITIONS.index("CD")
    for seed in range(15):
        rec = synthetic.generate_record(seed, config, condition=cd)
        f = beat_features(rec.ecg, rec.fs, rec.r_peaks)
        measured = np.isfinite(f[:, BEAT_FEATURE_INDEX["qrs_width_ms"]])
        assert np.median(f[measured, BEAT_FEATURE_INDEX["qrs_width_ms"]]) >= 115.0
        classes = classify_beats(f)
        assert np.all(classes[measured] == BEAT_N), (seed, rec.pattern, classes)


def test_classes_with_detected_peaks():
    config = dataclasses.replace(synthetic.SyntheticConfig(), pac_prob=0.1, pvc_prob=0.1)
    found = hits = total = 0
    for seed in range(100, 130):
        rec = synthetic.generate_record(seed, config)
        detected = detect_r_peaks(rec.ecg, rec.fs)
        predicted = classify_beats(beat_features(rec.ecg, rec.fs, detected))
        # Match each true V beat to the nearest detected peak within 50 ms. Beats the detector
        # misses are its own shortfall (tests/test_peaks.py), counted here but not held
        # against the classifier.
        for r, c in zip(rec.r_peaks, rec.beat_class, strict=True):
            if c != BEAT_V:
                continue
            total += 1
            j = int(np.argmin(np.abs(detected - r))) if detected.size else -1
            if j >= 0 and abs(detected[j] - r) <= 0.05 * rec.fs:
                found += 1
                hits += int(predicted[j] == BEAT_V)
    print(f"V beats: {found}/{total} detected, {hits}/{found} of those classified V")
    assert found >= 20 and hits >= 0.95 * found


# --- LUDB -----------------------------------------------------------------------------------


def test_ludb_records_without_extrasystoles_are_mostly_n():
    root = shared_data("ludb")

    with open(root / "ludb.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    counts = np.zeros(4, dtype=np.int64)
    v_records = 0
    v_found = 0
    for row in rows:
        rhythm = row["Rhythms"].strip()
        extra = row["Extrasystolies"].strip()
        if not rhythm.startswith("Sinus") and "Ventricular" not in extra:
            continue
        path = str(root / "data" / row["ID"])
        ann = wfdb.rdann(path, "ii")
        peaks = np.asarray(ann.sample)[np.array(ann.symbol) == "N"]
        rec = read_wfdb(path)
        classes = classify_beats(beat_features(rec.signal, rec.fs, peaks))
        if "Ventricular" in extra:
            v_records += 1
            v_found += bool(np.any(classes == BEAT_V))
        elif not extra:
            counts += np.bincount(classes, minlength=4)
    print(
        f"LUDB sinus records without extrasystoles: N/S/V/Q counts {counts.tolist()}; "
        f"records with ventricular extrasystoles where a V beat is found: {v_found}/{v_records}"
    )
    assert counts[BEAT_N] >= 0.95 * counts.sum()
    assert counts[BEAT_V] <= 0.005 * counts.sum()
    assert v_found >= 0.6 * v_records
