"""A deterministic 12-lead ECG generator driven by a moving heart dipole (VCG model).

The project's embedded default dataset: no download, exact ground truth. One record is the
projection of a 3D heart dipole d(t) (Frank X left, Y inferior, Z posterior; mV) onto the 12
standard leads with the Dower matrix (Dower et al. 1980; `beatssl_jax.ecg.vcg.DOWER`):
`ecg = d @ DOWER.T`. Modelling the ECG as the lead-field projection of a single dipole that
traces a P loop, a QRS loop and a T loop is the classical vectorcardiographic view (Frank 1956;
Malmivuo and Plonsey, "Bioelectromagnetism", 1995, ch. 15-16); McSharry et al. (IEEE TBME
2003) and Sameni et al. (EURASIP JASP 2007) build synthetic ECGs the same way from sums of
lobes per wave.

Each wave is a sum of lobes with compact support. A lobe rises with a half raised-cosine from
its onset to its first peak sample, stays flat to its second peak sample (a plain bump has the
two equal) and falls with a half raised-cosine to its offset; outside [onset, offset] it is
exactly zero. Wave boundaries are whole samples, so the segmentation mask is exact:
  P    one lobe along the atrial direction;
  QRS  a loop of two to four lobes with different directions (normally initial septal q,
       main R, terminal S); the QRS spans from the first lobe's onset to the last lobe's offset;
  T    one asymmetric lobe (slow upstroke, faster downstroke) along the T direction;
  ST   an optional plateau lobe (ST elevation or depression) that rises at the end of the QRS
       and returns to zero at the T offset; the ST segment itself stays background in the
       mask, as in annotated databases such as LUDB (Kalyakulina et al. 2020).
The 12 columns of `wave_mask` are equal: one dipole gives one wave timing for every lead.

Conditions mimic the PTB-XL diagnostic superclasses (Wagner et al. 2020):
  NORM  normal morphology and intervals;
  CD    conduction disturbance: a QRS of 120-170 ms, either right-bundle-branch-block-like
        (slurred terminal rightward-anterior lobe, R' in V1) or left-bundle-branch-block-like
        (no septal q, broad notched leftward-posterior R), with a discordant T;
  STTC  ST depression against the main QRS direction and a flattened or inverted T;
  MI    a pathological Q (wide, deep initial lobe pointing away from an inferior or anterior
        infarct) with ST elevation towards the injured region;
  HYP   QRS voltage scaled by about 2 (`hyp_qrs_scale`; left-ventricular hypertrophy),
        optionally with strain (ST depression and inverted T).

Rhythm: a sinus rate per record with Gaussian RR variability, the QT interval adapted to the
rate with Fridericia's formula (QT = QTc * RR^(1/3)). When a sinus cycle (PR + QT + gaps) does
not fit into the shortest likely RR, the PR interval shortens first, then the QT. Optional
ectopic beats, in the AAMI EC57 classes (N, S, V): premature atrial beats (S: early, normal
QRS, abnormal or absent P, the sinus node reset) and premature ventricular beats (V: early,
wide QRS in another direction, no P, discordant T, full compensatory pause). Beats are
scheduled one after the other so that waves never overlap: every P starts at least
`min_segment_ms` after the previous T ends. An ectopic beat that cannot come at least
`min_prematurity` early under that constraint is generated as a normal beat instead, so every
S or V label is truly premature.

Edges: beats are generated from before the record start to after its end and cut to the
record. Masks mark the in-record part of waves cut by an edge. `r_peaks`, `beat_class` and
`wave_bounds` list only beats whose whole QRS lies inside the record. The R peak of a beat is
the sample of maximum 12-lead energy over its QRS, argmax_t sum_leads ecg_clean[t]^2.

Noise (added to the clean signal, independently per lead): baseline wander (a few sinusoids
below 1 Hz), mains interference (50 or 60 Hz) and EMG (white noise band-limited in the
frequency domain). Setting every noise range to (0, 0) makes `ecg == ecg_clean`. All random
draws for the clean signal precede the noise draws, so the clean signal of a seed does not
depend on the noise configuration.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import numpy as np

from beatssl_jax.ecg.leads import LEAD_INDEX, NUM_LEADS
from beatssl_jax.ecg.vcg import DOWER

CONDITIONS: tuple[str, ...] = ("NORM", "CD", "STTC", "MI", "HYP")
# PTB-XL superdiagnostic class order (METHOD.md section 7).
SUPERCLASSES: tuple[str, ...] = ("CD", "HYP", "MI", "NORM", "STTC")
# AAMI EC57 beat classes produced here: normal, supraventricular ectopic, ventricular ectopic.
BEAT_CLASSES: tuple[str, ...] = ("N", "S", "V")
# Codes of `wave_mask`.
WAVE_CLASSES: tuple[str, ...] = ("background", "P", "QRS", "T")
# Columns of `wave_bounds`; an absent P has p_on == p_off == qrs_on.
WAVE_BOUND_COLUMNS: tuple[str, ...] = ("p_on", "p_off", "qrs_on", "qrs_off", "t_on", "t_off")

_N, _S, _V = 0, 1, 2

# Reference directions of the dipole (Frank X left, Y inferior, Z posterior) before the
# per-record heart-axis rotation. They follow the textbook normal loops (Malmivuo and Plonsey
# 1995, ch. 15): atrial vector left-inferior; septal depolarisation rightward-anterior; main
# ventricular force left-inferior-posterior; terminal forces rightward-superior-posterior;
# T loop close to the QRS direction but more anterior.
_DIR_P = (0.55, 0.8, -0.2)
_DIR_Q = (-0.45, 0.25, -0.85)
_DIR_R = (0.7, 0.55, 0.45)
_DIR_S = (-0.35, -0.6, 0.7)
_DIR_T = (0.6, 0.55, -0.25)
_DIR_P_ECTOPIC = (0.3, -0.85, -0.3)  # low-atrial focus: retrograde, superior P
_DIR_RBBB_TERMINAL = (-0.55, 0.1, -0.83)  # late right-ventricular activation: right, anterior
_DIR_LBBB = (0.75, 0.2, 0.63)  # left-posterior activation without a septal q
_DIR_INFERIOR = (0.05, 1.0, 0.1)
_DIR_ANTERIOR = (0.2, 0.1, -1.0)

Range = tuple[float, float]


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Every knob of the generator. Ranges are (low, high), drawn uniformly per record.

    Amplitudes are dipole magnitudes in mV; the lead amplitudes follow from the Dower
    projection (lead II gain is about 1 along the inferior direction).
    """

    fs: float = 500.0
    duration_s: float = 10.0
    # Class probabilities in CONDITIONS order, used when no condition is requested.
    condition_probs: tuple[float, ...] = (0.4, 0.15, 0.15, 0.15, 0.15)

    # Rhythm.
    heart_rate_bpm: Range = (45.0, 120.0)  # base sinus rate
    rr_std_frac: Range = (0.0, 0.04)  # SD of the sinus RR interval, as a fraction of it
    # Heart axis: rotation about the antero-posterior (Frank Z) axis, i.e. in the frontal
    # plane, positive towards inferior; plus tilts about X and Y within +-tilt_deg.
    axis_rotation_deg: Range = (-30.0, 25.0)
    tilt_deg: float = 15.0
    direction_jitter_deg: float = 10.0  # per-record jitter of each lobe's direction

    # Amplitudes (mV).
    p_amplitude_mv: Range = (0.12, 0.25)
    r_amplitude_mv: Range = (1.0, 2.0)
    q_amplitude_frac: Range = (0.05, 0.2)  # of the R amplitude
    s_amplitude_frac: Range = (0.2, 0.5)
    t_amplitude_mv: Range = (0.25, 0.5)
    beat_amplitude_jitter: float = 0.05  # SD of a per-beat scale factor around 1

    # Durations (ms).
    p_duration_ms: Range = (80.0, 110.0)
    # P onset to QRS onset; shortened (then the QT) when a sinus cycle would not fit the RR.
    pr_interval_ms: Range = (130.0, 200.0)
    qrs_duration_ms: Range = (80.0, 105.0)  # NORM, STTC, MI
    qrs_duration_hyp_extra_ms: Range = (0.0, 10.0)  # HYP: added to the normal range
    qrs_duration_cd_ms: Range = (125.0, 165.0)
    qtc_ms: Range = (370.0, 430.0)  # Fridericia-corrected QT
    t_fraction: Range = (0.55, 0.75)  # share of the QRS-offset-to-T-offset span taken by T
    t_peak_position: Range = (0.55, 0.7)  # T apex as a fraction of the T duration
    min_segment_ms: float = 10.0  # minimum gap between waves (PR segment, T to next P)

    # Conditions.
    cd_rbbb_prob: float = 0.5  # CD: right-bundle-branch-like, else left-bundle-branch-like
    cd_terminal_frac: Range = (0.5, 0.8)  # RBBB terminal lobe amplitude, fraction of R
    mi_q_amplitude_frac: Range = (0.35, 0.7)  # of the (unreduced) R amplitude
    mi_r_scale: Range = (0.5, 0.8)
    mi_anterior_prob: float = 0.5  # MI: anterior, else inferior
    st_elevation_mv: Range = (0.1, 0.3)
    st_depression_mv: Range = (0.05, 0.2)
    sttc_t_scale: Range = (-0.8, 0.3)  # T amplitude factor; negative inverts the T
    hyp_qrs_scale: Range = (1.8, 2.6)
    hyp_strain_prob: float = 0.5
    hyp_strain_t_scale: Range = (-0.8, -0.3)

    # Ectopic beats (probability per beat).
    pac_prob: float = 0.02
    pvc_prob: float = 0.02
    pac_prematurity: Range = (0.6, 0.8)  # coupling interval as a fraction of the sinus RR
    pvc_prematurity: Range = (0.55, 0.8)
    min_prematurity: float = 0.1  # an ectopic beat comes at least this fraction of RR early
    pac_pr_interval_ms: Range = (110.0, 160.0)
    pac_p_absent_prob: float = 0.3
    pvc_qrs_duration_ms: Range = (130.0, 180.0)
    pvc_amplitude_frac: Range = (1.2, 2.0)  # of the R amplitude
    pvc_min_angle_deg: float = 60.0  # least angle between the PVC and the normal R direction

    # Noise: the level of each source is drawn per record from its range; (0, 0) disables it.
    baseline_wander_mv: Range = (0.0, 0.15)
    baseline_wander_hz: Range = (0.05, 0.5)
    mains_mv: Range = (0.0, 0.02)
    mains_hz: tuple[float, ...] = (50.0, 60.0)  # one is chosen per record
    emg_mv: Range = (0.0, 0.02)  # RMS per lead
    emg_band_hz: Range = (20.0, 150.0)

    def __post_init__(self) -> None:
        where = "SyntheticConfig"
        if self.fs <= 0 or self.duration_s <= 0:
            raise ValueError(f"{where}: fs and duration_s must be positive")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type == "Range":
                if len(value) != 2 or value[0] > value[1]:
                    raise ValueError(f"{where}.{field.name}: expected (low, high), got {value}")
        if len(self.condition_probs) != len(CONDITIONS):
            raise ValueError(
                f"{where}.condition_probs: expected {len(CONDITIONS)} values "
                f"({', '.join(CONDITIONS)}), got {len(self.condition_probs)}"
            )
        if min(self.condition_probs) < 0 or sum(self.condition_probs) <= 0:
            raise ValueError(f"{where}.condition_probs: must be >= 0 with a positive sum")
        if self.heart_rate_bpm[0] <= 0:
            raise ValueError(f"{where}.heart_rate_bpm: must be positive, got {self.heart_rate_bpm}")
        if self.pac_prob < 0 or self.pvc_prob < 0 or self.pac_prob + self.pvc_prob > 1:
            raise ValueError(f"{where}: pac_prob + pvc_prob must lie in [0, 1]")
        if self.emg_mv[1] > 0 and self.emg_band_hz[1] > self.fs / 2:
            raise ValueError(
                f"{where}.emg_band_hz: upper edge {self.emg_band_hz[1]} Hz is above Nyquist "
                f"({self.fs / 2} Hz)"
            )
        if self.mains_mv[1] > 0 and not self.mains_hz:
            raise ValueError(f"{where}.mains_hz: needs at least one frequency")


