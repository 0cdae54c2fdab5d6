"""Units, resampling, zero-phase band-pass filtering and one-scale-per-record normalisation.

Choices are METHOD.md section 2 [ours]: a zero-phase Butterworth band-pass (default
0.5-40 Hz, 4th order), and normalisation by one scale per record shared by all twelve
leads, because per-lead z-scoring breaks the linear relations between leads (Einthoven,
Goldberger, Dower) that the VCG projection relies on.

Units: `mV`, `uV` (also spelt `µV`, `μV`), `V`, and `NU`. `NU` marks signals that were
already normalised upstream (see ../shared/data/README.md): they carry no physical scale, so
they are kept as they are and flagged rather than converted.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import numpy as np
from scipy import signal as sp_signal

from beatssl_jax.ecg.errors import RecordError

MILLIVOLT = "mV"
NORMALISED_UNITS = "NU"
# Canonical unit -> factor that converts it to mV (None: no physical scale).
_TO_MV: dict[str, float | None] = {"mV": 1.0, "uV": 1e-3, "V": 1e3, "NU": None}
_UNIT_ALIASES: dict[str, str] = {
    "mv": "mV", "millivolt": "mV", "millivolts": "mV",
    "uv": "uV", "µv": "uV", "μv": "uV", "microvolt": "uV", "microvolts": "uV",
    "v": "V", "volt": "V", "volts": "V",
    "nu": "NU",
}  # fmt: skip
NORMALIZATION_METHODS = ("std", "mad", "none")


def canonical_unit(unit: str, record: str | None = None) -> str:
    """`mv` -> `mV`, `µV` -> `uV`, `nu` -> `NU`; RecordError for anything else."""
    key = str(unit).strip().lower()
    if key not in _UNIT_ALIASES:
        raise RecordError(
            record, f"unknown signal units {unit!r}; expected one of mV, uV (µV), V or NU"
        )
    return _UNIT_ALIASES[key]


def to_millivolts(
    x: np.ndarray, units: str | list[str] | tuple[str, ...], record: str | None = None
) -> tuple[np.ndarray, str]:
    """Convert a (T, L) signal with one unit, or one unit per lead, to mV.

    Returns the converted signal and its unit: `mV`, or `NU` when the record is in
    normalised units (returned unchanged). A record that mixes `NU` with physical units is
    an error, since no common scale exists.
    """
    x = np.asarray(x, dtype=np.float32)
    per_lead = [units] * x.shape[-1] if isinstance(units, str) else list(units)
    if len(per_lead) != x.shape[-1]:
        raise RecordError(record, f"{len(per_lead)} unit entries for {x.shape[-1]} leads")
    canon = [canonical_unit(u, record) for u in per_lead]
    if NORMALISED_UNITS in canon:
        if any(u != NORMALISED_UNITS for u in canon):
            raise RecordError(
                record, f"mixes normalised (NU) and physical units across leads: {canon}"
            )
        return x, NORMALISED_UNITS
    factors = np.array([_TO_MV[u] for u in canon], dtype=np.float32)
    return x * factors, MILLIVOLT


def resample(x: np.ndarray, fs_in: float, fs_out: float, axis: int = 0) -> np.ndarray:
    """Polyphase resampling (scipy `resample_poly`) from fs_in to fs_out along `axis`.

    The up/down ratio is the exact rational fs_out / fs_in (rates given to 1e-6 Hz).
    """
    if fs_in <= 0 or fs_out <= 0:
        raise ValueError(f"sampling rates must be positive, got {fs_in} -> {fs_out}")
    ratio = Fraction(round(fs_out * 1e6), round(fs_in * 1e6))
    if ratio == 1:
        return np.asarray(x)
    y = sp_signal.resample_poly(x, ratio.numerator, ratio.denominator, axis=axis)
    return y.astype(np.asarray(x).dtype, copy=False)


def resampled_length(num_samples: int, fs_in: float, fs_out: float) -> int:
    """Number of samples `resample` returns for a signal of `num_samples` samples."""
    ratio = Fraction(round(fs_out * 1e6), round(fs_in * 1e6))
    return -(-num_samples * ratio.numerator // ratio.denominator)


# Highest cut-off `bandpass(..., cap_high=True)` keeps, as a fraction of the sampling rate.
MAX_CUTOFF_FRACTION_OF_FS = 0.45


def bandpass(
    x: np.ndarray,
    fs: float,
    low_hz: float = 0.5,
    high_hz: float = 40.0,
    order: int = 4,
    axis: int = 0,
    cap_high: bool = False,
) -> np.ndarray:
    """Zero-phase Butterworth band-pass (second-order sections, forward and backward).

    `high_hz` must lie below Nyquist. With `cap_high`, it is first lowered to at most
    `MAX_CUTOFF_FRACTION_OF_FS` x fs, so that a fixed cut-off (40 Hz) stays valid for records
    sampled slowly (100 Hz has its Nyquist at 50 Hz, 50 Hz at 25 Hz). A non-positive
    `low_hz` makes it a low-pass.
    """
    nyquist = fs / 2.0
    if cap_high:
        high_hz = min(high_hz, MAX_CUTOFF_FRACTION_OF_FS * fs)
    if not 0 < high_hz < nyquist:
        raise ValueError(f"high cut-off {high_hz} Hz must lie in (0, {nyquist}) for fs={fs}")
    if low_hz > 0:
        if low_hz >= high_hz:
            raise ValueError(f"low cut-off {low_hz} Hz must be below high cut-off {high_hz}")
        sos = sp_signal.butter(order, [low_hz, high_hz], btype="bandpass", fs=fs, output="sos")
    else:
        sos = sp_signal.butter(order, high_hz, btype="lowpass", fs=fs, output="sos")
    y = sp_signal.sosfiltfilt(sos, x, axis=axis)
    return y.astype(np.asarray(x).dtype, copy=False)


def record_scale(x: np.ndarray, method: str = "std") -> float:
    """One scale for the whole (T, 12) record.

    `std`: standard deviation over all samples of all leads (after removing each lead's
    mean); `mad`: 1.4826 x median absolute deviation over all samples, robust to artefacts;
    `none`: 1.
    """
    if method not in NORMALIZATION_METHODS:
        raise ValueError(f"normalization must be one of {NORMALIZATION_METHODS}, got {method!r}")
    if method == "none":
        return 1.0
    centred = np.asarray(x, dtype=np.float64) - np.mean(x, axis=0, keepdims=True)
    if method == "std":
        scale = float(np.std(centred))
    else:
        scale = 1.4826 * float(np.median(np.abs(centred - np.median(centred))))
    return scale


def normalize_record(
    x: np.ndarray, method: str = "std", record: str | None = None
) -> tuple[np.ndarray, float]:
    """Divide the record by one scale shared by all leads; returns (x / scale, scale)."""
    scale = record_scale(x, method)
    if not np.isfinite(scale) or scale <= 0:
        raise RecordError(record, f"cannot normalise a flat or non-finite signal (scale={scale})")
    return (np.asarray(x) / scale).astype(np.float32), scale


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """The preprocessing a record gets before it enters a dataset (all fields are knobs)."""

    fs: float = 500.0
    bandpass_low_hz: float = 0.5
    bandpass_high_hz: float = 40.0
    bandpass_order: int = 4
    apply_bandpass: bool = True
    normalization: str = "none"


def preprocess(
    x: np.ndarray,
    fs: float,
    config: PreprocessConfig = PreprocessConfig(),
    record: str | None = None,
) -> np.ndarray:
    """Resample to `config.fs`, band-pass, then normalise one scale per record.

    `x` is (T, 12), canonical order, already in mV or NU. Returns float32 (T', 12). The
    high cut-off is capped (`bandpass(..., cap_high=True)`), so a low target rate stays valid.
    """
    x = np.asarray(x, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        raise RecordError(record, "signal contains NaN or infinite samples")
    y = resample(x, fs, config.fs, axis=0)
    if config.apply_bandpass:
        y = bandpass(
            y, config.fs, config.bandpass_low_hz, config.bandpass_high_hz, config.bandpass_order,
            cap_high=True,
        )  # fmt: skip
    y, _ = normalize_record(y, config.normalization, record)
    return y
