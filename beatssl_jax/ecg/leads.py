"""Lead handling: canonical order, spelling normalisation, reordering and derivation.

The canonical order everywhere in this project is (METHOD.md section 2)
I, II, III, aVR, aVL, aVF, V1, V2, V3, V4, V5, V6.

Limb leads follow Einthoven's and Goldberger's relations, so a record that carries only the
eight independent leads (I, II, V1-V6) can be completed:
  III = II - I,  aVR = -(I + II) / 2,  aVL = I - II / 2,  aVF = II - I / 2.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from beatssl_jax.ecg.errors import RecordError

LEADS: tuple[str, ...] = (
    "I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6",
)  # fmt: skip
NUM_LEADS = len(LEADS)
LEAD_INDEX: dict[str, int] = {name: i for i, name in enumerate(LEADS)}
# The eight independent leads, from which the other four are derived.
INDEPENDENT_LEADS: tuple[str, ...] = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
DERIVED_LEADS: tuple[str, ...] = ("III", "aVR", "aVL", "aVF")

# Upper-cased, separator-free spelling -> canonical name.
_ALIASES: dict[str, str] = {
    "I": "I", "II": "II", "III": "III",
    "D1": "I", "D2": "II", "D3": "III", "DI": "I", "DII": "II", "DIII": "III",
    "AVR": "aVR", "AVL": "aVL", "AVF": "aVF",
    **{f"V{k}": f"V{k}" for k in range(1, 7)},
    **{f"C{k}": f"V{k}" for k in range(1, 7)},  # chest leads in IEC notation
}  # fmt: skip


def normalize_lead_name(name: str, record: str | None = None) -> str:
    """Return the canonical spelling of a lead name: `avr`, `AVR`, `Lead aVR` -> `aVR`.

    Raises RecordError naming the record and the lead for a name that is not one of the
    twelve standard leads.
    """
    key = re.sub(r"[\s_\-]", "", str(name)).upper()
    if key.startswith("LEAD") and len(key) > 4:
        key = key[4:]
    if key not in _ALIASES:
        raise RecordError(record, f"unknown lead name {name!r}; expected one of {list(LEADS)}")
    return _ALIASES[key]


def derive_limb_leads(lead_i: np.ndarray, lead_ii: np.ndarray) -> dict[str, np.ndarray]:
    """III, aVR, aVL and aVF from I and II (Einthoven's law and Goldberger's leads)."""
    return {
        "III": lead_ii - lead_i,
        "aVR": -(lead_i + lead_ii) / 2.0,
        "aVL": lead_i - lead_ii / 2.0,
        "aVF": lead_ii - lead_i / 2.0,
    }


def to_canonical(
    signal: np.ndarray,
    lead_names: Sequence[str],
    record: str | None = None,
    derive_missing_limb_leads: bool = True,
) -> np.ndarray:
    """Reorder a record of shape (T, L) with the given lead names to (T, 12), canonical order.

    Lead names may use any accepted spelling. When III, aVR, aVL or aVF are absent but I and
    II are present (8-lead recordings), the absent ones are derived if
    `derive_missing_limb_leads`. Any other missing lead is an error that names it.
    """
    signal = np.asarray(signal)
    if signal.ndim != 2:
        raise RecordError(record, f"expected a (T, leads) signal, got shape {signal.shape}")
    if signal.shape[1] != len(lead_names):
        raise RecordError(
            record,
            f"signal has {signal.shape[1]} channels but {len(lead_names)} lead names "
            f"({', '.join(map(str, lead_names))})",
        )
    names = [normalize_lead_name(n, record) for n in lead_names]
    seen: dict[str, int] = {}
    for column, name in enumerate(names):
        if name in seen:
            raise RecordError(
                record,
                f"lead {name} appears twice (channels {seen[name]} and {column}: "
                f"{lead_names[seen[name]]!r}, {lead_names[column]!r})",
            )
        seen[name] = column
    columns = {name: signal[:, c] for name, c in seen.items()}
    absent = [name for name in LEADS if name not in columns]
    if absent and derive_missing_limb_leads and {"I", "II"} <= columns.keys():
        derived = derive_limb_leads(columns["I"], columns["II"])
        for name in absent:
            if name in derived:
                columns[name] = derived[name]
        absent = [name for name in LEADS if name not in columns]
    if absent:
        raise RecordError(
            record,
            f"expected the 12 standard leads, found {len(seen)} ({', '.join(seen)}); "
            f"missing {', '.join(absent)}",
        )
    return np.stack([columns[name] for name in LEADS], axis=1)


def limb_lead_inconsistency(x: np.ndarray) -> float:
    """Relative RMS violation of Einthoven's and Goldberger's relations in a (T, 12) record.

    0 for a physically consistent record; rounding and quantisation give ~1e-3. Per-lead
    rescaling (per-lead z-scoring, or wrong per-lead gains in a header) gives values of
    order 0.1 to 1, and such a record no longer supports the VCG projection faithfully.
    """
    x = np.asarray(x, dtype=np.float64)
    derived = derive_limb_leads(x[:, 0], x[:, 1])
    residual = sum(np.sum((x[:, LEAD_INDEX[n]] - derived[n]) ** 2) for n in DERIVED_LEADS)
    energy = sum(np.sum(x[:, LEAD_INDEX[n]] ** 2) for n in DERIVED_LEADS)
    return float(np.sqrt(residual / energy)) if energy > 0 else 0.0