@dataclasses.dataclass
class SyntheticRecord:
    """One generated record and its exact ground truth.

    Sample positions index the record (0 .. T-1). Intervals are those of the record's normal
    (N) beats, which share one template: `pr_ms` from P onset to QRS onset, `qrs_ms` the QRS
    mask width, `qt_ms` from QRS onset to T offset. `qrs_axis_deg` and `t_axis_deg` are the
    hexaxial frontal axes of the net area of the normal beat's QRS (respectively T) lobes,
    atan2(2 A_aVF / sqrt(3), A_I) in degrees, A the area in the noise-free lead.
    """

    ecg: np.ndarray  # (T, 12) float32, mV, with noise
    ecg_clean: np.ndarray  # (T, 12) float32, mV, noise-free
    vcg_clean: np.ndarray  # (T, 3) float32, the dipole, Frank X, Y, Z
    fs: float
    r_peaks: np.ndarray  # (n,) int64, sorted
    beat_class: np.ndarray  # (n,) int8, codes into BEAT_CLASSES, aligned with r_peaks
    wave_bounds: np.ndarray  # (n, 6) int64, WAVE_BOUND_COLUMNS, half-open [on, off)
    wave_mask: np.ndarray  # (T, 12) int8, codes into WAVE_CLASSES
    condition: int  # index into CONDITIONS
    pattern: str  # condition sub-type, e.g. "CD:RBBB", "MI:inferior", "HYP:strain"
    superdiagnostic: np.ndarray  # (5,) float32 multi-hot in SUPERCLASSES order
    heart_rate_bpm: float  # 60 / mean RR of r_peaks (nan with fewer than two)
    pr_ms: float
    qrs_ms: float
    qt_ms: float
    qrs_axis_deg: float
    t_axis_deg: float
    seed: int

    @property
    def condition_name(self) -> str:
        return CONDITIONS[self.condition]


