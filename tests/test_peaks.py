"""R-peak detection against signals with known peaks, LUDB annotations, and hand-made matches."""

import numpy as np
import pytest

from beatssl_jax.ecg import ludb, synthetic
from beatssl_jax.ecg.errors import RecordError
from beatssl_jax.ecg.peaks import detect_r_peaks, match_peaks, matched_pairs
from tests.conftest import shared_data

FS = 500.0
# Per-lead gains of the QRS, T and P bumps: mixed signs, very different sizes, and lead II
# (column 1) nearly flat, like the low-amplitude lead II records of LUDB.
QRS_GAIN = np.array([0.9, 0.03, -0.8, -0.5, 0.9, -0.4, -0.7, -1.4, 0.6, 1.6, 1.3, 1.0])
T_GAIN = 0.3 * np.abs(QRS_GAIN) + 0.05
P_GAIN = 0.1 * np.abs(QRS_GAIN) + 0.02


def _bump(t: np.ndarray, centre: float, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * ((t - centre) / sigma) ** 2)


def _gaussian_train(r_times_s: np.ndarray, duration_s: float = 10.0, fs: float = FS):
    """(T, 12) mV: per beat a narrow QRS bump, a broad T after it and a small P before it.

    Every lead's QRS is the same Gaussian (SD 12 ms) scaled by its gain, and the P and T
    bumps are negligible at the QRS centre, so the 12-lead energy peaks exactly at the
    centre: the true R peak is round(r_time * fs).
    """
    t = np.arange(int(duration_s * fs)) / fs
    qrs = sum(_bump(t, r, 0.012) for r in r_times_s)
    tw = sum(_bump(t, r + 0.28, 0.045) for r in r_times_s)
    pw = sum(_bump(t, r - 0.17, 0.025) for r in r_times_s)
    x = qrs[:, None] * QRS_GAIN + tw[:, None] * T_GAIN + pw[:, None] * P_GAIN
    return x, np.round(np.asarray(r_times_s) * fs).astype(np.int64)


def _regular(rr_s: float = 0.8, first_s: float = 0.5, duration_s: float = 10.0):
    return np.arange(first_s, duration_s - 0.4, rr_s)


def _assert_all_found(detected, truth, max_error_samples):
    tp, fp, fn = match_peaks(detected, truth, max_error_samples)
    assert (tp, fp, fn) == (len(truth), 0, 0), (detected.tolist(), truth.tolist())


def test_gaussian_train_exact_positions():
    x, truth = _gaussian_train(_regular())
    detected = detect_r_peaks(x, FS)
    assert detected.dtype == np.int64
    np.testing.assert_array_equal(detected, truth)


def test_irregular_rhythm_and_rate_extremes():
    rng = np.random.default_rng(3)
    for lo, hi in [(0.35, 1.3), (0.3, 0.45), (1.4, 1.9)]:  # AF-like, 130-200 bpm, 32-43 bpm
        r = [0.4]
        while r[-1] < 9.3:
            r.append(r[-1] + rng.uniform(lo, hi))
        x, truth = _gaussian_train(np.array(r[:-1]))
        _assert_all_found(detect_r_peaks(x, FS), truth, 1)


def test_output_is_sorted_unique_and_scale_invariant():
    x, _ = _gaussian_train(_regular(0.7))
    reference = detect_r_peaks(x, FS)
    assert np.all(np.diff(reference) > 0)
    for scale in (1e-3, 1.0 / np.std(x), 250.0):  # uV-sized, per-record normalised, large
        np.testing.assert_array_equal(detect_r_peaks(x * scale, FS), reference)


def test_robust_to_offset_wander_noise_and_dead_lead():
    x, truth = _gaussian_train(_regular(0.75, first_s=0.6))
    rng = np.random.default_rng(0)
    t = np.arange(x.shape[0]) / FS
    y = x + rng.uniform(-2.0, 2.0, 12)  # electrode offsets
    y = y + 0.3 * np.sin(2 * np.pi * 0.25 * t[:, None] + rng.uniform(0, 6, 12))  # wander
    y = y + 0.03 * rng.standard_normal(x.shape)  # broadband noise
    y = y + 0.05 * np.sin(2 * np.pi * 50.0 * t)[:, None]  # mains
    y[:, 7] = 0.0  # a disconnected lead
    _assert_all_found(detect_r_peaks(y, FS), truth, 0.010 * FS)


def test_large_t_waves_are_not_beats():
    x, truth = _gaussian_train(_regular(1.0))
    t = np.arange(x.shape[0]) / FS
    # T waves as large as the QRS in every lead (hyperkalaemia-like), broad and tall.
    t_big = sum(_bump(t, r / FS + 0.3, 0.05) for r in truth)
    y = x + t_big[:, None] * 1.2 * np.abs(QRS_GAIN)[None, :]
    _assert_all_found(detect_r_peaks(y, FS), truth, 0.010 * FS)


def test_other_sampling_rates():
    for fs in (100.0, 250.0, 1000.0):
        x, truth = _gaussian_train(_regular(0.9), fs=fs)
        _assert_all_found(detect_r_peaks(x, fs), truth, max(1, 0.010 * fs))


def test_flat_record_has_no_peaks():
    detected = detect_r_peaks(np.zeros((5000, 12)), FS)
    assert detected.dtype == np.int64 and detected.size == 0


