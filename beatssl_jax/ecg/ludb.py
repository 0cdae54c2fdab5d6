"""Reading the wave annotations of LUDB (Lobachevsky University Electrocardiography Database).

Source: Kalyakulina et al., "LUDB: A New Open-Access Validation Tool for Electrocardiogram
Delineation Algorithms", IEEE Access 8, 2020; PhysioNet release 1.0.1. METHOD.md section 7.

Release layout: `RECORDS` lists the records as `data/<id>`; each record has `<id>.hea` and
`<id>.dat` (12 leads, 500 Hz, 10 s, mV) and one WFDB annotation file per lead, whose extension
is the lower-case lead name (`i`, `ii`, `iii`, `avr`, `avl`, `avf`, `v1` ... `v6`). Each wave
is annotated as three marks in time order: `(` onset, a peak (`p` P wave, `N` QRS complex,
`t` T wave) and `)` offset.

The files do not always follow that pattern. In the 160 records at hand:
  * a peak without its onset (`N )`, leads whose first or every QRS lacks `(`), or without
    its offset (a T wave whose `)` is missing before the next `(`);
  * brackets that enclose no peak (`( )`), sometimes just before or after a peak of the
    same wave (`( ) N`, `p ( )`);
  * the same wave annotated several times, nested (`( ( ( t t t ) ) )`).
The reader resolves these with one rule (see `parse_waves`): a wave is a maximal run of
peaks of one kind together with the run of `(` directly before it and the run of `)`
directly after it. A missing bracket is reported as None rather than guessed; brackets that
enclose no peak are ignored.

Edges are not annotated: in each lead, the signal before the first annotated wave and after
the last one may contain unannotated waves. `annotated_span` gives the part that is
annotated; segmentation losses, metrics and R-peak scoring are restricted to it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import wfdb

from beatssl_jax.ecg.errors import RecordError
from beatssl_jax.ecg.leads import LEADS, normalize_lead_name
from beatssl_jax.ecg.records import read_wfdb

# Canonical lead name -> extension of that lead's annotation file.
LUDB_LEAD_EXTENSIONS: dict[str, str] = {name: name.lower() for name in LEADS}
LUDB_FS = 500.0
WAVE_KINDS: tuple[str, ...] = ("p", "N", "t")  # P wave, QRS complex, T wave
ONSET_SYMBOL = "("
OFFSET_SYMBOL = ")"


@dataclasses.dataclass(frozen=True)
class Wave:
    """One annotated wave: `kind` is 'p', 'N' (QRS) or 't'; positions are sample indices.

    `onset` or `offset` is None when the annotation file omits that bracket.
    """

    kind: str
    onset: int | None
    peak: int
    offset: int | None

    @property
    def start(self) -> int:
        """First annotated sample of the wave: its onset, or its peak when the onset is missing."""
        return self.peak if self.onset is None else self.onset

    @property
    def end(self) -> int:
        """Last annotated sample of the wave: its offset, or its peak when the offset is missing."""
        return self.peak if self.offset is None else self.offset


def record_name(record_path: str | Path) -> str:
    """The record's name as used in error messages: the path's last component (`data/1` -> `1`)."""
    return Path(record_path).name


def list_records(ludb_dir: str | Path) -> list[Path]:
    """Record paths (without extension) listed in `<ludb_dir>/RECORDS`, in file order."""
    ludb_dir = Path(ludb_dir)
    records_file = ludb_dir / "RECORDS"
    if not records_file.is_file():
        raise RecordError(str(ludb_dir), "no RECORDS file: not an LUDB release directory")
    lines = records_file.read_text().split()
    return [ludb_dir / line.strip() for line in lines if line.strip()]


def parse_waves(
    samples: Sequence[int] | np.ndarray, symbols: Sequence[str], record: str | None = None
) -> list[Wave]:
    """Group time-ordered LUDB annotation marks into waves.

    A wave is a maximal run of consecutive peak marks of one kind (`p`, `N` or `t`), with
    the run of `(` marks directly before it and the run of `)` marks directly after it.
    The wave's onset is the first `(` of its run and its offset the last `)` of its run,
    so a wave annotated several times (nested brackets) becomes one wave spanning all the
    copies; its peak is the middle mark of the run (the earlier of the two middle ones).
    A run with no `(` (or no `)`) gives onset (or offset) None. `(` or `)` marks that are
    not adjacent to a peak run enclose no peak and are ignored. Peaks of different kinds
    that follow each other directly are separate waves: the onsets go to the first and the
    offsets to the last. Any other symbol raises RecordError.
    """
    samples = np.asarray(samples, dtype=np.int64)
    if len(samples) != len(symbols):
        raise RecordError(record, f"{len(samples)} annotation samples but {len(symbols)} symbols")
    allowed = {*WAVE_KINDS, ONSET_SYMBOL, OFFSET_SYMBOL}
    unknown = sorted({s for s in symbols if s not in allowed})
    if unknown:
        raise RecordError(record, f"unexpected annotation symbols {unknown}; expected {allowed}")
    order = np.argsort(samples, kind="stable")
    samples = samples[order]
    symbols = [symbols[i] for i in order]

    waves: list[Wave] = []
    n = len(symbols)
    i = 0
    while i < n:
        if symbols[i] not in WAVE_KINDS:
            i += 1
            continue
        # Opening run directly before the peaks.
        j = i
        while j > 0 and symbols[j - 1] == ONSET_SYMBOL:
            j -= 1
        onset = int(samples[j]) if j < i else None
        # The peak run: consecutive peaks, split by kind.
        k = i
        while k < n and symbols[k] in WAVE_KINDS:
            k += 1
        # Closing run directly after the peaks.
        m = k
        while m < n and symbols[m] == OFFSET_SYMBOL:
            m += 1
        offset = int(samples[m - 1]) if m > k else None
        groups: list[list[int]] = []
        for p in range(i, k):
            if groups and symbols[groups[-1][0]] == symbols[p]:
                groups[-1].append(p)
            else:
                groups.append([p])
        for g, group in enumerate(groups):
            middle = group[(len(group) - 1) // 2]
            waves.append(
                Wave(
                    kind=symbols[middle],
                    onset=onset if g == 0 else None,
                    peak=int(samples[middle]),
                    offset=offset if g == len(groups) - 1 else None,
                )
            )
        i = m
    return waves


def annotation_path(record_path: str | Path, lead: str) -> Path:
    """Path of the annotation file of `lead` (any accepted spelling) for a record."""
    canonical = normalize_lead_name(lead, record_name(record_path))
    record_path = Path(record_path)
    return record_path.with_name(f"{record_path.name}.{LUDB_LEAD_EXTENSIONS[canonical]}")


def read_waves(record_path: str | Path, lead: str) -> list[Wave]:
    """The annotated waves of one lead of an LUDB record, in time order.

    `record_path` is the record's path without extension (`.../ludb/data/1`); `lead` any
    accepted spelling of a lead name (`II`, `ii`, `aVR`, `avr`). Raises RecordError naming
    the record when the lead's annotation file is missing or malformed. Irregular marks are
    resolved as `parse_waves` documents.
    """
    name = record_name(record_path)
    path = annotation_path(record_path, lead)
    if not path.is_file():
        raise RecordError(name, f"no annotation file for lead {lead} (expected {path})")
    try:
        ann = wfdb.rdann(str(Path(record_path)), path.suffix[1:])
    except Exception as err:  # wfdb raises bare ValueError/IndexError on malformed files.
        raise RecordError(
            name, f"cannot read annotation file {path}: {type(err).__name__}: {err}"
        ) from err
    return parse_waves(ann.sample, list(ann.symbol), name)


def waves_span(waves: Sequence[Wave]) -> tuple[int, int]:
    """(first, last) annotated sample, inclusive: the first wave's start to the last's end.

    A wave's start is its onset (its peak if the onset is missing), its end its offset (or
    peak). Raises ValueError for an empty list.
    """
    if not waves:
        raise ValueError("no waves: the annotated span is empty")
    return min(w.start for w in waves), max(w.end for w in waves)


def annotated_span(record_path: str | Path, lead: str) -> tuple[int, int]:
    """(first, last) annotated sample, inclusive, of one lead of an LUDB record.

    LUDB leaves the record edges unannotated (METHOD.md section 7): waves before `first` or
    after `last` exist in the signal but not in the annotation, so losses and metrics use
    only samples in [first, last].
    """
    waves = read_waves(record_path, lead)
    if not waves:
        raise RecordError(record_name(record_path), f"lead {lead} has no annotated waves")
    return waves_span(waves)


def qrs_peaks(record_path: str | Path, lead: str = "II") -> np.ndarray:
    """Sample indices (int64, sorted) of the annotated QRS peaks (`N`) of one lead."""
    waves = read_waves(record_path, lead)
    return np.array([w.peak for w in waves if w.kind == "N"], dtype=np.int64)


def read_signal(record_path: str | Path, gain_policy: str = "header") -> tuple[np.ndarray, float]:
    """An LUDB record's signal as float32 (T, 12) in mV, canonical lead order, and its rate.

    Reads with `records.read_wfdb` (wfdb `p_signal`, leads reordered with
    `leads.to_canonical`). `gain_policy` 'header' applies each lead's header gain as
    stored; 'common' one gain for all leads, which restores Einthoven's law in LUDB 1.0.1,
    whose header gains differ from lead to lead while its ADC values share one scale (see
    `records.read_wfdb`). Raises RecordError unless the record is in mV.
    """
    rec = read_wfdb(record_path, gain_policy=gain_policy)
    if rec.units != "mV":
        raise RecordError(record_name(record_path), f"expected LUDB signals in mV, got {rec.units}")
    return rec.signal.astype(np.float32, copy=False), float(rec.fs)
