"""Reading a WFDB record into a validated (T, 12) array in the canonical lead order."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import wfdb

from beatssl_jax.ecg.errors import RecordError
from beatssl_jax.ecg.leads import LEADS, NUM_LEADS, limb_lead_inconsistency, to_canonical
from beatssl_jax.ecg.preprocess import to_millivolts


@dataclasses.dataclass(frozen=True)
class Record:
    """One 12-lead recording: `signal` (T, 12) float32 in canonical order, mV or NU.

    `limb_lead_inconsistency` is the relative violation of Einthoven's and Goldberger's
    relations (see `leads.limb_lead_inconsistency`): near 0 for a faithful record, large
    for per-lead rescaled data, which callers may count, report or skip.
    """

    name: str
    signal: np.ndarray
    fs: float
    units: str
    source_leads: tuple[str, ...]
    comments: tuple[str, ...] = ()
    limb_lead_inconsistency: float = 0.0


def validate_signal(x: np.ndarray, record: str | None = None, min_samples: int = 1) -> np.ndarray:
    """Check a canonical (T, 12) signal: shape, length and finite samples.

    Returns it as float32. The error names the record and, for bad samples, the leads and
    the count of bad samples, so a corrupt file can be found.
    """
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != NUM_LEADS:
        raise RecordError(record, f"expected a (T, 12) signal, got shape {x.shape}")
    if x.shape[0] < min_samples:
        raise RecordError(record, f"signal has {x.shape[0]} samples, need >= {min_samples}")
    bad = ~np.isfinite(x)
    if bad.any():
        per_lead = bad.sum(axis=0)
        which = ", ".join(f"{LEADS[i]} ({n})" for i, n in enumerate(per_lead) if n)
        raise RecordError(record, f"{int(bad.sum())} NaN or infinite samples in leads {which}")
    return x.astype(np.float32, copy=False)


GAIN_POLICIES = ("header", "common")


def read_wfdb(
    path: str | Path, derive_missing_limb_leads: bool = True, gain_policy: str = "header"
) -> Record:
    """Read a WFDB record (`.hea` plus `.dat` or `.mat`) given its path without extension.

    The signal is converted to mV (or kept in NU), reordered to the canonical lead order
    (deriving III, aVR, aVL, aVF from I and II when only those are absent) and checked.
    Any problem raises RecordError naming the record.

    `gain_policy`: `header` uses each channel's own ADC gain. `common` divides every channel
    by one gain, the median of the header's gains, for files whose per-channel gains are
    known to be wrong while their ADC values share one scale. LUDB 1.0.1 is such a case:
    its ADC values obey III = II - I exactly, but its header gains differ from lead to lead
    (e.g. 751 and 1895 /mV in record 3), so per-channel conversion breaks the relation.
    The absolute scale under `common` is approximate; the relations between leads are kept.
    """
    path = Path(path)
    name = str(path)
    try:
        rec = wfdb.rdrecord(str(path))
    except FileNotFoundError as err:
        raise RecordError(name, f"cannot read record: {err}") from err
    except Exception as err:  # wfdb raises bare ValueError/IndexError on malformed files.
        raise RecordError(name, f"malformed WFDB record: {type(err).__name__}: {err}") from err
    if gain_policy not in GAIN_POLICIES:
        raise ValueError(f"gain_policy must be one of {GAIN_POLICIES}, got {gain_policy!r}")
    if rec.p_signal is None:
        raise RecordError(name, "record holds no physical signal")
    physical = rec.p_signal
    if gain_policy == "common":
        gains = np.asarray(rec.adc_gain, dtype=np.float64)
        # p = (d - baseline) / gain_k; rescaling by gain_k / g gives (d - baseline) / g.
        physical = physical * (gains / np.median(gains))[None, :]
    signal, units = to_millivolts(physical, list(rec.units), name)
    signal = to_canonical(signal, list(rec.sig_name), name, derive_missing_limb_leads)
    signal = validate_signal(signal, name)
    return Record(
        name=name,
        signal=signal,
        fs=float(rec.fs),
        units=units,
        source_leads=tuple(rec.sig_name),
        comments=tuple(rec.comments or ()),
        limb_lead_inconsistency=limb_lead_inconsistency(signal),
    )