@dataclasses.dataclass
class _Template:
    """One beat type, in samples relative to its QRS onset."""

    lobes: np.ndarray  # (L, 4): onset, first peak, second peak, offset
    vectors: np.ndarray  # (L, 3) dipole of each lobe at its peak, mV
    pr: int  # P onset before QRS onset; 0 when there is no P
    p_duration: int  # 0 when there is no P
    qrs_duration: int
    t_on: int
    qt: int  # T offset


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def _uniform(rng: np.random.Generator, r: Range) -> float:
    return float(rng.uniform(r[0], r[1]))


def _jitter(rng: np.random.Generator, v: np.ndarray, max_deg: float) -> np.ndarray:
    """Turn v by an angle drawn in [0, max_deg] towards a random perpendicular direction."""
    norm = np.linalg.norm(v)
    u = v / norm
    w = rng.standard_normal(3)
    w -= (w @ u) * u
    w /= np.linalg.norm(w)
    a = math.radians(rng.uniform(0.0, max_deg))
    return norm * (math.cos(a) * u + math.sin(a) * w)


def _rotation(axis_deg: float, tilt_x_deg: float, tilt_y_deg: float) -> np.ndarray:
    """Rz(axis) @ Rx(tilt_x) @ Ry(tilt_y); Rz turns +X towards +Y (inferior)."""
    c, s = math.cos(math.radians(axis_deg)), math.sin(math.radians(axis_deg))
    rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    c, s = math.cos(math.radians(tilt_x_deg)), math.sin(math.radians(tilt_x_deg))
    rx = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    c, s = math.cos(math.radians(tilt_y_deg)), math.sin(math.radians(tilt_y_deg))
    ry = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    return rz @ rx @ ry


