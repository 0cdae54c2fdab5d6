"""The record feature vector phi behind the soft rhythm targets, and its dataset scaling.

Beat-SSL (Rizqyawan et al., ISBI 2026, arXiv 2601.16147) builds soft rhythm targets from
the similarity of clinical ECG feature vectors (METHOD.md section 4). The paper names the
kind of features (heart rate, RR variability, intervals, axes, amplitudes) but not how they
are measured; the measurement below is this project's [ours], following the usual
definitions of computerised ECG interpretation (Macfarlane and Lawrie, "Comprehensive
Electrocardiology", 2nd ed. 2010; AHA/ACCF/HRS recommendations for the standardisation of
the ECG, Kligfield et al. 2007 and Rautaharju et al. 2009).

How a record is measured:
  1. optional zero-phase band-pass (`FeatureConfig.bandpass_*`, METHOD.md section 2);
  2. the RR series from the given R peaks;
  3. a median beat: the sample-wise median over all complete beat windows
     [R - `window_pre_ms`, R + `window_post_ms`], each beat first shifted so that its
     pre-QRS level is zero (removes baseline wander between beats);
  4. delineation of the median beat on combined-lead curves (global, multi-lead
     boundaries, as in the CSE study, Willems et al. 1985): QRS onset/offset by thresholds
     on the spatial velocity sqrt(sum_leads (dx/dt)^2); T end by the tangent method on the
     spatial magnitude sqrt(sum_leads x^2), the search ending at the next beat's P onset
     (this P onset + the median RR) when a P wave is found; P onset/offset by thresholds on
     the spatial magnitude of the pre-QRS interval after the previous beat's T end;
  5. the isoelectric level of each lead, to which every amplitude, area and the T and P
     delineation refer: the mean of one `iso_ms` window between the previous beat's T end
     and the QRS onset, so that both the TP and the PR segment are candidates (at a fast
     rate the PR segment can be shorter than the window). Each window is scored by its
     mean spatial velocity plus its mean spatial distance from the PR-junction level (the
     mean of the last `iso_ms` before QRS onset) divided by the window's duration, both in
     mV/s; the lowest score wins. Velocity alone is not enough: the rounded apex of a P
     wave is as flat as a true isoelectric stretch, but lies away from the junction level.
     The previous T end is located on a first pass with the PR-junction level as baseline.

Quality check on the isoelectric level: when even the chosen window moves faster than
`iso_max_velocity_frac` (5 %) of the QRS's peak spatial velocity, the median beat has no
isoelectric stretch (continuous atrial activity such as flutter waves, or noise), and every
feature that refers to the isoelectric level is NaN rather than silently wrong: axes, the
QRS-T angle, all amplitudes, ST levels, T end (QT, QTc) and the P features. Heart rate, RR
variability and QRS duration (from the spatial velocity alone) remain. On LUDB the chosen
window moves at most 4.2 % of the QRS peak velocity; on the synthetic generator 2.7 %.

Agreement with the LUDB lead-II expert annotations (160 records, annotated R peaks; the
global 12-lead boundaries are not expected to equal one lead's): QRS duration bias -3.5 ms,
median absolute error 8.7 ms; PR bias -0.3 ms, median absolute error 6.0 ms; QT bias
-20 ms, median absolute error 21 ms, 90th percentile 40 ms. The tangent method ends the T
wave before its slow tail, hence the short QT; threshold rules were tried and spread more
on LUDB.

Features (`FEATURE_NAMES`, units in `FEATURE_UNITS`):
  heart_rate_bpm        60000 / mean RR.
  rr_sdnn_ms            sample standard deviation (ddof=1) of the RR intervals.
  rr_rmssd_ms           root mean square of successive RR differences.
  p_duration_ms         P offset - P onset.
  pr_interval_ms        QRS onset - P onset.
  qrs_duration_ms       QRS offset - QRS onset (global, all twelve leads).
  qt_interval_ms        T end - QRS onset.
  qtc_bazett_ms         Bazett's correction QT / sqrt(RR / 1 s), RR the mean RR.
  qrs_axis_deg          frontal-plane axis of the net QRS area (hexaxial convention, below),
                        in (-90, 270].
  t_axis_deg            frontal-plane axis of the net area from QRS offset to T end, in
                        (-90, 270].
  qrs_t_angle_deg       spatial angle between the mean QRS and mean T vectors of the
                        vectorcardiogram (inverse Dower), in [0, 180].
  p_amplitude_ii_mv     signed P amplitude in lead II at the spatial P peak.
  r_amplitude_v5_mv     largest positive QRS deflection in V5 (0 when none).
  s_amplitude_v1_mv     depth of the largest negative QRS deflection in V1, as a positive
                        number (0 when none).
  sokolow_lyon_mv       S(V1) + max(R(V5), R(V6)) (Sokolow and Lyon 1949).
  qrs_amplitude_mv      peak spatial magnitude of the vectorcardiogram during QRS.
  t_amplitude_ii_mv     signed T amplitude in lead II at the spatial T peak.
  t_amplitude_v5_mv     signed T amplitude in V5 at the spatial T peak.
  st_j60_max_mv         largest ST level over the 12 leads at J + `st_offset_ms`.
  st_j60_min_mv         smallest ST level over the 12 leads at J + `st_offset_ms`.
All amplitudes are relative to the isoelectric level of the median beat.

Frontal axes: the hexaxial convention puts lead I at 0 deg and aVF at +90 deg (downwards).
With Einthoven's equilateral triangle a frontal vector H of angle theta gives
I = |H| cos(theta) and aVF = II - I / 2 = (sqrt(3) / 2) |H| sin(theta), so the axis is
atan2((2 / sqrt(3)) * A_aVF, A_I) of the net areas A. (The shortcut atan2(A_aVF, A_I) is
off by up to 4.1 deg, near +-47 deg.)
An angle is circular, but `scale_features` maps each feature linearly, so the place where
the range is cut becomes the largest possible difference. Clinical reports cut at 180 deg,
in the middle of right axis deviation and the extreme ("northwest") axis: 179 and -179 deg
would become the two ends of the scale. The axes here are reported in (-90, 270] instead,
cut at -90 deg (straight up, superior), where few QRS or T axes lie; normal (-30 to 90),
left (-90 to -30) and right (90 to 180) axis deviation and the extreme axis (180 to 270,
i.e. -180 to -90) each stay one contiguous interval, and neighbouring directions stay
neighbouring values.

Missing values are NaN: RR features need 2 (heart rate) or 3 (SDNN, RMSSD) R peaks; every
morphology feature needs `min_beats` complete beat windows; the P features (P duration, PR,
P amplitude) are NaN when the median beat shows no consistent P wave (atrial fibrillation
or flutter, junctional rhythm), judged by its amplitude (`p_min_mv`) and by how much of the
beats' P-interval energy survives the median (`p_min_consistency`); QT, QTc, T axis and the
QRS-T angle are NaN when no T end is found before the search limit (a flat T), and the T
amplitudes when no T peak is found; every feature that refers to the isoelectric level is
NaN when the median beat has no isoelectric stretch (the quality check above).

Dataset scaling for soft targets (METHOD.md section 5, soft_1): `fit_feature_stats` stores
per-feature robust bounds (1st and 99th percentiles) and the median; `scale_features` maps
each feature into [0, 1] by (x - lo) / (hi - lo), clipped, with NaN replaced by the scaled
median. Every component of a scaled vector is then non-negative, so the cosine similarity
of two scaled vectors lies in [0, 1]; raised to the power gamma it is a valid soft target
weight with the positive pair at 1. Unscaled features would mix units (bpm next to mV) and
give negative cosines from signed features such as axes. A vector with every feature at its
low bound is all zeros; the loss must guard its norm (an epsilon) as usual.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np
from scipy.signal import find_peaks

from beatssl_jax.ecg.leads import LEAD_INDEX
from beatssl_jax.ecg.preprocess import bandpass
from beatssl_jax.ecg.vcg import inverse_dower_12

FEATURE_NAMES: tuple[str, ...] = (
    "heart_rate_bpm",
    "rr_sdnn_ms",
    "rr_rmssd_ms",
    "p_duration_ms",
    "pr_interval_ms",
    "qrs_duration_ms",
    "qt_interval_ms",
    "qtc_bazett_ms",
    "qrs_axis_deg",
    "t_axis_deg",
    "qrs_t_angle_deg",
    "p_amplitude_ii_mv",
    "r_amplitude_v5_mv",
    "s_amplitude_v1_mv",
    "sokolow_lyon_mv",
    "qrs_amplitude_mv",
    "t_amplitude_ii_mv",
    "t_amplitude_v5_mv",
    "st_j60_max_mv",
    "st_j60_min_mv",
)
FEATURE_UNITS: tuple[str, ...] = (
    "bpm", "ms", "ms", "ms", "ms", "ms", "ms", "ms", "deg", "deg", "deg",
    "mV", "mV", "mV", "mV", "mV", "mV", "mV", "mV", "mV",
)  # fmt: skip
NUM_FEATURES = len(FEATURE_NAMES)
FEATURE_INDEX: dict[str, int] = {name: i for i, name in enumerate(FEATURE_NAMES)}

# Frontal axes are reported in (AXIS_CUT_DEG, AXIS_CUT_DEG + 360]; see the module docstring.
AXIS_CUT_DEG = -90.0

_I, _II, _AVF = LEAD_INDEX["I"], LEAD_INDEX["II"], LEAD_INDEX["aVF"]
_V1, _V5, _V6 = LEAD_INDEX["V1"], LEAD_INDEX["V5"], LEAD_INDEX["V6"]


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """Knobs of the median-beat measurement (times in ms, amplitudes in mV).

    Thresholds are fractions of the curve's own peak, so they do not depend on the
    record's gain. Defaults were checked against the LUDB expert annotations (see
    tests/test_features.py).
    """

    apply_bandpass: bool = True
    bandpass_low_hz: float = 0.5
    bandpass_high_hz: float = 40.0
    window_pre_ms: float = 400.0  # beat window before R
    window_post_ms: float = 650.0  # beat window after R
    min_beats: int = 3  # complete beat windows needed for morphology features
    pre_level_ms: tuple[float, float] = (-120.0, -60.0)  # per-beat level window, from R
    qrs_search_ms: tuple[float, float] = (-150.0, 200.0)  # QRS boundaries lie here, from R
    qrs_peak_near_ms: float = 60.0  # the QRS velocity peak lies within this of R
    qrs_core_frac: float = 0.3  # spatial velocity above this fraction of its peak: QRS body
    qrs_core_gap_ms: float = 40.0  # body samples closer than this belong to one body
    qrs_onset_frac: float = 0.08  # onset: spatial velocity falls below this fraction
    qrs_offset_frac: float = 0.08  # offset: spatial velocity falls below this fraction
    qrs_quiet_ms: float = 10.0  # ... for at least this long
    iso_ms: float = 20.0  # length of the window taken as isoelectric
    # No isoelectric level when the chosen window's mean spatial velocity exceeds this
    # fraction of the QRS's peak spatial velocity (see `isoelectric_window`).
    iso_max_velocity_frac: float = 0.05
    t_min_after_qrs_ms: float = 60.0  # T peak searched from QRS offset + this
    t_peak_frac: float = (
        0.5  # T peak: first magnitude peak with this fraction of the top prominence
    )
    t_search_max_ms: float = 650.0  # T end at most R + this ...
    t_search_rr_frac: float = 0.65  # ... and at most R + this x median RR + t_search_rr_ms,
    t_search_rr_ms: float = 60.0  # which keeps the next beat's P wave out of the search
    p_search_ms: float = 300.0  # P wave searched in [QRS on - this, QRS on - p_gap_ms]
    p_gap_ms: float = 20.0
    p_edge_frac: float = 0.1  # P edges: this fraction of the way from each side's floor to peak
    p_min_mv: float = 0.03  # smallest spatial P amplitude taken as a P wave
    p_min_consistency: float = 0.5  # median-beat P energy / mean single-beat P energy
    st_offset_ms: float = 60.0  # ST level measured at J + this


@dataclasses.dataclass(frozen=True)
class Delineation:
    """Boundaries of a median beat, as sample indices into its window (None if absent).

    `r` is the R-peak position in the window; `baseline` is the (12,) isoelectric level that
    `beat` (the median beat minus that level, (W, 12)) already has removed, taken from the
    window starting at `iso_start`, whose mean spatial velocity is `iso_velocity` (mV/s).
    Without an isoelectric stretch (`iso_start` None) `baseline` and `beat` are NaN and only
    the QRS boundaries are given.
    """

    beat: np.ndarray
    r: int
    qrs_on: int
    qrs_off: int
    t_peak: int | None
    t_end: int | None
    p_on: int | None
    p_peak: int | None
    p_off: int | None
    baseline: np.ndarray
    iso_start: int | None
    iso_velocity: float


def rr_intervals_ms(r_peaks: np.ndarray, fs: float) -> np.ndarray:
    """RR intervals (n - 1,) in ms from sorted R-peak sample indices."""
    r = np.asarray(r_peaks, dtype=np.float64).ravel()
    return np.diff(r) * (1000.0 / fs)


def rr_statistics(r_peaks: np.ndarray, fs: float) -> tuple[float, float, float, float]:
    """(heart rate bpm, mean RR ms, SDNN ms, RMSSD ms) of an R-peak train; NaN where too short.

    SDNN is the sample standard deviation (ddof=1) and RMSSD the root mean square of
    successive differences (Task Force of the ESC and NASPE, Circulation 93, 1996).
    """
    rr = rr_intervals_ms(r_peaks, fs)
    if rr.size == 0:
        return math.nan, math.nan, math.nan, math.nan
    mean_rr = float(np.mean(rr))
    hr = 60000.0 / mean_rr if mean_rr > 0 else math.nan
    sdnn = float(np.std(rr, ddof=1)) if rr.size >= 2 else math.nan
    rmssd = float(np.sqrt(np.mean(np.diff(rr) ** 2))) if rr.size >= 2 else math.nan
    return hr, mean_rr, sdnn, rmssd


def beat_windows(
    ecg: np.ndarray, r_peaks: np.ndarray, pre: int, post: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stack the windows [R - pre, R + post) of every beat: ((n, pre + post, 12), (n,) bool).

    Windows that cross the record edge are clamped to the edge samples and flagged False in
    the second output (`complete`).
    """
    ecg = np.asarray(ecg)
    r = np.asarray(r_peaks, dtype=np.int64).ravel()
    offsets = np.arange(-pre, post)
    idx = r[:, None] + offsets[None, :]
    complete = (r - pre >= 0) & (r + post <= ecg.shape[0])
    return ecg[np.clip(idx, 0, ecg.shape[0] - 1)], complete


