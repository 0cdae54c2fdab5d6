"""ecg_corpus: any folder tree of 12-lead WFDB records, cut into fixed-length windows.

The unlabelled pretraining corpus. Source: `--manual_dir` pointing at the tree; every
`.hea` file under it is one record (signals in `.dat`, `.mat` or any WFDB format), at any
sampling rate, with lead names in any accepted spelling (`AVR`, `aVR`, `avr`, `C1`...).
Records are read by `wfdb_reader.read_record`, which corrects the known header quirks
(record line naming `E00009.mat`; the 4880/mV gain of the CinC 2020 Georgia release) with a
note, and refuses truncated files, files longer than their header says, missing leads and
NaN samples with an error naming the record. With `skip_bad_records=True` such records are
skipped instead, and listed with the reason in the build report and the metadata.

Windows: the record is resampled to the config's rate and cut into consecutive,
non-overlapping windows of `num_samples`, at most `max_windows` per record, each an example
with its `window_index`; the remainder after the last whole window is not used. A record
shorter than one window but at least `min_samples` long (default: half a window) gives one
zero-padded example, its `valid_samples` saying how much is signal; a shorter record is
skipped, counted and listed with the reason. Each window is band-passed on its own (from its
first sample to the end of the next window, or the record), so its examples are the same
whichever other windows are kept. Example keys, and the names in the build report, are
`record#window` (e.g. `awwong1_cinc2020_tests/Q0017#3`); the metadata lists failed and
too-short records by record name.

Units: records in mV are kept in mV; records normalised before they reached us (units
`NU`, e.g. per-lead z-scored PTB-XL exports) cannot be converted to mV and are kept as
they are, with `units = 'NU'`. Per-lead z-scoring breaks Einthoven's and Goldberger's
relations between the limb leads, which the VCG projection of 3KG relies on;
`limb_lead_inconsistency` gives the relative violation per record, and the metadata counts
the records above `inconsistency_threshold`. No record is dropped for it.

Fields beside the common ones:
  record                   path of the record under the corpus root, no extension
  window_index, num_windows  int32: this window and the number taken from the record
  valid_samples            int32: samples of `ecg` that are signal (the rest is padding)
  source_fs                float32: the record's own sampling rate
  source_num_samples       int32: the record's length at its own rate
  units                    'mV' or 'NU'
  limb_lead_inconsistency  float32
  corrections              text: the header corrections applied, '; '-separated, or ''
  header_comments          text: the header's comment lines, newline-separated
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import math
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

from beatssl_jax.ecg.errors import RecordError
from beatssl_jax.ecg.preprocess import PreprocessConfig, resampled_length
from data_builders.common import EcgBuilderConfig, EcgDatasetBuilder, SignalConfig, common_fields
from data_builders.wfdb_reader import (
    DEFAULT_GAIN_CORRECTIONS,
    GainCorrection,
    find_records,
    read_record,
    record_name,
)

log = logging.getLogger(__name__)

DEFAULT_INCONSISTENCY_THRESHOLD = 0.05
SPLIT = "train"


@dataclasses.dataclass(eq=False)
class CorpusConfig(EcgBuilderConfig):
    """An ecg_corpus variant (see the module docstring for the window policy).

    max_windows:   most windows taken from one record.
    min_samples:   shortest record (at the config's rate) kept as a padded example; None
                   means half a window.
    gain_corrections: known wrong header gains to correct (`wfdb_reader.GainCorrection`).
    inconsistency_threshold: limb_lead_inconsistency above which the metadata counts a
                   record as breaking the limb-lead relations (faithful records: < 0.02).
    """

    max_windows: int = 6
    min_samples: int | None = None
    gain_corrections: tuple[GainCorrection, ...] = DEFAULT_GAIN_CORRECTIONS
    inconsistency_threshold: float = DEFAULT_INCONSISTENCY_THRESHOLD

    def __post_init__(self):
        if self.max_windows < 1:
            raise ValueError(f"max_windows must be >= 1, got {self.max_windows}")
        if self.min_samples is not None and not 0 < self.min_samples <= self.signal.num_samples:
            raise ValueError(
                f"min_samples must be in (0, num_samples={self.signal.num_samples}], "
                f"got {self.min_samples}"
            )

    @property
    def shortest(self) -> int:
        """The shortest record kept, in samples at the config's rate."""
        return self.min_samples or max(1, self.signal.num_samples // 2)


def _config(name: str, fs: float, description: str) -> CorpusConfig:
    return CorpusConfig(
        name=name,
        description=description,
        signal=SignalConfig(preprocess=PreprocessConfig(fs=fs), num_samples=round(10 * fs)),
    )


def header_length(header: Path) -> tuple[float, int] | None:
    """(sampling rate, samples per lead) from a header's record line, or None if absent.

    A light parse used to plan the windows; the full read (`read_record`) validates it.
    """
    try:
        text = Path(header).read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        tokens = line.split()
        if len(tokens) < 4:
            return None
        try:
            fs = float(tokens[2].split("/")[0])
            length = int(tokens[3])
        except ValueError:
            return None
        return (fs, length) if fs > 0 and length > 0 else None
    return None


def plan_windows(
    fs: float, length: int, config: CorpusConfig
) -> tuple[list[tuple[int, int]], str | None]:
    """Source-sample spans [start, stop) of the windows of a record of `length` samples at `fs`.

    Returns the spans and, when the record yields none, the reason. A span runs from the
    window's first sample to the end of the following window (or the record), the context
    its band-pass sees; the example keeps its first `num_samples` output samples.
    """
    out_fs = config.signal.fs
    num_samples = config.signal.num_samples
    ratio = Fraction(round(out_fs * 1e6), round(fs * 1e6))
    # Whole windows: floor keeps the last window fully inside the record after resampling.
    whole = math.floor(length * ratio) // num_samples
    window_in = Fraction(num_samples) / ratio  # one window, in source samples
    if whole == 0:
        available = resampled_length(length, fs, out_fs)
        if available < config.shortest:
            reason = (
                f"shorter than the minimum: {length} samples at {fs:g} Hz "
                f"({length / fs:.2f} s) give {available} at {out_fs:g} Hz, need "
                f">= {config.shortest} ({config.shortest / out_fs:.2f} s)"
            )
            return [], reason
        return [(0, length)], None
    spans = []
    for k in range(min(whole, config.max_windows)):
        start = math.floor(k * window_in)
        stop = min(length, math.ceil((k + 2) * window_in))
        spans.append((start, stop))
    return spans, None


def make_example(
    task: tuple[str, str, int, int, int, int], signal: SignalConfig, gain_corrections: Sequence
) -> dict[str, Any]:
    """Read a record and compute the example of one of its windows.

    task = (header path, record name, window index, number of windows, span start, span
    stop); a stop of -1 means "to the end of the record" (used when the header could not be
    planned from, so that the full read reports the problem).
    """
    header, name, index, num_windows, start, stop = task
    read = read_record(header, name, gain_corrections)
    rec = read.record
    length = rec.signal.shape[0]
    stop = length if stop < 0 else stop
    if stop > length:
        raise RecordError(name, f"window {index} needs samples up to {stop}, record has {length}")
    part = rec.signal[start:stop]
    fields = common_fields(part, rec.fs, signal, record=name, units=rec.units)
    valid = min(signal.num_samples, resampled_length(part.shape[0], rec.fs, signal.fs))
    return {
        **fields,
        "record": name,
        "window_index": np.int32(index),
        "num_windows": np.int32(num_windows),
        "valid_samples": np.int32(valid),
        "source_fs": np.float32(rec.fs),
        "source_num_samples": np.int32(length),
        "units": rec.units,
        "limb_lead_inconsistency": np.float32(rec.limb_lead_inconsistency),
        "corrections": "; ".join(read.corrections),
        "header_comments": "\n".join(rec.comments),
    }


def window_key(record: str, index: int) -> str:
    """Example key (and build-report name) of a record's window."""
    return f"{record}#{index}"


class Builder(EcgDatasetBuilder):
    """DatasetBuilder for ecg_corpus (see the module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "WFDB folder trees at any rate: canonical leads, consecutive 10 s windows, "
        "CinC 2020 header quirks corrected, NU records flagged, common Beat-SSL targets.",
    }
    BUILDER_CONFIGS: ClassVar[list[CorpusConfig]] = [
        _config("500hz", 500.0, "10 s windows at 500 Hz, up to 6 per record."),
        _config("100hz", 100.0, "10 s windows at 100 Hz, up to 6 per record."),
    ]
    DEFAULT_CONFIG_NAME = "500hz"
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Pass --manual_dir=DIR, DIR a folder tree of 12-lead WFDB records (.hea with .dat, "
        ".mat or another WFDB signal format), e.g. ../shared/data/ecg_corpus."
    )

    def _extra_features(self) -> dict[str, tfds.features.FeatureConnector]:
        scalar = tfds.features.Scalar
        text = tfds.features.Text
        return {
            "record": text(),
            "window_index": scalar(dtype=np.int32),
            "num_windows": scalar(dtype=np.int32),
            "valid_samples": scalar(dtype=np.int32),
            "source_fs": scalar(dtype=np.float32),
            "source_num_samples": scalar(dtype=np.int32),
            "units": text(),
            "limb_lead_inconsistency": scalar(dtype=np.float32),
            "corrections": text(),
            "header_comments": text(),
        }

    def _split_tasks(self, dl_manager: Any) -> dict[str, list[tuple[str, Any]]]:
        root = Path(dl_manager.manual_dir)
        cfg = self.builder_config
        headers = find_records(root)
        if not headers:
            raise FileNotFoundError(f"ecg_corpus: no .hea files under {root}")
        tasks = []
        self._records_found = len(headers)
        for header in headers:
            name = record_name(root, header)
            planned = header_length(header)
            if planned is None:
                # Let the full read name the problem (or fail the build).
                tasks.append((window_key(name, 0), (str(header), name, 0, 1, 0, -1)))
                continue
            spans, reason = plan_windows(*planned, cfg)
            if reason is not None:
                log.warning("ecg_corpus: skipped record %s: %s", name, reason)
                self.report.skipped[name] = reason
                self._too_short[name] = reason
            for k, (start, stop) in enumerate(spans):
                tasks.append((window_key(name, k), (str(header), name, k, len(spans), start, stop)))
        return {SPLIT: tasks}

    def _example_fn(self):
        cfg = self.builder_config
        return functools.partial(
            make_example, signal=cfg.signal, gain_corrections=cfg.gain_corrections
        )

    def _start_build(self) -> None:
        self._stats = _CorpusStats()
        self._too_short: dict[str, str] = {}
        self._records_found = 0

    def _observe_example(self, split: str, example: Mapping[str, Any]) -> None:
        self._stats.add(example, self.builder_config.inconsistency_threshold)

    def _extra_metadata(self) -> dict[str, Any]:
        skipped_bad = {
            key.rsplit("#", 1)[0]: why
            for key, why in self.report.skipped.items()
            if key not in self._too_short
        }
        return {
            "records_found": self._records_found,
            "records_built": len(self._stats.records),
            "records_too_short": dict(sorted(self._too_short.items())),
            "records_failed": dict(sorted(skipped_bad.items())),
            "inconsistency_threshold": self.builder_config.inconsistency_threshold,
            **self._stats.to_dict(),
        }


@dataclasses.dataclass
class _CorpusStats:
    """Per-record counts over the built examples (each record counted once)."""

    records: set = dataclasses.field(default_factory=set)
    windows: int = 0
    units: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    inconsistent: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    by_folder: dict = dataclasses.field(default_factory=dict)
    corrections: dict = dataclasses.field(default_factory=dict)

    def add(self, example: Mapping[str, Any], threshold: float) -> None:
        self.windows += 1
        name = example["record"]
        if name in self.records:
            return
        self.records.add(name)
        units = example["units"]
        bad = float(example["limb_lead_inconsistency"]) > threshold
        self.units[units] += 1
        self.inconsistent[units] += int(bad)
        folder = name.split("/", 1)[0] if "/" in name else "."
        entry = self.by_folder.setdefault(folder, {"records": 0, "limb_lead_inconsistent": 0})
        entry["records"] += 1
        entry["limb_lead_inconsistent"] += int(bad)
        if example["corrections"]:
            self.corrections[name] = example["corrections"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "windows_built": self.windows,
            "records_by_units": dict(sorted(self.units.items())),
            "limb_lead_inconsistent_by_units": dict(sorted(self.inconsistent.items())),
            "records_by_folder": dict(sorted(self.by_folder.items())),
            "corrections": dict(sorted(self.corrections.items())),
        }