def _bump(on: float, peak: float, off: float) -> tuple[float, float, float, float]:
    return (on, peak, peak, off)


def _qrs_lobes(duration: int, spec) -> tuple[list, list]:
    """Lobes from (on_frac, peak_frac, off_frac, vector) fractions of the QRS duration."""
    lobes = [_bump(a * duration, p * duration, b * duration) for a, p, b, _ in spec]
    return lobes, [v for *_, v in spec]


def _hexaxial_deg(net_vector: np.ndarray) -> float:
    """Frontal axis from leads I and aVF of the projected vector: atan2(2 aVF / sqrt3, I)."""
    lead_i = float(DOWER[LEAD_INDEX["I"]] @ net_vector)
    lead_avf = float(DOWER[LEAD_INDEX["aVF"]] @ net_vector)
    return math.degrees(math.atan2(2.0 * lead_avf / math.sqrt(3.0), lead_i))


def _lobe_area(lobe) -> float:
    """Area of one lobe of unit height: each raised-cosine half has half its width's area."""
    on, p1, p2, off = lobe
    return 0.5 * (p1 - on) + (p2 - p1) + 0.5 * (off - p2)


def _build_templates(rng: np.random.Generator, cfg: SyntheticConfig, condition: int):
    """Draw one record's morphology: the N, S and V beat templates, the rate and the pattern.

    Returns (templates, rr0 in samples, rr SD fraction, pattern, qrs_axis_deg, t_axis_deg).
    """
    fs = cfg.fs
    ms = fs / 1000.0  # samples per millisecond
    gap = max(1, round(cfg.min_segment_ms * ms))
    rate = _uniform(rng, cfg.heart_rate_bpm)
    rr_sd = _uniform(rng, cfg.rr_std_frac)
    rr0 = 60.0 / rate * fs
    rot = _rotation(
        _uniform(rng, cfg.axis_rotation_deg),
        rng.uniform(-cfg.tilt_deg, cfg.tilt_deg),
        rng.uniform(-cfg.tilt_deg, cfg.tilt_deg),
    )
    jit = cfg.direction_jitter_deg

    def direction(base) -> np.ndarray:
        return _jitter(rng, rot @ _unit(base), jit)

    # Durations shared by every record (the condition may override the QRS).
    p_dur = max(2, round(_uniform(rng, cfg.p_duration_ms) * ms))
    pr = max(p_dur + gap, round(_uniform(rng, cfg.pr_interval_ms) * ms))
    qrs_norm = _uniform(rng, cfg.qrs_duration_ms)
    qrs_cd = _uniform(rng, cfg.qrs_duration_cd_ms)
    qrs_extra = _uniform(rng, cfg.qrs_duration_hyp_extra_ms)
    qtc = _uniform(rng, cfg.qtc_ms)
    t_frac = _uniform(rng, cfg.t_fraction)
    t_peak = _uniform(rng, cfg.t_peak_position)

    # Amplitudes and directions of the normal loops.
    p_vec = _uniform(rng, cfg.p_amplitude_mv) * direction(_DIR_P)
    r_amp = _uniform(rng, cfg.r_amplitude_mv)
    q_vec = r_amp * _uniform(rng, cfg.q_amplitude_frac) * direction(_DIR_Q)
    r_vec = r_amp * direction(_DIR_R)
    s_vec = r_amp * _uniform(rng, cfg.s_amplitude_frac) * direction(_DIR_S)
    t_vec = _uniform(rng, cfg.t_amplitude_mv) * direction(_DIR_T)
    st_vec = np.zeros(3)

    # Condition-specific draws are always made, in a fixed order, so that a seed gives the
    # same rate and normal morphology whichever condition is requested.
    cd_rbbb = rng.random() < cfg.cd_rbbb_prob
    cd_term = r_amp * _uniform(rng, cfg.cd_terminal_frac) * direction(_DIR_RBBB_TERMINAL)
    cd_lbbb = r_amp * direction(_DIR_LBBB)
    cd_lbbb2 = _jitter(rng, cd_lbbb, 25.0) * rng.uniform(0.8, 1.0)
    cd_t_scale = rng.uniform(0.8, 1.2)
    mi_anterior = rng.random() < cfg.mi_anterior_prob
    mi_q = r_amp * _uniform(rng, cfg.mi_q_amplitude_frac)
    mi_r = _uniform(rng, cfg.mi_r_scale)
    st_up = _uniform(rng, cfg.st_elevation_mv)
    st_down = _uniform(rng, cfg.st_depression_mv)
    sttc_t = _uniform(rng, cfg.sttc_t_scale)
    hyp_scale = _uniform(rng, cfg.hyp_qrs_scale)
    hyp_strain = rng.random() < cfg.hyp_strain_prob
    hyp_t = _uniform(rng, cfg.hyp_strain_t_scale)
    injury_inferior = direction(_DIR_INFERIOR)
    injury_anterior = direction(_DIR_ANTERIOR)

    name = CONDITIONS[condition]
    pattern = name
    qrs_ms = qrs_norm
    spec = [(0.0, 0.12, 0.3, q_vec), (0.15, 0.42, 0.7, r_vec), (0.5, 0.75, 1.0, s_vec)]
    if name == "CD":
        qrs_ms = qrs_cd
        if cd_rbbb:
            pattern = "CD:RBBB"
            spec = [
                (0.0, 0.08, 0.2, q_vec),
                (0.1, 0.28, 0.48, r_vec),
                (0.33, 0.48, 0.63, s_vec),
                (0.45, 0.72, 1.0, cd_term),
            ]
            t_vec = cd_t_scale * np.linalg.norm(t_vec) * _unit(_unit(t_vec) - 0.9 * _unit(cd_term))
        else:
            pattern = "CD:LBBB"
            spec = [(0.0, 0.3, 0.6, cd_lbbb), (0.35, 0.7, 1.0, cd_lbbb2)]
            t_vec = cd_t_scale * np.linalg.norm(t_vec) * _unit(0.2 * _unit(t_vec) - _unit(cd_lbbb))
    elif name == "STTC":
        st_vec = -st_down * _unit(r_vec)
        t_vec = sttc_t * t_vec
    elif name == "MI":
        injury = injury_anterior if mi_anterior else injury_inferior
        pattern = "MI:anterior" if mi_anterior else "MI:inferior"
        spec = [
            (0.0, 0.25, 0.5, -mi_q * _unit(injury)),
            (0.3, 0.55, 0.8, mi_r * r_vec),
            (0.62, 0.82, 1.0, s_vec),
        ]
        st_vec = st_up * injury
        t_vec = np.linalg.norm(t_vec) * _unit(_unit(t_vec) + _unit(injury))
    elif name == "HYP":
        qrs_ms = qrs_norm + qrs_extra
        spec = [(a, p, b, hyp_scale * v) for a, p, b, v in spec]
        if hyp_strain:
            pattern = "HYP:strain"
            st_vec = -st_down * _unit(r_vec)
            t_vec = hyp_t * t_vec

    # Normal beat: QRS, then the QT interval adapted to the rate (Fridericia), a wide QRS
    # lengthening the QT by its excess over 100 ms.
    qrs = max(3, round(qrs_ms * ms))
    qt_ms = qtc * (rr0 / fs) ** (1.0 / 3.0) + max(0.0, qrs_ms - 100.0)
    qt = max(qrs + 2 * gap + 2, round(qt_ms * ms))
    # Fit a sinus cycle into the shortest likely RR (3 SD below the mean): the PR interval
    # shortens first (down to P duration + gap), then the QT. Only when even that is not
    # enough does the non-overlap rule in `_schedule` slow the rhythm below the drawn rate.
    rr_short = math.floor(rr0 * max(0.5, 1.0 - 3.0 * rr_sd))
    pr = max(p_dur + gap, min(pr, rr_short - qt - gap))
    qt = max(qrs + 2 * gap + 2, min(qt, rr_short - pr - gap))

    def repolarisation(q_dur: int, qt_len: int, vec: np.ndarray, st: np.ndarray):
        t_dur = max(2, round(t_frac * (qt_len - q_dur - gap)))
        t_on = qt_len - t_dur
        t_apex = t_on + t_peak * t_dur
        lobes = [_bump(t_on, t_apex, qt_len)]
        vectors = [vec]
        if np.any(st):
            lobes.append((0.6 * q_dur, q_dur, t_apex, qt_len))
            vectors.append(st)
        return lobes, vectors, t_on

    def template(p_vector, pr_len, q_dur, qrs_spec, qt_len, t_vector, st) -> _Template:
        lobes, vectors = _qrs_lobes(q_dur, qrs_spec)
        if p_vector is not None:
            lobes.append(_bump(-pr_len, -pr_len + 0.5 * p_dur, -pr_len + p_dur))
            vectors.append(p_vector)
        rep_lobes, rep_vectors, t_on = repolarisation(q_dur, qt_len, t_vector, st)
        return _Template(
            lobes=np.array(lobes + rep_lobes, dtype=np.float64),
            vectors=np.array(vectors + rep_vectors, dtype=np.float64),
            pr=pr_len if p_vector is not None else 0,
            p_duration=p_dur if p_vector is not None else 0,
            qrs_duration=q_dur,
            t_on=t_on,
            qt=qt_len,
        )

    normal = template(p_vec, pr, qrs, spec, qt, t_vec, st_vec)

    # Premature atrial beat: the same ventricular template, an ectopic or absent P.
    pac_p_absent = rng.random() < cfg.pac_p_absent_prob
    pac_p = rng.uniform(0.6, 1.0) * np.linalg.norm(p_vec) * direction(_DIR_P_ECTOPIC)
    pac_pr = max(p_dur + gap, round(_uniform(rng, cfg.pac_pr_interval_ms) * ms))
    atrial = template(None if pac_p_absent else pac_p, pac_pr, qrs, spec, qt, t_vec, st_vec)

    # Premature ventricular beat: wide QRS along a direction far from the normal R, no P,
    # T opposite to the main deflection.
    pvc_ms = _uniform(rng, cfg.pvc_qrs_duration_ms)
    pvc_amp = r_amp * _uniform(rng, cfg.pvc_amplitude_frac)
    cos_max = math.cos(math.radians(cfg.pvc_min_angle_deg))
    pvc_dir = _unit(rng.standard_normal(3))
    for _ in range(64):
        if pvc_dir @ _unit(r_vec) <= cos_max:
            break
        pvc_dir = _unit(rng.standard_normal(3))
    pvc_second = _jitter(rng, -pvc_dir, 60.0) * rng.uniform(0.2, 0.5)
    pvc_t = rng.uniform(0.25, 0.45)
    pvc = max(3, round(pvc_ms * ms))
    pvc_qt = max(pvc + 2 * gap + 2, qt + pvc - qrs)
    pvc_spec = [(0.0, 0.4, 0.75, pvc_amp * pvc_dir), (0.45, 0.75, 1.0, pvc_amp * pvc_second)]
    ventricular = template(None, 0, pvc, pvc_spec, pvc_qt, -pvc_t * pvc_amp * pvc_dir, np.zeros(3))

    qrs_net = sum(v * _lobe_area(lobe) for lobe, v in zip(*_qrs_lobes(qrs, spec), strict=True))
    t_net = t_vec * _lobe_area(normal.lobes[len(spec) + 1])
    axes = (_hexaxial_deg(np.asarray(qrs_net)), _hexaxial_deg(t_net))
    return (normal, atrial, ventricular), rr0, rr_sd, pattern, axes