def spatial_velocity(x: np.ndarray, fs: float) -> np.ndarray:
    """sqrt(sum over leads of (dx/dt)^2) in mV/s for x (..., W, L); same length as x.

    Central differences (numpy.gradient), so the curve is centred on the samples.
    """
    d = np.gradient(x, axis=-2) * fs
    return np.sqrt(np.sum(d * d, axis=-1))


def _runs(flags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Half-open [start, end) of every run of True in a 1-D bool array."""
    padded = np.concatenate([[False], flags, [False]]).astype(np.int8)
    change = np.diff(padded)
    return np.flatnonzero(change == 1), np.flatnonzero(change == -1)


def qrs_bounds(
    velocity: np.ndarray, r: int, fs: float, config: FeatureConfig = FeatureConfig()
) -> tuple[int, int]:
    """QRS onset and offset (sample indices) on a spatial-velocity curve (W,) around R at `r`.

    The QRS body is the span, within `config.qrs_search_ms` of R, where the velocity
    exceeds `qrs_core_frac` of its peak there; the onset is the last sample before the body
    whose velocity is below `qrs_onset_frac` of the peak, the offset the first sample after
    it below `qrs_offset_frac` (search-window edges when the curve never falls that low).
    Only quiet stretches of at least `qrs_quiet_ms` count, so that the brief pause of the
    velocity where the loop turns between two QRS lobes does not end the QRS.
    """
    n = velocity.shape[0]
    lo = max(0, r + round(config.qrs_search_ms[0] * fs / 1000.0))
    hi = min(n, r + round(config.qrs_search_ms[1] * fs / 1000.0) + 1)
    seg = velocity[lo:hi]
    # Peak of the QRS velocity: near the R peak, not a later T upstroke.
    reach = round(config.qrs_peak_near_ms * fs / 1000.0)
    near = max(0, r - lo - reach), min(seg.size, r - lo + reach + 1)
    peak = float(np.max(seg[near[0] : near[1]])) if near[1] > near[0] else float(np.max(seg))
    core = np.flatnonzero(seg >= config.qrs_core_frac * peak)
    # The body is the run of core samples that contains (or is nearest to) R.
    core_start, core_end = int(core[0]), int(core[-1])
    gaps = np.flatnonzero(np.diff(core) > round(config.qrs_core_gap_ms * fs / 1000.0))
    if gaps.size:
        runs_start = np.concatenate([[core[0]], core[gaps + 1]])
        runs_end = np.concatenate([core[gaps], [core[-1]]])
        rel = r - lo
        dist = np.where(
            (runs_start <= rel) & (rel <= runs_end),
            0,
            np.minimum(np.abs(runs_start - rel), np.abs(runs_end - rel)),
        )
        k = int(np.argmin(dist))
        core_start, core_end = int(runs_start[k]), int(runs_end[k])
    quiet = max(1, round(config.qrs_quiet_ms * fs / 1000.0))
    starts, ends = _runs(seg[:core_start] < config.qrs_onset_frac * peak)
    long_enough = (ends - starts >= quiet) | (starts == 0)
    onset = int(ends[long_enough][-1]) - 1 if np.any(long_enough) else 0
    starts, ends = _runs(seg[core_end:] < config.qrs_offset_frac * peak)
    long_enough = (ends - starts >= quiet) | (ends == seg.size - core_end)
    offset = core_end + int(starts[long_enough][0]) if np.any(long_enough) else seg.size - 1
    return lo + onset, lo + offset


def _ms(n_samples: float, fs: float) -> float:
    return float(n_samples) * 1000.0 / fs


def _frontal_axis_deg(area_i: float, area_avf: float) -> float:
    """Hexaxial frontal axis in (-90, 270] of a vector whose lead I and aVF projections are
    given."""
    if not (np.isfinite(area_i) and np.isfinite(area_avf)) or (area_i == 0 and area_avf == 0):
        return math.nan
    angle = math.degrees(math.atan2(2.0 / math.sqrt(3.0) * area_avf, area_i))
    return angle + 360.0 if angle <= AXIS_CUT_DEG else angle


def frontal_axis_deg(segment: np.ndarray) -> float:
    """Frontal-plane axis (deg, hexaxial, in (-90, 270]) of the net area of a (W, 12) segment.

    Uses leads I and aVF with Einthoven's triangle: atan2((2 / sqrt(3)) A_aVF, A_I), moved
    into (-90, 270] (see the module docstring for why the cut lies at -90 deg).
    """
    area = np.sum(segment, axis=0)
    return _frontal_axis_deg(float(area[_I]), float(area[_AVF]))


def median_beat(
    ecg: np.ndarray, r_peaks: np.ndarray, fs: float, config: FeatureConfig = FeatureConfig()
) -> tuple[np.ndarray, int, np.ndarray, np.ndarray] | None:
    """Median beat over complete beat windows, or None if fewer than `config.min_beats`.

    Returns (median (W, 12), R index in the window, level-shifted beats (n, W, 12) used,
    (n,) bool mask of the input beats that were complete). Each beat is shifted by its mean
    level in `config.pre_level_ms` before the median.
    """
    pre = round(config.window_pre_ms * fs / 1000.0)
    post = round(config.window_post_ms * fs / 1000.0)
    beats, complete = beat_windows(ecg, r_peaks, pre, post)
    if int(complete.sum()) < config.min_beats:
        return None
    beats = beats[complete].astype(np.float64)
    a = pre + round(config.pre_level_ms[0] * fs / 1000.0)
    b = pre + round(config.pre_level_ms[1] * fs / 1000.0)
    beats = beats - np.mean(beats[:, a:b, :], axis=1, keepdims=True)
    return np.median(beats, axis=0), pre, beats, complete


def _most_prominent_peak(curve: np.ndarray, min_prominence: float = 0.0) -> int | None:
    """Index of the interior local maximum of `curve` with the largest prominence, or None."""
    if curve.size < 3:
        return None
    peaks, props = find_peaks(curve, prominence=max(min_prominence, 1e-9))
    if peaks.size == 0:
        return None
    return int(peaks[int(np.argmax(props["prominences"]))])


def _p_consistent(
    beat: np.ndarray,
    beats: np.ndarray | None,
    baseline: np.ndarray,
    lo: int,
    hi: int,
    config: FeatureConfig,
) -> bool:
    """Whether the median beat keeps at least `p_min_consistency` of the single beats' energy
    in [lo, hi): a consistent P wave survives the median, fibrillatory waves do not."""
    if beats is None or beats.shape[0] < 2:
        return True
    single = beats[:, lo:hi, :] - baseline
    single = single - np.mean(single, axis=1, keepdims=True)
    centred = beat[lo:hi] - np.mean(beat[lo:hi], axis=0)
    energy = float(np.mean(np.sum(single * single, axis=(1, 2))))
    return float(np.sum(centred * centred)) >= config.p_min_consistency * max(energy, 1e-12)


def _t_wave(
    mag: np.ndarray, start: int, limit: int, config: FeatureConfig
) -> tuple[int | None, int | None]:
    """T peak and T end on a spatial-magnitude curve, searched in [start, limit).

    The T peak is the earliest interior local maximum whose prominence reaches `t_peak_frac`
    of the largest prominence there: the T is the first repolarisation deflection after the
    QRS, so a T whose prominence a displaced ST segment reduces still wins over a larger P
    wave of the next beat that falls inside the search. The T end is where the tangent at
    the steepest descent after the peak meets the lowest magnitude between the peak and the
    limit (tangent method); None when that crossing lies past the limit.
    """
    if limit - start < 3:
        return None, None
    seg = mag[start:limit]
    peaks, props = find_peaks(seg, prominence=1e-9)
    if peaks.size == 0:
        return None, None
    prominence = props["prominences"]
    t_peak = start + int(peaks[prominence >= config.t_peak_frac * float(np.max(prominence))][0])
    low = t_peak + int(np.argmin(mag[t_peak:limit]))
    if low - t_peak <= 2:
        return t_peak, None
    dmag = np.gradient(mag[t_peak - 1 : low + 1])[1:-1]  # central differences on [peak, low)
    k = int(np.argmin(dmag))
    slope = float(dmag[k])
    if slope >= 0:
        return t_peak, None
    cross = t_peak + k + (float(mag[t_peak + k]) - float(mag[low])) / (-slope)
    return t_peak, (round(cross) if cross <= limit else None)


def junction_level(
    med: np.ndarray, qrs_on: int, fs: float, config: FeatureConfig = FeatureConfig()
) -> np.ndarray:
    """PR-junction level (12,): the mean of `med` (W, 12) over the last `iso_ms` up to QRS
    onset. A window rather than the onset sample, which a late onset would put on the
    initial slope of the QRS."""
    n_iso = max(2, round(config.iso_ms * fs / 1000.0))
    return np.mean(med[max(0, qrs_on - n_iso) : qrs_on + 1], axis=0)


def isoelectric_window(
    med: np.ndarray,
    velocity: np.ndarray,
    lo: int,
    qrs_on: int,
    fs: float,
    config: FeatureConfig = FeatureConfig(),
) -> tuple[int | None, float]:
    """Start of the isoelectric window in [lo, qrs_on) of a median beat, and its velocity.

    Every `iso_ms` window inside [lo, qrs_on) of `med` (W, 12) is scored, in mV/s, by
    (path length of the 12-lead signal inside the window + mean spatial distance of the
    signal from the PR-junction level) / window duration, i.e. the window's mean spatial
    `velocity` (W,) plus its mean distance from that level per window duration (see
    `junction_level`). A true isoelectric stretch (PR or TP segment) scores near zero; the
    rounded apex of a P or T wave is flat too, but lies away from the junction level.
    Returns the start of the lowest-scoring window and its mean spatial velocity (the
    quality measure, mV/s), or (None, inf) when [lo, qrs_on) is shorter than one window.
    """
    n_iso = max(2, round(config.iso_ms * fs / 1000.0))
    lo = max(0, lo)
    if qrs_on - lo < n_iso:
        return None, math.inf
    kernel = np.ones(n_iso) / n_iso
    speed = np.convolve(velocity[lo:qrs_on], kernel, mode="valid")
    dist = np.linalg.norm(med[lo:qrs_on] - junction_level(med, qrs_on, fs, config), axis=1)
    offset = np.convolve(dist, kernel, mode="valid") * (fs / n_iso)
    k = int(np.argmin(speed + offset))
    return lo + k, float(speed[k])


def _p_wave(
    beat: np.ndarray,
    mag: np.ndarray,
    beats: np.ndarray | None,
    baseline: np.ndarray,
    lo: int,
    hi: int,
    config: FeatureConfig,
) -> tuple[int | None, int | None, int | None]:
    """P onset, peak and offset in [lo, hi): the most prominent peak of the spatial magnitude,
    each edge where the magnitude falls to `p_edge_frac` of the way down to the lowest level
    on that side; all None without a consistent P wave."""
    lo = max(lo, 1)
    if hi - lo <= 2:
        return None, None, None
    seg = mag[lo:hi]
    k = _most_prominent_peak(seg, config.p_min_mv)
    if k is None or not _p_consistent(beat, beats, baseline, lo, hi, config):
        return None, None, None
    left_floor = float(np.min(seg[: k + 1]))
    right_floor = float(np.min(seg[k:]))
    height = float(seg[k])
    left = np.flatnonzero(seg[:k] <= left_floor + config.p_edge_frac * (height - left_floor))
    right = np.flatnonzero(seg[k:] <= right_floor + config.p_edge_frac * (height - right_floor))
    if not (left.size and right.size):
        return None, None, None
    return lo + int(left[-1]), lo + k, lo + k + int(right[0])


def delineate(
    med: np.ndarray,
    r: int,
    fs: float,
    rr_ms: float,
    beats: np.ndarray | None = None,
    config: FeatureConfig = FeatureConfig(),
) -> Delineation:
    """Delineate a median beat `med` (W, 12) with R at index `r`; see the module docstring.

    `rr_ms` (the record's median RR) bounds the T-end and P searches so that they stay inside
    one cardiac cycle; `beats` (n, W, 12), the single beats behind the median, lets the P
    wave be judged by its consistency across beats (skipped when None).
    """
    w = med.shape[0]
    ms = fs / 1000.0
    rr = round(rr_ms * ms) if np.isfinite(rr_ms) else w
    vel = spatial_velocity(med, fs)
    qrs_on, qrs_off = qrs_bounds(vel, r, fs, config)
    qrs_peak_velocity = float(np.max(vel[qrs_on : qrs_off + 1]))
    t_reach = min(config.t_search_max_ms, config.t_search_rr_frac * rr_ms + config.t_search_rr_ms)
    t_limit = min(r + round(t_reach * ms), w - 2)
    t_start = qrs_off + round(config.t_min_after_qrs_ms * ms)

    # Isoelectric window: searched from the previous beat's T end (located on a first pass
    # with the PR-junction level as baseline; the latest T end the search allows when none is
    # found) to the QRS onset, so the TP segment competes with the PR segment.
    first = np.linalg.norm(med - junction_level(med, qrs_on, fs, config), axis=1)
    _, t_end_first = _t_wave(first, t_start, t_limit, config)
    prev_t_end = (t_end_first if t_end_first is not None else t_limit) - rr
    iso_start, iso_velocity = isoelectric_window(med, vel, prev_t_end, qrs_on, fs, config)
    if iso_start is None or iso_velocity > config.iso_max_velocity_frac * qrs_peak_velocity:
        nan = np.full(med.shape[1], np.nan)
        return Delineation(
            med + nan, r, qrs_on, qrs_off, None, None, None, None, None, nan, None, iso_velocity
        )
    n_iso = max(2, round(config.iso_ms * ms))
    baseline = np.mean(med[iso_start : iso_start + n_iso], axis=0)
    beat = med - baseline
    mag = np.linalg.norm(beat, axis=1)

    t_peak, t_end = _t_wave(mag, t_start, t_limit, config)
    p_lo = qrs_on - round(config.p_search_ms * ms)
    if t_end is not None:  # stay after the previous beat's T end
        p_lo = max(p_lo, t_end - rr)
    p_hi = qrs_on - round(config.p_gap_ms * ms)
    p_on, p_peak, p_off = _p_wave(beat, mag, beats, baseline, p_lo, p_hi, config)
    if p_on is not None and p_on + rr < t_limit:
        # The next beat's P wave lies inside the T search: end the search at its onset.
        t_peak, t_end = _t_wave(mag, t_start, p_on + rr, config)
    return Delineation(
        beat,
        r,
        qrs_on,
        qrs_off,
        t_peak,
        t_end,
        p_on,
        p_peak,
        p_off,
        baseline,
        iso_start,
        iso_velocity,
    )


def record_features(
    ecg: np.ndarray,
    fs: float,
    r_peaks: np.ndarray,
    config: FeatureConfig = FeatureConfig(),
) -> np.ndarray:
    """The record feature vector phi (F,) float32, in the order of `FEATURE_NAMES`.

    `ecg` is (T, 12) in mV, canonical lead order; `r_peaks` are R-peak sample indices. A
    feature that cannot be measured is NaN (see the module docstring).
    """
    ecg = np.asarray(ecg, dtype=np.float64)
    if ecg.ndim != 2 or ecg.shape[1] != 12:
        raise ValueError(f"record_features expects a (T, 12) signal, got shape {ecg.shape}")
    r_peaks = np.sort(np.asarray(r_peaks, dtype=np.int64).ravel())
    phi = np.full(NUM_FEATURES, np.nan, dtype=np.float64)
    hr, mean_rr, sdnn, rmssd = rr_statistics(r_peaks, fs)
    phi[FEATURE_INDEX["heart_rate_bpm"]] = hr
    phi[FEATURE_INDEX["rr_sdnn_ms"]] = sdnn
    phi[FEATURE_INDEX["rr_rmssd_ms"]] = rmssd

    if config.apply_bandpass:
        ecg = bandpass(ecg, fs, config.bandpass_low_hz, config.bandpass_high_hz, cap_high=True)
    made = median_beat(ecg, r_peaks, fs, config)
    if made is None:
        return phi.astype(np.float32)
    med, r, beats, _ = made
    rr_med = float(np.median(rr_intervals_ms(r_peaks, fs)))
    d = delineate(med, r, fs, rr_med, beats, config)
    beat = d.beat

    def put(name: str, value: float) -> None:
        phi[FEATURE_INDEX[name]] = value

    put("qrs_duration_ms", _ms(d.qrs_off - d.qrs_on, fs))
    if d.iso_start is None:  # no isoelectric level: nothing relative to it is measurable
        return phi.astype(np.float32)
    qrs = beat[d.qrs_on : d.qrs_off + 1]
    put("qrs_axis_deg", frontal_axis_deg(qrs))
    r_v5 = max(float(np.max(qrs[:, _V5])), 0.0)
    r_v6 = max(float(np.max(qrs[:, _V6])), 0.0)
    s_v1 = max(-float(np.min(qrs[:, _V1])), 0.0)
    put("r_amplitude_v5_mv", r_v5)
    put("s_amplitude_v1_mv", s_v1)
    put("sokolow_lyon_mv", s_v1 + max(r_v5, r_v6))
    vcg = beat @ inverse_dower_12().T.astype(np.float64)  # (W, 3)
    put("qrs_amplitude_mv", float(np.max(np.linalg.norm(vcg[d.qrs_on : d.qrs_off + 1], axis=1))))
    st = d.qrs_off + round(config.st_offset_ms * fs / 1000.0)
    if st < beat.shape[0]:
        put("st_j60_max_mv", float(np.max(beat[st])))
        put("st_j60_min_mv", float(np.min(beat[st])))
    if d.t_peak is not None:
        put("t_amplitude_ii_mv", float(beat[d.t_peak, _II]))
        put("t_amplitude_v5_mv", float(beat[d.t_peak, _V5]))
    if d.t_end is not None:
        qt = _ms(d.t_end - d.qrs_on, fs)
        put("qt_interval_ms", qt)
        if np.isfinite(mean_rr):
            put("qtc_bazett_ms", qt / math.sqrt(mean_rr / 1000.0))
        tw = beat[d.qrs_off : d.t_end + 1]
        put("t_axis_deg", frontal_axis_deg(tw))
        q_vec = np.sum(vcg[d.qrs_on : d.qrs_off + 1], axis=0)
        t_vec = np.sum(vcg[d.qrs_off : d.t_end + 1], axis=0)
        norm = float(np.linalg.norm(q_vec) * np.linalg.norm(t_vec))
        if norm > 0:
            cos = float(np.clip(np.dot(q_vec, t_vec) / norm, -1.0, 1.0))
            put("qrs_t_angle_deg", math.degrees(math.acos(cos)))
    if d.p_on is not None and d.p_off is not None and d.p_peak is not None:
        put("p_duration_ms", _ms(d.p_off - d.p_on, fs))
        put("pr_interval_ms", _ms(d.qrs_on - d.p_on, fs))
        put("p_amplitude_ii_mv", float(beat[d.p_peak, _II]))
    return phi.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class FeatureStats:
    """Per-feature robust bounds of a dataset: `low` / `high` (1st / 99th percentiles) and
    `median`, each (F,) float64, with the feature names they belong to."""

    names: tuple[str, ...]
    low: np.ndarray
    high: np.ndarray
    median: np.ndarray

    def to_dict(self) -> dict[str, list]:
        """Plain lists for dataset metadata (JSON); NaN is stored as None."""

        def as_list(a: np.ndarray) -> list[float | None]:
            return [float(v) if np.isfinite(v) else None for v in np.asarray(a, np.float64)]

        return {
            "names": list(self.names),
            "low": as_list(self.low),
            "high": as_list(self.high),
            "median": as_list(self.median),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, list]) -> FeatureStats:
        """Inverse of `to_dict`."""

        def as_array(v: list) -> np.ndarray:
            return np.array([np.nan if x is None else float(x) for x in v], dtype=np.float64)

        stats = cls(
            names=tuple(d["names"]),
            low=as_array(d["low"]),
            high=as_array(d["high"]),
            median=as_array(d["median"]),
        )
        if not len(stats.names) == stats.low.size == stats.high.size == stats.median.size:
            raise ValueError(
                f"feature stats: {len(stats.names)} names but {stats.low.size} / "
                f"{stats.high.size} / {stats.median.size} low / high / median entries"
            )
        return stats


def fit_feature_stats(
    matrix: np.ndarray,
    names: tuple[str, ...] = FEATURE_NAMES,
    low_percentile: float = 1.0,
    high_percentile: float = 99.0,
) -> FeatureStats:
    """Robust per-feature scaling statistics of a (N, F) feature matrix, ignoring NaN.

    A feature that is NaN in every record gets NaN statistics (and scales to 0.5).
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] != len(names):
        raise ValueError(f"expected a (N, {len(names)}) feature matrix, got shape {m.shape}")
    f = m.shape[1]
    low, high, median = (np.full(f, np.nan) for _ in range(3))
    for j in range(f):
        col = m[:, j][np.isfinite(m[:, j])]
        if col.size:
            low[j], high[j] = np.percentile(col, [low_percentile, high_percentile])
            median[j] = np.median(col)
    return FeatureStats(tuple(names), low, high, median)


def scale_features(phi: np.ndarray, stats: FeatureStats) -> np.ndarray:
    """Map features (..., F) into [0, 1] by (x - low) / (high - low), clipped, float32.

    NaN becomes the scaled median. A feature whose statistics are NaN, or whose bounds
    coincide (constant in the dataset), scales to 0.5 everywhere.
    """
    x = np.asarray(phi, dtype=np.float64)
    if x.shape[-1] != len(stats.names):
        raise ValueError(
            f"feature vectors have {x.shape[-1]} entries, stats describe {len(stats.names)}"
        )
    span = stats.high - stats.low
    ok = np.isfinite(span) & (span > 0) & np.isfinite(stats.median)
    safe_span = np.where(ok, span, 1.0)
    low = np.where(ok, stats.low, 0.0)
    filled = np.where(np.isfinite(x), x, np.where(ok, stats.median, 0.0))
    scaled = np.clip((filled - low) / safe_span, 0.0, 1.0)
    return np.where(ok, scaled, 0.5).astype(np.float32)