def test_input_errors_name_the_record():
    x, _ = _gaussian_train(_regular())
    with pytest.raises(RecordError, match=r"^r1: expected a \(T, 12\) signal.*\(5000, 8\)"):
        detect_r_peaks(x[:, :8], FS, record="r1")
    with pytest.raises(RecordError, match=r"expected a \(T, 12\)"):
        detect_r_peaks(x[:, 0], FS)
    with pytest.raises(RecordError, match=r"expected a \(T, 12\)"):
        detect_r_peaks(x.T, FS)
    bad = x.copy()
    bad[10:13, 2] = np.nan
    bad[20, 5] = np.inf
    with pytest.raises(
        RecordError, match=r"^r2: 4 NaN or infinite samples in lead columns \[2, 5\]"
    ):
        detect_r_peaks(bad, FS, record="r2")
    with pytest.raises(RecordError, match="too short"):
        detect_r_peaks(x[:200], FS)
    with pytest.raises(RecordError, match="sampling rate"):
        detect_r_peaks(x, 0.0)
    with pytest.raises(ValueError, match="lead_weighting"):
        detect_r_peaks(x, FS, lead_weighting="max")
    with pytest.raises(ValueError, match="baseline"):
        detect_r_peaks(x, FS, baseline="spline")


# Matching -------------------------------------------------------------------------------


def test_match_peaks_hand_computed():
    assert match_peaks([100, 200, 300], [102, 195, 400], 10) == (2, 1, 1)
    # One detection between two references counts once.
    assert match_peaks([105], [100, 110], 10) == (1, 0, 1)
    # Two detections near one reference: one is a false positive.
    assert match_peaks([98, 103], [100], 10) == (1, 1, 0)
    # The tolerance is inclusive.
    assert match_peaks([110], [100], 10) == (1, 0, 0)
    assert match_peaks([111], [100], 10) == (0, 1, 1)
    assert match_peaks([], [1, 2], 5) == (0, 0, 2)
    assert match_peaks([1], [], 5) == (0, 1, 0)


def test_matched_pairs_takes_closest_first():
    det_idx, ref_idx = matched_pairs(np.array([106, 300]), np.array([100, 110, 305]), 10)
    # 106 is 4 from 110 and 6 from 100: it goes to 110; 300 goes to 305.
    assert det_idx.tolist() == [0, 1] and ref_idx.tolist() == [1, 2]
    det_idx, ref_idx = matched_pairs(np.array([104, 96]), np.array([100]), 10)
    assert det_idx.tolist() == [1] and ref_idx.tolist() == [0]  # tie: earlier detection


# Synthetic generator (when present) -----------------------------------------------------


def test_synthetic_clean_records_within_10_ms():
    for rec in synthetic.generate_dataset(25, seed=7):
        detected = detect_r_peaks(rec.ecg_clean, rec.fs)
        edge = int(0.15 * rec.fs)  # beats cut by the record edges are not in r_peaks
        detected = detected[(detected >= edge) & (detected < rec.ecg.shape[0] - edge)]
        truth = rec.r_peaks[(rec.r_peaks >= edge) & (rec.r_peaks < rec.ecg.shape[0] - edge)]
        _assert_all_found(detected, truth, 0.010 * rec.fs)


def test_synthetic_noisy_records():
    tp = fp = fn = close = 0
    for rec in synthetic.generate_dataset(25, seed=11):
        detected = detect_r_peaks(rec.ecg, rec.fs)
        edge = int(0.15 * rec.fs)
        detected = detected[(detected >= edge) & (detected < rec.ecg.shape[0] - edge)]
        truth = rec.r_peaks[(rec.r_peaks >= edge) & (rec.r_peaks < rec.ecg.shape[0] - edge)]
        d_idx, r_idx = matched_pairs(detected, truth, 0.05 * rec.fs)
        tp += d_idx.size
        fp += detected.size - d_idx.size
        fn += truth.size - d_idx.size
        close += int(np.sum(np.abs(detected[d_idx] - truth[r_idx]) <= 0.010 * rec.fs))
    assert tp / (tp + fn) >= 0.99 and tp / (tp + fp) >= 0.99
    # Noise can move the peak between two QRS lobes of similar energy (a deep Q and the R).
    assert close / tp >= 0.95


# Real data: the METHOD.md section 4 quality bar -----------------------------------------


def test_ludb_lead_ii_sensitivity_and_ppv_at_50_ms():
    """All LUDB records: lead-II QRS marks, 50 ms, scored inside lead II's annotated span.

    The strict protocol of bench/ludb_r_peaks.py (no union over leads).
    """
    root = shared_data("ludb")
    tp = fp = fn = 0
    records = ludb.list_records(root)
    for path in records:
        ecg, fs = ludb.read_signal(path)
        waves = ludb.read_waves(path, "II")
        reference = np.array([w.peak for w in waves if w.kind == "N"])
        first, last = ludb.waves_span(waves)
        tol = 0.050 * fs
        detected = detect_r_peaks(ecg, fs, record=path.name)
        detected = detected[(detected >= first - tol) & (detected <= last + tol)]
        counts = match_peaks(detected, reference, tol)
        tp, fp, fn = tp + counts[0], fp + counts[1], fn + counts[2]
    assert len(records) == len((root / "RECORDS").read_text().split())
    sensitivity, ppv = tp / (tp + fn), tp / (tp + fp)
    assert sensitivity >= 0.99 and ppv >= 0.99, (len(records), tp, fp, fn)