def _schedule(
    rng: np.random.Generator,
    cfg: SyntheticConfig,
    templates: tuple[_Template, _Template, _Template],
    rr0: float,
    rr_sd: float,
    num_samples: int,
) -> tuple[np.ndarray, np.ndarray]:
    """QRS onsets (samples, may fall outside the record) and beat kinds, in time order.

    The first beat is a normal beat whose P starts before sample 0, so nothing earlier can
    reach into the record; beats are added until one starts after the record's end.
    """
    gap = max(1, round(cfg.min_segment_ms * cfg.fs / 1000.0))
    normal = templates[_N]
    onset = -normal.pr - round(rng.uniform(0.0, rr0))
    onsets, kinds = [onset], [_N]
    sinus_ref = float(onset)
    last_end = onset + normal.qt
    while True:
        rr = rr0 * min(1.5, max(0.5, 1.0 + rr_sd * rng.standard_normal()))
        u = rng.random()
        kind = _V if u < cfg.pvc_prob else _S if u < cfg.pvc_prob + cfg.pac_prob else _N
        prem_range = cfg.pvc_prematurity if kind == _V else cfg.pac_prematurity
        prem = _uniform(rng, prem_range)
        if kind != _N:
            earliest = last_end + gap + templates[kind].pr
            at = max(onsets[-1] + prem * rr, earliest)
            if at > onsets[-1] + (1.0 - cfg.min_prematurity) * rr:
                kind = _N  # no room for a premature beat without overlapping waves
        if kind == _N:
            at = max(sinus_ref + rr, last_end + gap + normal.pr)
        onset = round(at)
        if kind == _V:
            sinus_ref += rr  # the sinus beat it pre-empted: full compensatory pause
        else:
            sinus_ref = float(onset)
        if onset - templates[kind].pr >= num_samples:
            break
        onsets.append(onset)
        kinds.append(kind)
        last_end = onset + templates[kind].qt
    return np.array(onsets, dtype=np.int64), np.array(kinds, dtype=np.int8)


