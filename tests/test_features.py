"""Tests of the record feature vector phi and its dataset scaling.

References: hand-computed RR statistics and frontal axes, the exact ground truth of the
synthetic generator (R peaks, heart rate, PR, QRS, QT, axes), and the expert annotations of
LUDB (Kalyakulina et al. 2020).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time

import numpy as np
import pytest
import wfdb

from beatssl_jax.ecg import synthetic
from beatssl_jax.ecg.features import (
    AXIS_CUT_DEG,
    FEATURE_INDEX,
    FEATURE_NAMES,
    FEATURE_UNITS,
    FeatureConfig,
    FeatureStats,
    fit_feature_stats,
    frontal_axis_deg,
    record_features,
    rr_statistics,
    scale_features,
)
from beatssl_jax.ecg.leads import LEAD_INDEX, derive_limb_leads
from beatssl_jax.ecg.peaks import detect_r_peaks
from tests.conftest import shared_data

FS = 500.0


def frontal_dipole_ecg(
    num_samples: int,
    waves: list[tuple[float, float, float, float]],
    fs: float = FS,
) -> np.ndarray:
    """A (T, 12) record from Gaussian waves of a frontal-plane dipole.

    Each wave is (centre sample, hexaxial angle deg, sigma ms, amplitude mV). Lead I is the
    horizontal component, lead II the projection on +60 deg (Einthoven's triangle), the other
    limb leads follow from Einthoven's and Goldberger's relations; V1-V6 carry fixed
    multiples of the two components so that the chest leads are not silent.
    """
    t = np.arange(num_samples, dtype=np.float64)
    hx = np.zeros(num_samples)
    hy = np.zeros(num_samples)
    for centre, angle, sigma_ms, amp in waves:
        g = amp * np.exp(-0.5 * ((t - centre) / (sigma_ms * fs / 1000.0)) ** 2)
        hx += g * math.cos(math.radians(angle))
        hy += g * math.sin(math.radians(angle))
    ecg = np.zeros((num_samples, 12))
    lead_i = hx
    lead_ii = 0.5 * hx + math.sqrt(3.0) / 2.0 * hy
    ecg[:, LEAD_INDEX["I"]] = lead_i
    ecg[:, LEAD_INDEX["II"]] = lead_ii
    for name, value in derive_limb_leads(lead_i, lead_ii).items():
        ecg[:, LEAD_INDEX[name]] = value
    for k, (wx, wy) in enumerate([(-0.5, 0.2), (-0.2, 0.3), (0.3, 0.3), (0.8, 0.2), (1.0, 0.1)]):
        ecg[:, LEAD_INDEX[f"V{k + 1}"]] = wx * hx + wy * hy
    ecg[:, LEAD_INDEX["V6"]] = 0.9 * hx
    return ecg.astype(np.float32)


def test_feature_names_and_units_align():
    assert len(FEATURE_NAMES) == len(FEATURE_UNITS) == len(set(FEATURE_NAMES))
    for name, unit in zip(FEATURE_NAMES, FEATURE_UNITS, strict=True):
        assert name.endswith({"bpm": "_bpm", "ms": "_ms", "deg": "_deg", "mV": "_mv"}[unit])


def test_rr_statistics_of_a_known_peak_train():
    # RR = 800, 1000, 800, 1000 ms at 500 Hz.
    peaks = np.array([100, 500, 1000, 1400, 1900])
    hr, mean_rr, sdnn, rmssd = rr_statistics(peaks, FS)
    assert mean_rr == pytest.approx(900.0)
    assert hr == pytest.approx(60000.0 / 900.0)
    assert sdnn == pytest.approx(math.sqrt(4 * 100.0**2 / 3))  # ddof = 1
    assert rmssd == pytest.approx(200.0)
    # Too short: one interval has no variability statistics, one peak has nothing.
    assert math.isnan(rr_statistics(np.array([10, 500]), FS)[2])
    assert all(math.isnan(v) for v in rr_statistics(np.array([10]), FS))


@pytest.mark.parametrize(
    ("angle", "reported"),
    [(-150.0, 210.0), (-90.0, 270.0), (-89.0, -89.0), (-30.0, -30.0), (0.0, 0.0),
     (45.0, 45.0), (60.0, 60.0), (100.0, 100.0), (179.0, 179.0), (181.0, 181.0)],
)  # fmt: skip
def test_frontal_axis_of_a_dipole(angle, reported):
    # Reported in (-90, 270]: the superior direction -90 deg is where the range is cut.
    ecg = frontal_dipole_ecg(400, [(200, angle, 15.0, 1.0)])
    assert frontal_axis_deg(ecg) == pytest.approx(reported, abs=1e-3)


def test_axes_near_180_deg_scale_as_neighbours():
    # 175 deg and -175 deg are 10 deg apart. Cut at 180 deg they would be the two ends of a
    # linear scale; reported in (-90, 270] they are 175 and 185 and scale as neighbours.
    peaks = np.arange(250, 4900, 500)

    def axes(angle: float) -> np.ndarray:
        waves = [(r, angle, 12.0, 1.2) for r in peaks] + [
            (r + 150, angle, 50.0, 0.3) for r in peaks
        ]
        phi = record_features(frontal_dipole_ecg(5000, waves), FS, peaks)
        return phi[[FEATURE_INDEX["qrs_axis_deg"], FEATURE_INDEX["t_axis_deg"]]]

    near = {a: axes(a) for a in (175.0, -175.0)}
    assert AXIS_CUT_DEG == -90.0
    np.testing.assert_allclose(near[175.0], 175.0, atol=1.0)
    np.testing.assert_allclose(near[-175.0], 185.0, atol=1.0)
    # Dataset statistics from records spread over the axis range (normal, left and right
    # deviation, extreme axis).
    spread = np.full((9, len(FEATURE_NAMES)), np.nan)
    for i, a in enumerate(np.linspace(-80.0, 260.0, 9)):
        spread[i, [FEATURE_INDEX["qrs_axis_deg"], FEATURE_INDEX["t_axis_deg"]]] = a
    stats = fit_feature_stats(spread)
    cols = [FEATURE_INDEX["qrs_axis_deg"], FEATURE_INDEX["t_axis_deg"]]
    scaled = {}
    for a, v in near.items():
        phi = np.full(len(FEATURE_NAMES), np.nan)
        phi[cols] = v
        scaled[a] = scale_features(phi, stats)[cols]
    assert np.all(np.abs(scaled[175.0] - scaled[-175.0]) <= 0.05)
    # Every reported axis lies in (-90, 270].
    for a in np.arange(-180.0, 180.0, 7.5):
        value = frontal_axis_deg(frontal_dipole_ecg(400, [(200, a, 15.0, 1.0)]))
        assert -90.0 < value <= 270.0
        assert _angle_diff(value, a) == pytest.approx(0.0, abs=1e-3)


def test_record_features_on_a_hand_built_record():
    # Beats every 1000 ms: QRS along +60 deg, T along -20 deg 300 ms after R.
    peaks = np.arange(250, 4900, 500)
    waves = [(r, 60.0, 12.0, 1.2) for r in peaks] + [(r + 150, -20.0, 50.0, 0.3) for r in peaks]
    ecg = frontal_dipole_ecg(5000, waves)
    phi = record_features(ecg, FS, peaks)
    assert phi.dtype == np.float32 and phi.shape == (len(FEATURE_NAMES),)
    assert phi[FEATURE_INDEX["heart_rate_bpm"]] == pytest.approx(60.0)
    assert phi[FEATURE_INDEX["rr_sdnn_ms"]] == pytest.approx(0.0, abs=1e-6)
    assert phi[FEATURE_INDEX["qrs_axis_deg"]] == pytest.approx(60.0, abs=2.0)
    assert phi[FEATURE_INDEX["t_axis_deg"]] == pytest.approx(-20.0, abs=5.0)
    # No P wave was drawn: the P features are missing, not invented.
    for name in ("p_duration_ms", "pr_interval_ms", "p_amplitude_ii_mv"):
        assert np.isnan(phi[FEATURE_INDEX[name]])


def test_qrs_t_angle_of_a_dower_projected_dipole():
    # A 3D dipole (Frank X, Y, Z) projected on the 12 leads by Dower: QRS and T vectors
    # 70 deg apart; the inverse Dower transform recovers the dipole (to within 0.1 %).
    from beatssl_jax.ecg.vcg import DOWER

    qrs_dir = np.array([0.6, 0.7, 0.39])
    t_dir = np.array([0.9, -0.1, -0.2])
    expected = math.degrees(
        math.acos(qrs_dir @ t_dir / np.linalg.norm(qrs_dir) / np.linalg.norm(t_dir))
    )
    t = np.arange(5000, dtype=np.float64)
    vcg = np.zeros((5000, 3))
    peaks = np.arange(300, 4800, 450)
    for r in peaks:
        vcg += np.exp(-0.5 * ((t - r) / 6.0) ** 2)[:, None] * qrs_dir
        vcg += 0.3 * np.exp(-0.5 * ((t - r - 140) / 25.0) ** 2)[:, None] * t_dir
    ecg = (vcg @ DOWER.T.astype(np.float64)).astype(np.float32)
    phi = record_features(ecg, FS, peaks)
    assert phi[FEATURE_INDEX["qrs_t_angle_deg"]] == pytest.approx(expected, abs=5.0)


def _baseline_features() -> list[int]:
    """Columns that refer to the isoelectric level (all but RR statistics and QRS duration)."""
    keep = {"heart_rate_bpm", "rr_sdnn_ms", "rr_rmssd_ms", "qrs_duration_ms"}
    return [i for i, name in enumerate(FEATURE_NAMES) if name not in keep]


def test_no_isoelectric_stretch_gives_nan_not_a_wrong_level():
    # Atrial flutter at 300/min with 4:1 conduction and a low-voltage QRS: a sawtooth of
    # flutter waves (quick rise over 40 ms, slow fall over 160 ms, along -80 deg, i.e. the
    # negative sawtooth of the inferior leads) runs through every interval, so no window
    # between the beats is flat. Without the flutter waves the same beats are measured in
    # full, with the QRS axis drawn.
    peaks = np.arange(250, 4900, 400)
    beats = [(r, 60.0, 14.0, 0.6) for r in peaks] + [(r + 140, 40.0, 40.0, 0.2) for r in peaks]
    clean = frontal_dipole_ecg(5000, beats)
    phase = (np.arange(5000) / FS * 5.0) % 1.0
    saw = 0.3 * np.where(phase < 0.2, phase / 0.2, (1.0 - phase) / 0.8)
    hx, hy = saw * math.cos(math.radians(-80.0)), saw * math.sin(math.radians(-80.0))
    flutter = np.zeros((5000, 12))
    lead_i, lead_ii = hx, 0.5 * hx + math.sqrt(3.0) / 2.0 * hy
    flutter[:, LEAD_INDEX["I"]] = lead_i
    flutter[:, LEAD_INDEX["II"]] = lead_ii
    for name, value in derive_limb_leads(lead_i, lead_ii).items():
        flutter[:, LEAD_INDEX[name]] = value
    for k in range(1, 7):
        flutter[:, LEAD_INDEX[f"V{k}"]] = 0.5 * hx
    phi_clean = record_features(clean, FS, peaks)
    phi_flutter = record_features(clean + flutter, FS, peaks)
    p_cols = [FEATURE_INDEX[n] for n in ("p_duration_ms", "pr_interval_ms", "p_amplitude_ii_mv")]
    assert np.all(np.isfinite(np.delete(phi_clean, p_cols)))
    assert phi_clean[FEATURE_INDEX["qrs_axis_deg"]] == pytest.approx(60.0, abs=2.0)
    assert np.all(np.isnan(phi_flutter[_baseline_features()]))
    # The rate does not refer to the isoelectric level, nor does the QRS duration (from the
    # spatial velocity; here lengthened by the steep flutter upstrokes next to the QRS).
    for name in ("heart_rate_bpm", "rr_sdnn_ms"):
        assert phi_flutter[FEATURE_INDEX[name]] == phi_clean[FEATURE_INDEX[name]]
    assert np.isfinite(phi_flutter[FEATURE_INDEX["qrs_duration_ms"]])


def test_too_few_beats_give_nan_morphology_but_keep_the_rate():
    peaks = np.array([1000, 1500])
    ecg = frontal_dipole_ecg(3000, [(r, 60.0, 12.0, 1.0) for r in peaks])
    phi = record_features(ecg, FS, peaks)
    assert phi[FEATURE_INDEX["heart_rate_bpm"]] == pytest.approx(60.0)
    assert np.isnan(phi[FEATURE_INDEX["qrs_duration_ms"]])
    assert np.isnan(phi[FEATURE_INDEX["rr_sdnn_ms"]])


# --- synthetic records: the generator's exact ground truth -----------------------------------


@pytest.fixture(scope="module")
def synthetic_measurements():
    rows = []
    for seed in range(60):
        rec = synthetic.generate_record(seed)
        phi = record_features(rec.ecg, rec.fs, rec.r_peaks)
        detected = detect_r_peaks(rec.ecg, rec.fs)
        phi_detected = record_features(rec.ecg, rec.fs, detected)
        rows.append((rec, phi, phi_detected))
    return synthetic.CONDITIONS, rows


def _angle_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (np.asarray(a) - np.asarray(b) + 180.0) % 360.0 - 180.0


def test_synthetic_heart_rate(synthetic_measurements):
    _, rows = synthetic_measurements
    true_hr = np.array([rec.heart_rate_bpm for rec, _, _ in rows])
    hr = np.array([phi[FEATURE_INDEX["heart_rate_bpm"]] for _, phi, _ in rows])
    np.testing.assert_allclose(hr, true_hr, atol=2.0)
    # With detected R peaks: the detector may add or drop a beat cut by the record edge,
    # which moves the mean RR a little; a whole missed or doubled beat moves it a lot.
    hr_detected = np.array([p[FEATURE_INDEX["heart_rate_bpm"]] for _, _, p in rows])
    err = np.abs(hr_detected - true_hr)
    print(f"HR from detected peaks: within 2 bpm in {np.mean(err <= 2):.1%} of records")
    assert np.mean(err <= 2.0) >= 0.95


def _isoelectric_room_ms(rec) -> float:
    """Longest isoelectric stretch the generator drew around the record's normal beats: the
    PR segment (P offset to QRS onset) or the median TP gap (T offset to the next P onset)."""
    b = rec.wave_bounds
    normal = rec.beat_class == 0
    pr_segment = float(np.median(b[normal, 2] - b[normal, 1]))
    tp_gap = float(np.median(b[1:, 0] - b[:-1, 5]))
    return max(pr_segment, tp_gap) * 1000.0 / rec.fs


def test_synthetic_intervals(synthetic_measurements):
    conditions, rows = synthetic_measurements
    cond = np.array([conditions[rec.condition] for rec, _, _ in rows])
    qrs_err = np.array([phi[FEATURE_INDEX["qrs_duration_ms"]] - rec.qrs_ms for rec, phi, _ in rows])
    pr_err = np.array([phi[FEATURE_INDEX["pr_interval_ms"]] - rec.pr_ms for rec, phi, _ in rows])
    qt_err = np.array([phi[FEATURE_INDEX["qt_interval_ms"]] - rec.qt_ms for rec, phi, _ in rows])
    room = np.array([_isoelectric_room_ms(rec) for rec, _, _ in rows])
    print(
        f"QRS error mean {np.mean(qrs_err):.1f} max |.| {np.max(np.abs(qrs_err)):.0f} ms; "
        f"PR error mean {np.nanmean(pr_err):.1f} (P found in {np.mean(np.isfinite(pr_err)):.0%}); "
        f"QT error mean {np.nanmean(qt_err[cond != 'STTC']):.1f} ms"
    )
    # QRS: the global (12-lead) duration against the generator's mask width.
    assert np.all(np.abs(qrs_err) <= 20.0)
    # PR: the synthetic P onset is a raised cosine rising from exactly zero, so a threshold
    # at 10 % of the P height lands 10-15 ms after the mask's onset; the tolerance allows that
    # bias and the sampling/filtering spread around it.
    assert np.mean(np.isfinite(pr_err)) >= 0.75
    assert np.all(np.abs(pr_err[np.isfinite(pr_err)]) <= 25.0)
    # QT: the tangent method ends the T where its steepest slope meets the floor, before the
    # T's slow tail, so it reads short (by 10-30 ms here); STTC records may carry a T flattened
    # to almost nothing, whose end no method can locate. A QT refers to the isoelectric level,
    # so it may be missing only where the generator left no isoelectric stretch as long as the
    # measurement window.
    ok = cond != "STTC"
    measurable = room >= FeatureConfig().iso_ms
    assert np.all(np.isfinite(qt_err[ok & measurable]))
    finite = ok & np.isfinite(qt_err)
    assert np.all(np.abs(qt_err[finite]) <= 40.0)


def test_synthetic_axes(synthetic_measurements):
    conditions, rows = synthetic_measurements
    cond = np.array([conditions[rec.condition] for rec, _, _ in rows])
    qrs_axis = np.array([phi[FEATURE_INDEX["qrs_axis_deg"]] for _, phi, _ in rows])
    true_qrs = np.array([rec.qrs_axis_deg for rec, _, _ in rows])
    t_axis = np.array([phi[FEATURE_INDEX["t_axis_deg"]] for _, phi, _ in rows])
    true_t = np.array([rec.t_axis_deg for rec, _, _ in rows])
    room = np.array([_isoelectric_room_ms(rec) for rec, _, _ in rows])
    # Axes are net areas above the isoelectric level: NaN is right only for a record without
    # an isoelectric stretch as long as the measurement window, and wrong anywhere else.
    measurable = room >= FeatureConfig().iso_ms
    assert np.all(np.isfinite(qrs_axis[measurable]))
    assert np.all(np.isfinite(t_axis[measurable & (cond != "STTC")]))
    # MI records carry an ST lobe that starts inside the QRS and a wide Q, which move the net
    # QRS area away from the generator's QRS-lobe axis; the others must agree closely.
    ok = (cond != "MI") & np.isfinite(qrs_axis)
    assert np.all(np.abs(_angle_diff(qrs_axis[ok], true_qrs[ok])) <= 10.0)
    normal = (cond == "NORM") & np.isfinite(t_axis)
    assert np.all(np.abs(_angle_diff(t_axis[normal], true_t[normal])) <= 15.0)
    for axis in (qrs_axis, t_axis):
        assert np.all((axis[np.isfinite(axis)] > -90.0) & (axis[np.isfinite(axis)] <= 270.0))


def test_short_pr_segment_does_not_move_the_isoelectric_level():
    # Seed 19: right bundle branch block at 115/min; the generator shortens the PR segment
    # to 10 ms, shorter than the isoelectric window, while the TP segment is 26 ms. The
    # flattest stretch right before the QRS is the P wave's apex; taking it as isoelectric
    # turned the QRS axis by about 180 deg and lengthened the QT by about 60 ms.
    rec = synthetic.generate_record(19)
    assert rec.pattern == "CD:RBBB" and _isoelectric_room_ms(rec) >= FeatureConfig().iso_ms
    b = rec.wave_bounds[rec.beat_class == 0]
    assert float(np.median(b[:, 2] - b[:, 1])) * 1000.0 / rec.fs < FeatureConfig().iso_ms
    phi = record_features(rec.ecg, rec.fs, rec.r_peaks)
    assert _angle_diff(phi[FEATURE_INDEX["qrs_axis_deg"]], rec.qrs_axis_deg) == pytest.approx(
        0.0, abs=10.0
    )
    assert _angle_diff(phi[FEATURE_INDEX["t_axis_deg"]], rec.t_axis_deg) == pytest.approx(
        0.0, abs=15.0
    )
    assert phi[FEATURE_INDEX["qt_interval_ms"]] == pytest.approx(rec.qt_ms, abs=40.0)


def test_wide_qrs_condition_measures_wider(synthetic_measurements):
    conditions, rows = synthetic_measurements
    cond = np.array([conditions[rec.condition] for rec, _, _ in rows])
    qrs = np.array([phi[FEATURE_INDEX["qrs_duration_ms"]] for _, phi, _ in rows])
    assert (cond == "CD").sum() >= 3 and (cond == "NORM").sum() >= 3
    assert np.min(qrs[cond == "CD"]) > np.max(qrs[cond == "NORM"])


# --- dataset scaling ----------------------------------------------------------------------


def test_scaling_maps_into_unit_interval_and_fills_nan_with_scaled_median():
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(500, len(FEATURE_NAMES))) * 50 + 10
    matrix[rng.random(matrix.shape) < 0.05] = np.nan
    matrix[:, 3] = np.nan  # a feature never measured
    matrix[:, 4] = 7.0  # a constant feature
    stats = fit_feature_stats(matrix)
    col = matrix[:, 0][np.isfinite(matrix[:, 0])]
    assert stats.low[0] == pytest.approx(np.percentile(col, 1))
    assert stats.high[0] == pytest.approx(np.percentile(col, 99))
    assert stats.median[0] == pytest.approx(np.median(col))
    scaled = scale_features(matrix, stats)
    assert scaled.dtype == np.float32 and scaled.shape == matrix.shape
    assert np.all((scaled >= 0) & (scaled <= 1))
    nan_rows = np.isnan(matrix[:, 0])
    expected = (stats.median[0] - stats.low[0]) / (stats.high[0] - stats.low[0])
    np.testing.assert_allclose(scaled[nan_rows, 0], expected, rtol=1e-6)
    np.testing.assert_allclose(scaled[:, 3], 0.5)
    np.testing.assert_allclose(scaled[:, 4], 0.5)
    # Non-negative vectors: every cosine similarity lies in [0, 1].
    unit = scaled / np.linalg.norm(scaled, axis=1, keepdims=True)
    cos = unit @ unit.T
    assert cos.min() >= 0.0 and cos.max() <= 1.0 + 1e-6


def test_feature_stats_round_trip_through_json():
    matrix = np.random.default_rng(1).normal(size=(50, len(FEATURE_NAMES)))
    matrix[:, 2] = np.nan
    stats = fit_feature_stats(matrix)
    restored = FeatureStats.from_dict(json.loads(json.dumps(stats.to_dict())))
    assert restored.names == stats.names == FEATURE_NAMES
    for field in ("low", "high", "median"):
        np.testing.assert_array_equal(getattr(restored, field), getattr(stats, field))
    np.testing.assert_array_equal(scale_features(matrix, restored), scale_features(matrix, stats))


# --- LUDB: real records and expert annotations ----------------------------------------------


def _ludb_lead_ii_waves(path: str) -> dict[str, np.ndarray]:
    """Annotated (onset, peak, offset) triples of lead II, per wave symbol p / N / t."""
    import wfdb

    ann = wfdb.rdann(path, "ii")
    sym, at = np.array(ann.symbol), np.asarray(ann.sample)
    out: dict[str, list] = {"p": [], "N": [], "t": []}
    for i in range(1, len(sym) - 1):
        if sym[i] in out and sym[i - 1] == "(" and sym[i + 1] == ")":
            out[sym[i]].append((at[i - 1], at[i], at[i + 1]))
    return {k: np.array(v, dtype=np.int64).reshape(-1, 3) for k, v in out.items()}


@pytest.fixture(scope="module")
def ludb_measurements():
    root = shared_data("ludb")
    from beatssl_jax.ecg.records import read_wfdb

    with open(root / "ludb.csv", newline="") as f:
        rhythm = {row["ID"]: row["Rhythms"].strip() for row in csv.DictReader(f)}
    rows, times = [], []
    for rid in sorted(rhythm, key=int):
        path = str(root / "data" / rid)
        rec = read_wfdb(path)
        waves = _ludb_lead_ii_waves(path)
        # R peaks: every annotated QRS peak of lead II (some QRS lack their onset marks).
        peaks = np.asarray(wfdb.rdann(path, "ii").sample)[
            np.array(wfdb.rdann(path, "ii").symbol) == "N"
        ]
        start = time.perf_counter()
        phi = record_features(rec.signal, rec.fs, peaks)
        times.append(time.perf_counter() - start)
        ms = 1000.0 / rec.fs
        qrs = (
            float(np.mean(waves["N"][:, 2] - waves["N"][:, 0])) * ms
            if len(waves["N"])
            else math.nan
        )
        prs = []
        for p_on in waves["p"][:, 0]:
            later = waves["N"][waves["N"][:, 0] > p_on, 0]
            if later.size and (later[0] - p_on) * ms < 400:
                prs.append((later[0] - p_on) * ms)
        pr = float(np.mean(prs)) if prs else math.nan
        rows.append(
            dict(id=rid, rhythm=rhythm[rid], phi=phi, peaks=peaks, fs=rec.fs, qrs=qrs, pr=pr)
        )
    print(
        f"LUDB record_features: median {1e3 * np.median(times):.1f} ms, "
        f"max {1e3 * np.max(times):.1f} ms per 10 s 500 Hz record"
    )
    return rows


def test_ludb_features_are_mostly_finite(ludb_measurements):
    phi = np.array([r["phi"] for r in ludb_measurements])
    p_cols = [FEATURE_INDEX[n] for n in ("p_duration_ms", "pr_interval_ms", "p_amplitude_ii_mv")]
    rest = np.delete(phi, p_cols, axis=1)
    finite = np.all(np.isfinite(rest), axis=1)
    print(f"LUDB: all non-P features finite in {finite.mean():.1%} of {len(phi)} records")
    assert finite.mean() >= 0.95
    # P waves: found in most sinus records, rarely in atrial fibrillation or flutter.
    sinus = np.array([r["rhythm"].lower().startswith("sinus") for r in ludb_measurements])
    atrial = np.array([r["rhythm"].lower().startswith("atrial") for r in ludb_measurements])
    has_p = np.isfinite(phi[:, FEATURE_INDEX["pr_interval_ms"]])
    print(f"LUDB: P found in {has_p[sinus].mean():.1%} sinus, {has_p[atrial].mean():.1%} AF/AFL")
    assert has_p[sinus].mean() >= 0.8
    assert has_p[atrial].mean() <= 0.5


def test_ludb_heart_rate_matches_annotated_rr(ludb_measurements):
    for r in ludb_measurements:
        expected = 60.0 / np.mean(np.diff(r["peaks"]) / r["fs"])
        assert r["phi"][FEATURE_INDEX["heart_rate_bpm"]] == pytest.approx(expected, rel=1e-5)


def test_ludb_qrs_and_pr_agree_with_lead_ii_annotations(ludb_measurements):
    phi = np.array([r["phi"] for r in ludb_measurements])
    qrs_err = phi[:, FEATURE_INDEX["qrs_duration_ms"]] - np.array(
        [r["qrs"] for r in ludb_measurements]
    )
    pr_err = phi[:, FEATURE_INDEX["pr_interval_ms"]] - np.array(
        [r["pr"] for r in ludb_measurements]
    )
    qrs_err = qrs_err[np.isfinite(qrs_err)]
    pr_err = pr_err[np.isfinite(pr_err)]
    print(
        f"LUDB QRS (global - lead II annotation): bias {qrs_err.mean():.1f} ms, "
        f"median |e| {np.median(np.abs(qrs_err)):.1f} ms, n={qrs_err.size}; "
        f"PR: bias {pr_err.mean():.1f} ms, median |e| {np.median(np.abs(pr_err)):.1f} ms, "
        f"n={pr_err.size}"
    )
    # A global 12-lead QRS spans the earliest onset and the latest offset over all leads, so
    # it is expected to run a little longer than lead II's; inter-observer differences in
    # QRS boundaries are about 5-10 ms (CSE study, Willems et al. 1985). Bias within 10 ms
    # and a typical error within 15 ms are what a median-beat measurement should reach.
    assert abs(qrs_err.mean()) <= 10.0
    assert np.median(np.abs(qrs_err)) <= 15.0
    assert abs(pr_err.mean()) <= 10.0
    assert np.median(np.abs(pr_err)) <= 12.0


def test_feature_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        FeatureConfig().min_beats = 1  # type: ignore[misc]
