"""Tests of the dipole-model ECG generator against independent facts.

Facts used: the Dower matrix has rank 3 and encodes Einthoven's and Goldberger's relations;
a dipole model has no signal outside its lobes; PTB-XL's superclass order; Fridericia's QT
correction; AAMI ectopic-beat timing (prematurity, compensatory pause); the hexaxial axis.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest

from beatssl_jax.ecg.leads import LEAD_INDEX, LEADS
from beatssl_jax.ecg.synthetic import (
    BEAT_CLASSES,
    CONDITIONS,
    SUPERCLASSES,
    SyntheticConfig,
    SyntheticRecord,
    generate_dataset,
    generate_record,
)
from beatssl_jax.ecg.vcg import DOWER

QUIET = SyntheticConfig(baseline_wander_mv=(0.0, 0.0), mains_mv=(0.0, 0.0), emg_mv=(0.0, 0.0))
# Regular sinus rhythm, no ectopy, no noise: every interval is exactly that of the template.
REGULAR = dataclasses.replace(QUIET, rr_std_frac=(0.0, 0.0), pac_prob=0.0, pvc_prob=0.0)
ECTOPIC = dataclasses.replace(
    QUIET, rr_std_frac=(0.0, 0.0), pac_prob=0.15, pvc_prob=0.15, heart_rate_bpm=(55.0, 75.0)
)
NORM, CD, STTC, MI, HYP = range(5)
N, S, V = range(3)


def runs(mask: np.ndarray) -> list[tuple[int, int, int]]:
    """(code, start, stop) of the non-background runs of a 1-D mask, in time order."""
    edges = np.flatnonzero(np.diff(mask.astype(np.int64))) + 1
    starts = np.concatenate([[0], edges])
    stops = np.concatenate([edges, [len(mask)]])
    return [(int(mask[a]), int(a), int(b)) for a, b in zip(starts, stops, strict=True) if mask[a]]


def qrs_run_of(record: SyntheticRecord, r: int) -> tuple[int, int]:
    """The QRS run of the mask (lead I column) that contains sample r."""
    for code, a, b in runs(record.wave_mask[:, 0]):
        if code == 2 and a <= r < b:
            return a, b
    raise AssertionError(f"R peak {r} lies in no QRS run")


def test_same_seed_same_record_and_different_seeds_differ():
    a, b, c = generate_record(7), generate_record(7), generate_record(8)
    for field in dataclasses.fields(SyntheticRecord):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y, err_msg=field.name)
        elif isinstance(x, float) and math.isnan(x):
            assert math.isnan(y)
        else:
            assert x == y, field.name
    assert a.ecg.shape == c.ecg.shape == (5000, 12)
    assert not np.array_equal(a.ecg, c.ecg)


def test_shapes_and_dtypes():
    rec = generate_record(3)
    assert rec.ecg.dtype == rec.ecg_clean.dtype == np.float32
    assert rec.ecg.shape == rec.ecg_clean.shape == rec.wave_mask.shape == (5000, len(LEADS))
    assert rec.wave_mask.dtype == np.int8
    assert rec.r_peaks.dtype == np.int64 and rec.beat_class.dtype == np.int8
    assert rec.r_peaks.shape == rec.beat_class.shape
    assert rec.superdiagnostic.shape == (5,) and rec.superdiagnostic.dtype == np.float32
    assert np.all(np.diff(rec.r_peaks) > 0)
    assert np.all((rec.r_peaks >= 0) & (rec.r_peaks < 5000))
    cfg = dataclasses.replace(QUIET, fs=250.0, duration_s=4.0)
    assert generate_record(3, cfg).ecg.shape == (1000, 12)


def test_dower_matrix_encodes_einthoven_and_goldberger():
    """The coefficient table itself: III = II - I exactly, aVR + aVL + aVF = 0 to 1e-3."""
    row = {name: DOWER[LEAD_INDEX[name]].astype(np.float64) for name in LEADS}
    np.testing.assert_allclose(row["III"], row["II"] - row["I"], atol=1e-6)
    np.testing.assert_allclose(row["aVR"] + row["aVL"] + row["aVF"], 0.0, atol=1.5e-3)
    np.testing.assert_allclose(row["aVR"], -(row["I"] + row["II"]) / 2, atol=1.5e-3)


@pytest.mark.parametrize("condition", range(5))
def test_clean_signal_is_a_dipole_projection_and_obeys_limb_lead_laws(condition):
    rec = generate_record(11, QUIET, condition=condition)
    x = rec.ecg_clean.astype(np.float64)
    scale = np.abs(x).max()
    # Rank 3: the 12 leads are a linear image of three dipole components.
    coef, *_ = np.linalg.lstsq(DOWER.astype(np.float64), x.T, rcond=None)
    residual = x.T - DOWER.astype(np.float64) @ coef
    assert np.abs(residual).max() < 1e-5 * scale
    assert np.linalg.matrix_rank(x, tol=1e-4 * scale) == 3
    lead = {name: x[:, LEAD_INDEX[name]] for name in LEADS}
    np.testing.assert_allclose(lead["III"], lead["II"] - lead["I"], atol=1e-5 * scale)
    np.testing.assert_allclose(lead["aVR"] + lead["aVL"] + lead["aVF"], 0.0, atol=2e-3 * scale)


@pytest.mark.parametrize("condition", [NORM, CD])
def test_no_signal_outside_the_waves_when_there_is_no_st_deviation(condition):
    """NORM and CD carry no ST lobe: the dipole is exactly zero on background samples, and
    nonzero inside every wave except at its onset sample (where a lobe starts from zero)."""
    rec = generate_record(5, QUIET, condition=condition)
    mask = rec.wave_mask[:, 0]
    assert np.all(rec.vcg_clean[mask == 0] == 0.0)
    norm = np.linalg.norm(rec.vcg_clean.astype(np.float64), axis=1)
    for _, a, b in runs(mask):
        interior = norm[a + 1 : b] if a > 0 else norm[a:b]
        assert np.count_nonzero(interior == 0.0) <= 1  # a loop may cross zero at one sample


def test_mask_columns_equal_and_codes_valid():
    rec = generate_record(21)
    assert np.all(rec.wave_mask == rec.wave_mask[:, :1])
    assert set(np.unique(rec.wave_mask)) <= {0, 1, 2, 3}


@pytest.mark.parametrize("seed", range(6))
def test_r_peaks_sit_at_the_qrs_energy_maximum(seed):
    rec = generate_record(seed, ECTOPIC)
    mask = rec.wave_mask[:, 0]
    assert np.all(mask[rec.r_peaks] == 2)
    energy = np.sum(rec.ecg_clean.astype(np.float64) ** 2, axis=1)
    for r in rec.r_peaks:
        a, b = qrs_run_of(rec, int(r))
        assert energy[r] == energy[a:b].max()
    # Every QRS run fully inside the record carries exactly one R peak; cut ones carry none.
    qrs_runs = [(a, b) for code, a, b in runs(mask) if code == 2]
    whole = [(a, b) for a, b in qrs_runs if a > 0 and b < len(mask)]
    assert len(rec.r_peaks) in (len(whole), len(whole) + 1, len(whole) + 2)
    for a, b in whole:
        assert np.count_nonzero((rec.r_peaks >= a) & (rec.r_peaks < b)) == 1


@pytest.mark.parametrize("seed", range(8))
def test_waves_follow_p_qrs_t_without_overlap(seed):
    """Runs alternate (P) QRS T with background between them, P only before a QRS."""
    cfg = dataclasses.replace(ECTOPIC, heart_rate_bpm=(45.0, 130.0))
    rec = generate_record(seed, cfg)
    codes = [code for code, _, _ in runs(rec.wave_mask[:, 0])]
    spans = runs(rec.wave_mask[:, 0])
    for (c0, _, b0), (c1, a1, _) in itertools.pairwise(spans):
        assert a1 > b0, "two waves touch without background between them"
        assert (c0, c1) in {(1, 2), (2, 3), (3, 1), (3, 2)}, f"wave {c0} followed by {c1}"
    assert 2 in codes and 3 in codes
    bounds = rec.wave_bounds
    has_p = bounds[:, 1] > bounds[:, 0]
    assert np.all(bounds[has_p, 1] < bounds[has_p, 2])  # P ends before its QRS
    assert np.all(bounds[:, 3] < bounds[:, 4])  # QRS ends before its T
    assert np.all(bounds[1:, 0] > bounds[:-1, 5])  # T ends before the next beat starts


@pytest.mark.parametrize("seed", range(10))
def test_interval_truth_matches_the_mask_and_the_configured_ranges(seed):
    # Up to 100 bpm a whole cycle fits without shortening the PR or QT (see the next test).
    cfg = dataclasses.replace(REGULAR, heart_rate_bpm=(45.0, 100.0))
    for condition in range(5):
        rec = generate_record(seed, cfg, condition=condition)
        ms = 1000.0 / rec.fs
        lo, hi = {
            CD: cfg.qrs_duration_cd_ms,
            HYP: (cfg.qrs_duration_ms[0], cfg.qrs_duration_ms[1] + 10.0),
        }.get(condition, cfg.qrs_duration_ms)
        widths = [(b - a) * ms for a, b in (qrs_run_of(rec, int(r)) for r in rec.r_peaks)]
        np.testing.assert_allclose(widths, rec.qrs_ms)
        assert lo - ms <= rec.qrs_ms <= hi + ms
        assert (rec.qrs_ms >= 120.0) == (condition == CD)
        assert cfg.pr_interval_ms[0] - ms <= rec.pr_ms <= cfg.pr_interval_ms[1] + ms
        # P and QT from the mask: P run start to QRS start, QRS start to T run end.
        spans = runs(rec.wave_mask[:, 0])
        for (c0, a0, _), (c1, a1, _), (c2, _, b2) in zip(spans, spans[1:], spans[2:], strict=False):
            if (c0, c1, c2) == (1, 2, 3) and a0 > 0 and b2 < len(rec.wave_mask):
                assert (a1 - a0) * ms == pytest.approx(rec.pr_ms)
                assert (b2 - a1) * ms == pytest.approx(rec.qt_ms)
        # Fridericia: QTc = QT / RR^(1/3) lies in the configured range (wide QRS excess aside).
        rr_s = 60.0 / rec.heart_rate_bpm
        qtc = (rec.qt_ms - max(0.0, rec.qrs_ms - 100.0)) / rr_s ** (1.0 / 3.0)
        assert cfg.qtc_ms[0] - 5.0 <= qtc <= cfg.qtc_ms[1] + 5.0


@pytest.mark.parametrize("condition", [NORM, CD])
def test_heart_rate_equals_the_configured_rate_for_a_regular_rhythm(condition):
    for bpm in (45.0, 72.0, 120.0, 130.0):
        cfg = dataclasses.replace(REGULAR, heart_rate_bpm=(bpm, bpm))
        for seed in range(3):
            rec = generate_record(seed, cfg, condition=condition)
            rr = np.diff(rec.r_peaks)
            assert rr.max() - rr.min() <= 1  # onsets are rounded to whole samples
            assert rec.heart_rate_bpm == pytest.approx(bpm, rel=2e-3)
            assert np.all(rec.beat_class == N)
            # A fast rhythm shortens the PR before it would let waves overlap.
            assert rec.pr_ms <= cfg.pr_interval_ms[1] + 2.0
            assert rec.pr_ms + rec.qt_ms < 60_000.0 / bpm


def test_heart_rate_stays_near_the_configured_range_with_rr_variability():
    cfg = dataclasses.replace(QUIET, pac_prob=0.0, pvc_prob=0.0)
    lo, hi = cfg.heart_rate_bpm
    rates = [generate_record(s, cfg).heart_rate_bpm for s in range(40)]
    # The base rate is drawn in [lo, hi]; RR variability (SD <= 4 %) moves the mean little.
    assert all(0.95 * lo <= r <= 1.05 * hi for r in rates)
    assert max(rates) - min(rates) > 0.3 * (hi - lo)


def test_superdiagnostic_is_one_hot_in_ptbxl_order():
    assert SUPERCLASSES == ("CD", "HYP", "MI", "NORM", "STTC")
    assert sorted(CONDITIONS) == list(SUPERCLASSES)
    for condition, name in enumerate(CONDITIONS):
        rec = generate_record(2, condition=condition)
        assert rec.condition == condition and rec.condition_name == name
        assert rec.superdiagnostic.sum() == 1.0
        assert SUPERCLASSES[int(np.argmax(rec.superdiagnostic))] == name
        assert rec.pattern.split(":")[0] == name


def test_conditions_are_drawn_with_the_configured_probabilities():
    only_mi = dataclasses.replace(QUIET, condition_probs=(0.0, 0.0, 0.0, 1.0, 0.0))
    assert {generate_record(s, only_mi).condition for s in range(10)} == {MI}
    drawn = [generate_record(s, QUIET).condition for s in range(60)]
    assert set(drawn) == set(range(5))


def test_condition_morphology():
    """Voltage (HYP), ST level (MI, STTC) and T polarity against NORM of the same seed."""
    hyp_ratio, st_mi, st_sttc = [], [], []
    for seed in range(12):
        rec = {c: generate_record(seed, REGULAR, condition=c) for c in range(5)}

        def qrs_peak(r: SyntheticRecord) -> float:
            a, b = r.wave_bounds[1, 2:4]
            return float(np.abs(r.ecg_clean[a:b]).max())

        def st_level(r: SyntheticRecord) -> float:
            # Largest |deviation| in the middle of the ST segment (QRS offset to T onset).
            _, _, _, q_off, t_on, _ = r.wave_bounds[1]
            return float(np.abs(r.ecg_clean[(q_off + t_on) // 2]).max())

        hyp_ratio.append(qrs_peak(rec[HYP]) / qrs_peak(rec[NORM]))
        st_mi.append(st_level(rec[MI]))
        st_sttc.append(st_level(rec[STTC]))
        assert st_level(rec[NORM]) == 0.0
    lo, hi = SyntheticConfig().hyp_qrs_scale
    assert 0.8 * lo <= np.median(hyp_ratio) <= 1.2 * hi
    assert min(st_mi) >= 0.05  # ST elevation of at least 0.05 mV in some lead
    assert min(st_sttc) >= 0.02


def test_amplitudes_are_physiological():
    r_ii, p_ii = [], []
    for seed in range(40):
        rec = generate_record(seed, REGULAR, condition=NORM)
        p_on, p_off, q_on, q_off, _, _ = rec.wave_bounds[1]
        r_ii.append(rec.ecg_clean[q_on:q_off, LEAD_INDEX["II"]].max())
        p_ii.append(np.abs(rec.ecg_clean[p_on:p_off, LEAD_INDEX["II"]]).max())
    assert 0.4 <= np.median(r_ii) <= 2.0 and max(r_ii) < 3.0
    assert 0.05 <= np.median(p_ii) <= 0.3


def test_qrs_axis_matches_a_hexaxial_measurement_on_the_signal():
    """Net QRS area in leads I and aVF of the clean signal gives the same frontal axis."""
    axes = []
    for seed in range(15):
        rec = generate_record(seed, REGULAR, condition=NORM)
        a, b = rec.wave_bounds[1, 2:4]
        area_i = rec.ecg_clean[a:b, LEAD_INDEX["I"]].astype(np.float64).sum()
        area_avf = rec.ecg_clean[a:b, LEAD_INDEX["aVF"]].astype(np.float64).sum()
        measured = math.degrees(math.atan2(2.0 * area_avf / math.sqrt(3.0), area_i))
        diff = (measured - rec.qrs_axis_deg + 180.0) % 360.0 - 180.0
        assert abs(diff) < 1.0
        axes.append(rec.qrs_axis_deg)
    assert max(axes) - min(axes) > 40.0  # the heart axis varies between records
    assert np.median(axes) > -30.0 and np.median(axes) < 90.0


def test_noise_free_config_and_noise_sources():
    rec = generate_record(4, QUIET)
    np.testing.assert_array_equal(rec.ecg, rec.ecg_clean)
    noisy = generate_record(4, SyntheticConfig())
    np.testing.assert_array_equal(noisy.ecg_clean, rec.ecg_clean)  # noise is drawn last
    assert not np.array_equal(noisy.ecg, noisy.ecg_clean)

    fs, n = 500.0, 5000
    freqs = np.fft.rfftfreq(n, 1.0 / fs)
    mains = dataclasses.replace(QUIET, mains_mv=(0.05, 0.05))
    hz = set()
    for seed in range(6):
        r = generate_record(seed, mains)
        spectrum = np.abs(np.fft.rfft(r.ecg - r.ecg_clean, axis=0)).sum(axis=1)
        hz.add(float(freqs[np.argmax(spectrum)]))
    assert hz <= {50.0, 60.0} and hz

    emg = dataclasses.replace(QUIET, emg_mv=(0.03, 0.03), emg_band_hz=(20.0, 150.0))
    r = generate_record(1, emg)
    noise = (r.ecg - r.ecg_clean).astype(np.float64)
    np.testing.assert_allclose(np.sqrt(np.mean(noise**2, axis=0)), 0.03, rtol=1e-3)
    power = np.abs(np.fft.rfft(noise, axis=0)) ** 2
    outside = (freqs < 19.0) | (freqs > 151.0)
    assert power[outside].sum() < 1e-6 * power.sum()

    wander = dataclasses.replace(QUIET, baseline_wander_mv=(0.2, 0.2))
    r = generate_record(1, wander)
    power = np.abs(np.fft.rfft((r.ecg - r.ecg_clean).astype(np.float64), axis=0)) ** 2
    assert power[freqs > 1.0].sum() < 0.05 * power.sum()


def test_ectopic_beats_are_premature_and_ventricular_ones_wide():
    seen = {S: 0, V: 0}
    for seed in range(12):
        rec = generate_record(seed, ECTOPIC)
        cls = rec.beat_class
        rr = np.diff(rec.r_peaks)
        widths = np.array([b - a for a, b in (qrs_run_of(rec, int(r)) for r in rec.r_peaks)])
        nn = [rr[k - 1] for k in range(1, len(cls)) if cls[k] == N and cls[k - 1] == N]
        if not nn:
            continue
        sinus_rr = float(np.median(nn))
        for k in range(1, len(cls)):
            if cls[k] == N:
                continue
            seen[int(cls[k])] += 1
            assert rr[k - 1] < 0.92 * sinus_rr, f"seed {seed}: {BEAT_CLASSES[cls[k]]} not early"
            if cls[k] == V:
                assert widths[k] > widths[cls == N].max()
                assert rec.wave_bounds[k, 0] == rec.wave_bounds[k, 1]  # no P
                if k + 1 < len(cls) and cls[k - 1] == N and cls[k + 1] == N:
                    # Full compensatory pause: the sinus rhythm is not reset.
                    assert abs(rr[k - 1] + rr[k] - 2 * sinus_rr) <= 3
            if cls[k] == S and k + 1 < len(cls) and cls[k + 1] == N:
                assert abs(rr[k] - sinus_rr) <= 2  # the sinus node is reset by the S beat
        assert np.all(rec.wave_bounds[cls == N, 1] > rec.wave_bounds[cls == N, 0])  # N has P
    assert seen[S] >= 3 and seen[V] >= 3


def test_default_config_has_rare_ectopy_and_zero_probability_has_none():
    none = dataclasses.replace(QUIET, pac_prob=0.0, pvc_prob=0.0)
    assert all(np.all(generate_record(s, none).beat_class == N) for s in range(10))
    counts = np.bincount(
        np.concatenate([generate_record(s).beat_class for s in range(30)]), minlength=3
    )
    assert counts[N] > 10 * (counts[S] + counts[V])


def test_generate_dataset_is_reproducible_and_prefix_stable():
    first = [r.seed for r in generate_dataset(5, seed=3, config=QUIET)]
    again = list(generate_dataset(3, seed=3, config=QUIET))
    assert first[:3] == [r.seed for r in again]
    assert len(set(first)) == 5
    other = [r.seed for r in generate_dataset(5, seed=4, config=QUIET)]
    assert set(first).isdisjoint(other)


def test_invalid_arguments_name_the_problem():
    with pytest.raises(ValueError, match="heart_rate_bpm"):
        SyntheticConfig(heart_rate_bpm=(120.0, 45.0))
    with pytest.raises(ValueError, match="condition_probs"):
        SyntheticConfig(condition_probs=(1.0, 0.0))
    with pytest.raises(ValueError, match="Nyquist"):
        SyntheticConfig(fs=250.0)
    with pytest.raises(ValueError, match="condition"):
        generate_record(0, condition=7)