def _render(lobes: np.ndarray, vectors: np.ndarray, num_samples: int) -> np.ndarray:
    """Sum of lobes on the sample grid 0 .. num_samples-1 -> (num_samples, 3) dipole."""
    on, p1, p2, off = lobes.T
    start = np.clip(np.ceil(on), 0, num_samples).astype(np.int64)
    stop = np.clip(np.floor(off) + 1, 0, num_samples).astype(np.int64)
    counts = np.maximum(stop - start, 0)
    which = np.repeat(np.arange(len(on)), counts)
    first = np.cumsum(counts) - counts
    t_idx = np.repeat(start - first, counts) + np.arange(counts.sum())
    t = t_idx.astype(np.float64)
    a, b, c, d = on[which], p1[which], p2[which], off[which]
    rise = 0.5 - 0.5 * np.cos(np.pi * np.clip((t - a) / np.maximum(b - a, 1e-9), 0.0, 1.0))
    fall = 0.5 + 0.5 * np.cos(np.pi * np.clip((t - c) / np.maximum(d - c, 1e-9), 0.0, 1.0))
    shape = np.where(t < b, rise, np.where(t <= c, 1.0, fall))
    w = shape[:, None] * vectors[which]
    return np.stack(
        [np.bincount(t_idx, weights=w[:, k], minlength=num_samples) for k in range(3)], axis=1
    )


