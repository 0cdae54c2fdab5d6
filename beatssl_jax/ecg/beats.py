"""Per-beat feature vectors and AAMI-style beat classes (METHOD.md section 4).

Beat-SSL (Rizqyawan et al., ISBI 2026, arXiv 2601.16147) contrasts heartbeats with soft
targets from beat feature vectors and with hard targets from beat classes; it does not
publish its beat classifier, so the rules below are [ours].

Beat features (`BEAT_FEATURE_NAMES`, one row per R peak, `BeatConfig` knobs):
  rr_before_ms      R(i) - R(i-1); the first beat takes the record's median RR instead.
  rr_after_ms       R(i+1) - R(i); the last beat takes the record's median RR instead.
                    With a single R peak both are NaN.
  local_rr_ms       median of the RR intervals within `local_rr_beats` intervals of the
                    beat on either side (the local sinus cycle).
  prematurity       rr_before / local_rr (about 1 for a sinus beat, < 1 for an early beat).
  pause_ratio       rr_after / local_rr (a full compensatory pause after an early beat makes
                    prematurity + pause_ratio about 2; a reset sinus node makes it less).
  qrs_width_ms      QRS duration of the single beat, from its spatial velocity with the same
                    rule as the median beat (`features.qrs_bounds`).
  qrs_amplitude_mv  peak magnitude of the vectorcardiogram (inverse Dower) within the QRS.
  qrs_area_mv_ms    integral of that magnitude over the QRS.
  qrs_corr          Pearson correlation of the beat's 12-lead QRS window
                    [R + `qrs_corr_ms`[0], R + `qrs_corr_ms`[1]] with the record's median
                    beat (leads concatenated, each lead's mean removed), maximised over
                    shifts of up to `max_lag_ms`.
  beat_corr         the same over the whole beat window [R + `beat_corr_ms`[0],
                    R + `beat_corr_ms`[1]] (P, QRS and T).
Morphology features (QRS width onward) are NaN for a beat whose QRS search window
(`FeatureConfig.qrs_search_ms`) or correlation window is cut by the record edge, and for
every beat of a record with fewer than `FeatureConfig.min_beats` complete windows (no
median beat to compare with).

Beat classes follow the heartbeat class groups of ANSI/AAMI EC57 (and ANSI/AAMI EC38):
N normal and bundle-branch-block beats, S supraventricular ectopic, V ventricular ectopic,
Q unclassifiable (the fusion class F is not separated). The rules (`BeatRules`):
  Q  the beat's morphology cannot be measured (NaN QRS width or correlation: window cut by
     the record edge, or no median beat);
  V  the QRS is unlike the record's dominant beat (qrs_corr < `v_corr_max`) and wide:
     width >= `v_width_min_ms`, or >= the dominant width + `v_width_excess_ms`. Both
     conditions are needed, so a record whose every beat is wide (bundle-branch block)
     stays N: its beats all resemble the dominant (median) beat;
  S  not V, QRS not wider than the dominant width + `v_width_excess_ms`, and premature:
     prematurity < `s_prematurity_max` (optionally also prematurity + pause_ratio <
     `s_max_cycle_sum`, i.e. no full compensatory pause, when that rule is set);
  N  every other beat.
The dominant width is the median QRS width of the beats with qrs_corr >= `v_corr_max`.
The median beat is the dominant beat only while ectopic beats are a minority. Under
atrial fibrillation, early beats come out S, whereas EC57 counts them N.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from beatssl_jax.ecg.features import (
    FeatureConfig,
    beat_windows,
    median_beat,
    qrs_bounds,
    rr_intervals_ms,
    spatial_velocity,
)
from beatssl_jax.ecg.preprocess import bandpass
from beatssl_jax.ecg.vcg import inverse_dower_12

BEAT_FEATURE_NAMES: tuple[str, ...] = (
    "rr_before_ms",
    "rr_after_ms",
    "local_rr_ms",
    "prematurity",
    "pause_ratio",
    "qrs_width_ms",
    "qrs_amplitude_mv",
    "qrs_area_mv_ms",
    "qrs_corr",
    "beat_corr",
)
BEAT_FEATURE_UNITS: tuple[str, ...] = (
    "ms", "ms", "ms", "1", "1", "ms", "mV", "mV ms", "1", "1",
)  # fmt: skip
NUM_BEAT_FEATURES = len(BEAT_FEATURE_NAMES)
BEAT_FEATURE_INDEX: dict[str, int] = {name: i for i, name in enumerate(BEAT_FEATURE_NAMES)}

BEAT_CLASSES: tuple[str, ...] = ("N", "S", "V", "Q")
BEAT_N, BEAT_S, BEAT_V, BEAT_Q = 0, 1, 2, 3


@dataclasses.dataclass(frozen=True)
class BeatConfig:
    """Knobs of the per-beat measurement (times in ms relative to the R peak).

    `features` supplies the band-pass, the median-beat window and the QRS-boundary rule, so
    beats and the record's median beat are measured the same way.
    """

    features: FeatureConfig = dataclasses.field(default_factory=FeatureConfig)
    local_rr_beats: int = 5
    qrs_corr_ms: tuple[float, float] = (-80.0, 120.0)
    beat_corr_ms: tuple[float, float] = (-200.0, 400.0)
    max_lag_ms: float = 10.0


@dataclasses.dataclass(frozen=True)
class BeatRules:
    """Thresholds of the beat classifier (see the module docstring)."""

    v_corr_max: float = 0.8
    v_width_min_ms: float = 120.0
    v_width_excess_ms: float = 30.0
    s_prematurity_max: float = 0.9
    s_max_cycle_sum: float | None = None  # e.g. 1.9 to demand an incomplete pause


def _local_rr(rr: np.ndarray, n_beats: int, half: int) -> np.ndarray:
    """Median RR within `half` intervals of each beat on either side; (n_beats,)."""
    out = np.full(n_beats, np.nan)
    if rr.size == 0:
        return out
    for i in range(n_beats):
        # Beat i sits between interval i - 1 (before) and interval i (after).
        lo, hi = max(0, i - half), min(rr.size, i + half)
        out[i] = np.median(rr[lo:hi]) if hi > lo else np.median(rr)
    return out


def _lagged_corr(
    beats: np.ndarray, template: np.ndarray, centre: int, half_lo: int, half_hi: int, lag: int
) -> np.ndarray:
    """Max over shifts |s| <= lag of the Pearson correlation between every beat's window
    [centre - half_lo + s, centre + half_hi + s) and the template's unshifted window.

    beats (n, W, L), template (W, L); per-lead means are removed before correlating.
    """
    t = template[centre - half_lo : centre + half_hi]
    t = t - np.mean(t, axis=0)
    t_norm = math.sqrt(float(np.sum(t * t)))
    best = np.full(beats.shape[0], -np.inf)
    for s in range(-lag, lag + 1):
        b = beats[:, centre - half_lo + s : centre + half_hi + s]
        b = b - np.mean(b, axis=1, keepdims=True)
        num = np.sum(b * t, axis=(1, 2))
        den = np.sqrt(np.sum(b * b, axis=(1, 2))) * t_norm
        best = np.maximum(best, np.where(den > 0, num / np.where(den > 0, den, 1.0), -1.0))
    return best


def beat_features(
    ecg: np.ndarray,
    fs: float,
    r_peaks: np.ndarray,
    config: BeatConfig = BeatConfig(),
) -> np.ndarray:
    """Per-beat feature vectors (n, Fb) float32, rows in the order of sorted `r_peaks`.

    `ecg` is (T, 12) in mV, canonical lead order. Columns follow `BEAT_FEATURE_NAMES`; NaN
    marks what cannot be measured (see the module docstring).
    """
    ecg = np.asarray(ecg, dtype=np.float64)
    if ecg.ndim != 2 or ecg.shape[1] != 12:
        raise ValueError(f"beat_features expects a (T, 12) signal, got shape {ecg.shape}")
    r = np.sort(np.asarray(r_peaks, dtype=np.int64).ravel())
    n = r.size
    out = np.full((n, NUM_BEAT_FEATURES), np.nan)
    if n == 0:
        return out.astype(np.float32)
    col = BEAT_FEATURE_INDEX
    fc = config.features
    ms = fs / 1000.0

    rr = rr_intervals_ms(r, fs)
    if rr.size:
        med_rr = float(np.median(rr))
        out[:, col["rr_before_ms"]] = np.concatenate([[med_rr], rr])
        out[:, col["rr_after_ms"]] = np.concatenate([rr, [med_rr]])
        local = _local_rr(rr, n, config.local_rr_beats)
        out[:, col["local_rr_ms"]] = local
        out[:, col["prematurity"]] = out[:, col["rr_before_ms"]] / local
        out[:, col["pause_ratio"]] = out[:, col["rr_after_ms"]] / local

    if fc.apply_bandpass:
        ecg = bandpass(ecg, fs, fc.bandpass_low_hz, fc.bandpass_high_hz, cap_high=True)
    made = median_beat(ecg, r, fs, fc)
    if made is None:
        return out.astype(np.float32)
    med, med_r, _, _ = made

    # One window per beat, wide enough for every measurement plus the correlation lag.
    lag = round(config.max_lag_ms * ms)
    need_lo = min(fc.qrs_search_ms[0], fc.pre_level_ms[0], config.qrs_corr_ms[0])
    need_hi = max(fc.qrs_search_ms[1], config.qrs_corr_ms[1])
    pre = max(round(-need_lo * ms), round(-config.beat_corr_ms[0] * ms)) + lag
    post = max(round(need_hi * ms), round(config.beat_corr_ms[1] * ms)) + lag
    beats, _ = beat_windows(ecg, r, pre, post)
    a = pre + round(fc.pre_level_ms[0] * ms)
    b = pre + round(fc.pre_level_ms[1] * ms)
    beats = beats - np.mean(beats[:, a:b, :], axis=1, keepdims=True)
    # The median beat on the same grid (R at index `pre`), edge-padded where it is shorter.
    idx = np.clip(np.arange(-pre, post) + med_r, 0, med.shape[0] - 1)
    template = med[idx]

    def inside(lo_ms: float, hi_ms: float, extra: int = 0) -> np.ndarray:
        lo_s = round(lo_ms * ms) - extra
        hi_s = round(hi_ms * ms) + extra
        return (r + lo_s >= 0) & (r + hi_s < ecg.shape[0])

    qrs_ok = inside(need_lo, need_hi, lag)
    beat_ok = inside(*config.beat_corr_ms, lag)

    def window(lo_ms: float, hi_ms: float) -> tuple[int, int]:
        return round(-lo_ms * ms), round(hi_ms * ms)

    q_lo, q_hi = window(*config.qrs_corr_ms)
    qrs_corr = _lagged_corr(beats, template, pre, q_lo, q_hi, lag)
    out[:, col["qrs_corr"]] = np.where(qrs_ok, qrs_corr, np.nan)
    b_lo, b_hi = window(*config.beat_corr_ms)
    beat_corr = _lagged_corr(beats, template, pre, b_lo, b_hi, lag)
    out[:, col["beat_corr"]] = np.where(beat_ok, beat_corr, np.nan)

    velocity = spatial_velocity(beats, fs)  # (n, W)
    magnitude = np.linalg.norm(beats @ inverse_dower_12().T.astype(np.float64), axis=-1)
    for i in np.flatnonzero(qrs_ok):
        on, off = qrs_bounds(velocity[i], pre, fs, fc)
        out[i, col["qrs_width_ms"]] = (off - on) / ms
        seg = magnitude[i, on : off + 1]
        out[i, col["qrs_amplitude_mv"]] = float(np.max(seg))
        out[i, col["qrs_area_mv_ms"]] = float(np.sum(seg)) / ms
    return out.astype(np.float32)


def classify_beats(beat_feats: np.ndarray, rules: BeatRules = BeatRules()) -> np.ndarray:
    """AAMI-style class codes (n,) int8 into `BEAT_CLASSES` from `beat_features` rows.

    The rules are in the module docstring; every threshold is a field of `rules`.
    """
    f = np.asarray(beat_feats, dtype=np.float64)
    if f.ndim != 2 or f.shape[1] != NUM_BEAT_FEATURES:
        raise ValueError(
            f"classify_beats expects (n, {NUM_BEAT_FEATURES}) beat features, got {f.shape}"
        )
    col = BEAT_FEATURE_INDEX
    width = f[:, col["qrs_width_ms"]]
    corr = f[:, col["qrs_corr"]]
    prem = f[:, col["prematurity"]]
    pause = f[:, col["pause_ratio"]]
    classes = np.full(f.shape[0], BEAT_N, dtype=np.int8)
    measured = np.isfinite(width) & np.isfinite(corr)
    classes[~measured] = BEAT_Q
    if not np.any(measured):
        return classes
    dominant = measured & (corr >= rules.v_corr_max)
    dom_width = float(np.median(width[dominant if np.any(dominant) else measured]))
    with np.errstate(invalid="ignore"):
        wide = (width >= rules.v_width_min_ms) | (width >= dom_width + rules.v_width_excess_ms)
        is_v = measured & (corr < rules.v_corr_max) & wide
        wider_than_dominant = width >= dom_width + rules.v_width_excess_ms
        early = np.isfinite(prem) & (prem < rules.s_prematurity_max)
        if rules.s_max_cycle_sum is not None:
            early &= np.isfinite(pause) & (prem + pause < rules.s_max_cycle_sum)
    is_s = measured & ~is_v & ~wider_than_dominant & early
    classes[is_v] = BEAT_V
    classes[is_s] = BEAT_S
    return classes


def pad_beats(array: np.ndarray, capacity: int, fill: float | int = 0) -> tuple[np.ndarray, int]:
    """Lay out per-beat rows (n, ...) in a fixed capacity (capacity, ...) for static shapes.

    Rows past the count are `fill` (e.g. -1 for R-peak indices, NaN for features). More
    than `capacity` beats keeps the first `capacity`. Returns (padded array, count).
    """
    a = np.asarray(array)
    if capacity < 0:
        raise ValueError(f"pad_beats: capacity must be >= 0, got {capacity}")
    count = min(a.shape[0], capacity)
    padded = np.full((capacity, *a.shape[1:]), fill, dtype=a.dtype)
    padded[:count] = a[:count]
    return padded, count