def _noise(rng: np.random.Generator, cfg: SyntheticConfig, num_samples: int) -> np.ndarray | None:
    """Baseline wander + mains + EMG, (T, 12) in mV, or None when every level is zero."""
    fs = cfg.fs
    t = np.arange(num_samples) / fs
    total = np.zeros((num_samples, NUM_LEADS))
    used = False
    # A sinusoid per lead with its own phase, written as sin(wt) cos(ph) + cos(wt) sin(ph) so
    # that only the (T,) carriers need evaluating.
    level = _uniform(rng, cfg.baseline_wander_mv)
    if level > 0:
        used = True
        freqs = rng.uniform(*cfg.baseline_wander_hz, size=3)
        phase = rng.uniform(0.0, 2 * np.pi, size=(3, NUM_LEADS))
        amp = rng.uniform(0.3, 1.0, size=(3, NUM_LEADS)) * level / math.sqrt(3.0)
        arg = 2 * np.pi * freqs[:, None] * t[None, :]
        total += np.sin(arg).T @ (amp * np.cos(phase)) + np.cos(arg).T @ (amp * np.sin(phase))
    level = _uniform(rng, cfg.mains_mv)
    if level > 0:
        used = True
        freq = cfg.mains_hz[rng.integers(len(cfg.mains_hz))]
        phase = rng.uniform(0.0, 2 * np.pi, size=NUM_LEADS)
        amp = level * rng.uniform(0.5, 1.0, size=NUM_LEADS)
        arg = 2 * np.pi * freq * t
        total += np.outer(np.sin(arg), amp * np.cos(phase))
        total += np.outer(np.cos(arg), amp * np.sin(phase))
    level = _uniform(rng, cfg.emg_mv)
    if level > 0:
        used = True
        # Lead-major layout so the transforms run over contiguous memory.
        spectrum = np.fft.rfft(rng.standard_normal((NUM_LEADS, num_samples)), axis=1)
        f = np.fft.rfftfreq(num_samples, 1.0 / fs)
        spectrum[:, (f < cfg.emg_band_hz[0]) | (f > cfg.emg_band_hz[1])] = 0.0
        emg = np.fft.irfft(spectrum, n=num_samples, axis=1)
        emg *= level / np.maximum(np.sqrt(np.mean(emg**2, axis=1, keepdims=True)), 1e-12)
        total += emg.T
    return total if used else None


def generate_record(
    seed: int,
    config: SyntheticConfig = SyntheticConfig(),  # frozen, hence a safe default
    condition: int | None = None,
) -> SyntheticRecord:
    """Generate one record, deterministically from `seed` (numpy default_rng).

    `condition` indexes CONDITIONS; None draws it from `config.condition_probs`. The draw is
    made either way, so a seed gives the same rhythm and normal morphology under any forced
    condition.
    """
    cfg = config
    rng = np.random.default_rng(seed)
    probs = np.asarray(cfg.condition_probs, dtype=np.float64)
    drawn = int(rng.choice(len(CONDITIONS), p=probs / probs.sum()))
    if condition is None:
        condition = drawn
    elif not 0 <= int(condition) < len(CONDITIONS):
        raise ValueError(
            f"generate_record(seed={seed}): condition must index {CONDITIONS}, got {condition}"
        )
    condition = int(condition)
    num_samples = round(cfg.duration_s * cfg.fs)

    templates, rr0, rr_sd, pattern, (qrs_axis, t_axis) = _build_templates(rng, cfg, condition)
    onsets, kinds = _schedule(rng, cfg, templates, rr0, rr_sd, num_samples)
    scales = 1.0 + cfg.beat_amplitude_jitter * rng.standard_normal(len(onsets))
    scales = np.clip(scales, 0.5, 1.5)

    lobes, vectors = [], []
    for kind in range(len(BEAT_CLASSES)):
        sel = kinds == kind
        if not np.any(sel):
            continue
        tmpl = templates[kind]
        lobes.append((onsets[sel, None, None] + tmpl.lobes[None]).reshape(-1, 4))
        vectors.append((scales[sel, None, None] * tmpl.vectors[None]).reshape(-1, 3))
    vcg = _render(np.concatenate(lobes), np.concatenate(vectors), num_samples)
    ecg_clean = (vcg @ DOWER.T.astype(np.float64)).astype(np.float32)

    # Wave boundaries of every generated beat, half-open [on, off) in record samples.
    pr = np.array([templates[k].pr for k in kinds], dtype=np.int64)
    p_len = np.array([templates[k].p_duration for k in kinds], dtype=np.int64)
    q_len = np.array([templates[k].qrs_duration for k in kinds], dtype=np.int64)
    t_on = np.array([templates[k].t_on for k in kinds], dtype=np.int64)
    qt = np.array([templates[k].qt for k in kinds], dtype=np.int64)
    p_on = np.where(p_len > 0, onsets - pr, onsets)
    bounds = np.stack(
        [p_on, p_on + p_len, onsets, onsets + q_len, onsets + t_on, onsets + qt], axis=1
    )
    mask_1d = np.zeros(num_samples, dtype=np.int8)
    for code, (lo, hi) in ((1, (0, 1)), (2, (2, 3)), (3, (4, 5))):
        for a, b in zip(bounds[:, lo], bounds[:, hi], strict=True):
            mask_1d[max(a, 0) : max(min(b, num_samples), 0)] = code
    wave_mask = np.repeat(mask_1d[:, None], NUM_LEADS, axis=1)

    # Beats reported: the whole QRS inside the record. R = argmax of the 12-lead energy.
    inside = (bounds[:, 2] >= 0) & (bounds[:, 3] <= num_samples)
    energy = np.sum(ecg_clean.astype(np.float64) ** 2, axis=1)
    r_peaks = np.array(
        [a + int(np.argmax(energy[a:b])) for a, b in bounds[inside][:, 2:4]], dtype=np.int64
    )
    rr_s = np.diff(r_peaks) / cfg.fs
    heart_rate = float(60.0 / rr_s.mean()) if len(rr_s) else float("nan")

    noise = _noise(rng, cfg, num_samples)
    ecg = ecg_clean if noise is None else (ecg_clean + noise).astype(np.float32)
    superdiagnostic = np.zeros(len(SUPERCLASSES), dtype=np.float32)
    superdiagnostic[SUPERCLASSES.index(CONDITIONS[condition])] = 1.0
    normal = templates[_N]
    ms_per_sample = 1000.0 / cfg.fs
    return SyntheticRecord(
        ecg=ecg if noise is not None else ecg_clean.copy(),
        ecg_clean=ecg_clean,
        vcg_clean=vcg.astype(np.float32),
        fs=float(cfg.fs),
        r_peaks=r_peaks,
        beat_class=kinds[inside].astype(np.int8),
        wave_bounds=bounds[inside],
        wave_mask=wave_mask,
        condition=condition,
        pattern=pattern,
        superdiagnostic=superdiagnostic,
        heart_rate_bpm=heart_rate,
        pr_ms=normal.pr * ms_per_sample,
        qrs_ms=normal.qrs_duration * ms_per_sample,
        qt_ms=normal.qt * ms_per_sample,
        qrs_axis_deg=qrs_axis,
        t_axis_deg=t_axis,
        seed=int(seed),
    )


def record_seed(seed: int, index: int) -> int:
    """Seed of record `index` of the dataset drawn with `seed` (independent of its size)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint32)[0])


def generate_dataset(
    num_records: int,
    seed: int = 0,
    config: SyntheticConfig = SyntheticConfig(),  # frozen, hence a safe default
) -> Iterator[SyntheticRecord]:
    """Yield `num_records` records; record i uses `record_seed(seed, i)`."""
    for i in range(num_records):
        yield generate_record(record_seed(seed, i), config)
