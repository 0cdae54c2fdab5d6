"""Reading WFDB records from real-world folder trees: scanning, checks and known header quirks.

`beatssl_jax.ecg.records.read_wfdb` turns a well-formed record into a canonical (T, 12)
array. Public ECG collections also hold records that wfdb reads wrongly or not at all;
`read_record` deals with the cases below, and either corrects a record (saying so in
`ReadRecord.corrections`) or raises a RecordError that names it.

Checked before reading (`check_signal_files`):
- every signal file the header names exists;
- its size matches the header: a file holding fewer samples per lead than the header's
  length is truncated; one holding more means that the header's sampling rate or length
  disagrees with the data (wfdb would silently read only the first part). The message gives
  both durations at the header's rate.

Corrected, with a note:
- record line naming the record differently from its header file. Four Georgia headers of
  the PhysioNet/CinC Challenge 2020 release (E00009, E00015, E00018, E00793 in
  ../shared/data/ecg_corpus/awwong1_cinc2020_tests) begin `E00009.mat 12 500 5000 ...`,
  which wfdb rejects as a record name. The header file's own name is authoritative: the
  header is re-read with its record line naming `E00009`.
- known wrong gains (`GainCorrection`). The same 2020 Georgia release gives every lead a
  gain of 4880/mV; the true gain is 1000/mV (the 2021 release of the same database fixed
  it). Read at 1000/mV, the median QRS peak-to-peak amplitude of the four records above is
  1.5-3.1 mV, the range of the 2021 Georgia records E07500-E07519 in
  ../shared/data/ecg_corpus/torch_ecg_cinc2021 (0.9-3.1 mV); at 4880/mV it would be
  0.3-0.6 mV, low voltage in every record. The correction applies only when the record name
  matches the rule's pattern and every lead carries the wrong gain in mV.
Detected by `read_wfdb` itself: unreadable files, unknown or missing leads, NaN samples
(also the WFDB invalid-sample value, which wfdb reads as NaN), unknown units.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from contextlib import nullcontext
from fractions import Fraction
from pathlib import Path

import numpy as np
import wfdb

from beatssl_jax.ecg.errors import RecordError
from beatssl_jax.ecg.records import Record, read_wfdb

HEADER_SUFFIX = ".hea"


@dataclasses.dataclass(frozen=True)
class GainCorrection:
    """Records named like `record_pattern` (full match on the file name, no extension) whose
    every lead has gain `wrong_gain` per mV are read with `true_gain` per mV instead."""

    record_pattern: str
    wrong_gain: float
    true_gain: float
    source: str


CINC2020_GEORGIA_GAIN = GainCorrection(
    record_pattern=r"E\d{5}",
    wrong_gain=4880.0,
    true_gain=1000.0,
    source="PhysioNet/CinC Challenge 2020 Georgia release",
)
DEFAULT_GAIN_CORRECTIONS: tuple[GainCorrection, ...] = (CINC2020_GEORGIA_GAIN,)


@dataclasses.dataclass(frozen=True)
class ReadRecord:
    """A record read by `read_record`, with the notes of every correction applied to it."""

    record: Record
    corrections: tuple[str, ...] = ()
    gain_corrected: bool = False


def find_records(root: str | os.PathLike) -> list[Path]:
    """Every `.hea` file under `root` (recursively), sorted by relative path.

    Hidden files and folders (names starting with '.') are left out.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for filename in filenames:
            if filename.endswith(HEADER_SUFFIX) and not filename.startswith("."):
                found.append(Path(dirpath) / filename)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def record_name(root: str | os.PathLike, header: str | os.PathLike) -> str:
    """The name a record goes by in a dataset: its header's path relative to `root`, no suffix."""
    return Path(header).relative_to(root).with_suffix("").as_posix()


def _record_line_index(lines: Sequence[str]) -> int:
    for i, line in enumerate(lines):
        if line.strip() and not line.lstrip().startswith("#"):
            return i
    raise ValueError("header has no record line")


def repair_record_line(text: str, stem: str) -> tuple[str, str | None]:
    """Make the header's record line name the record `stem` (its header file's name).

    Returns the (possibly) repaired header text and a note describing the repair, or None
    when the line already names `stem`. Multi-segment headers (`name/segments`) are refused.
    """
    lines = text.splitlines()
    try:
        index = _record_line_index(lines)
    except ValueError as err:
        raise RecordError(stem, str(err)) from err
    tokens = lines[index].split()
    declared = tokens[0]
    if "/" in declared:
        raise RecordError(stem, f"multi-segment record ({declared!r}) is not supported")
    if declared == stem:
        return text, None
    tokens[0] = stem
    lines[index] = " ".join(tokens)
    note = f"record line names the record {declared!r}; read as {stem!r}, its header file's name"
    return "\n".join(lines) + "\n", note


# Bits per sample of the WFDB formats with a fixed layout; 212, 310 and 311 pack samples
# across byte boundaries. Other formats (e.g. FLAC 508/516/524) are not size-checked.
_BITS_PER_SAMPLE: dict[str, Fraction] = {
    "8": Fraction(8), "16": Fraction(16), "24": Fraction(24), "32": Fraction(32),
    "61": Fraction(16), "80": Fraction(8), "160": Fraction(16),
    "212": Fraction(12), "310": Fraction(32, 3), "311": Fraction(32, 3),
}  # fmt: skip
_PACKED = {"212", "310", "311"}


def check_signal_files(header: wfdb.Record, directory: Path, name: str) -> None:
    """Compare each signal file named by `header` with the header's length and rate.

    Raises RecordError naming the record, the file and both durations when a file is
    missing, truncated or longer than the header says.
    """
    sig_len = header.sig_len
    fs = float(header.fs)
    if not header.file_name:
        raise RecordError(name, "header lists no signal files")
    files: dict[str, list[int]] = {}
    for channel, file_name in enumerate(header.file_name):
        files.setdefault(file_name, []).append(channel)
    for file_name, channels in files.items():
        path = directory / file_name
        if not path.is_file():
            raise RecordError(name, f"signal file {file_name} is missing")
        fmts = [str(header.fmt[c]) for c in channels]
        if not sig_len or any(f not in _BITS_PER_SAMPLE for f in fmts):
            continue
        spf = [int(header.samps_per_frame[c] or 1) for c in channels]
        bits_per_frame = sum(_BITS_PER_SAMPLE[f] * s for f, s in zip(fmts, spf, strict=True))
        offsets = header.byte_offset or [None] * len(header.file_name)
        offset = int(offsets[channels[0]] or 0)
        data_bytes = path.stat().st_size - offset
        held = math.floor(Fraction(max(data_bytes, 0) * 8) / bits_per_frame)
        slack = 2 if any(f in _PACKED for f in fmts) else 0
        if held < sig_len:
            raise RecordError(
                name,
                f"{file_name} is truncated: it holds {held} of the {sig_len} samples per lead "
                f"the header gives ({held / fs:.2f} s of {sig_len / fs:.2f} s at {fs:g} Hz)",
            )
        if held > sig_len + slack:
            raise RecordError(
                name,
                f"{file_name} holds {held} samples per lead ({held / fs:.2f} s at {fs:g} Hz) but "
                f"the header gives {sig_len} ({sig_len / fs:.2f} s): the header's sampling "
                "rate or length disagrees with the data",
            )


def _gain_correction(
    header: wfdb.Record, stem: str, rules: Sequence[GainCorrection]
) -> GainCorrection | None:
    units = [str(u).strip().lower() for u in (header.units or [])]
    gains = np.asarray(header.adc_gain or [], dtype=np.float64)
    if not gains.size or any(u != "mv" for u in units):
        return None
    for rule in rules:
        if re.fullmatch(rule.record_pattern, stem) and np.all(gains == rule.wrong_gain):
            return rule
    return None


def _staged_copy(header_path: Path, text: str, signal_files: list[str], workdir: Path) -> Path:
    """Write a repaired header into `workdir` beside links to the record's signal files."""
    stem = header_path.stem
    (workdir / f"{stem}{HEADER_SUFFIX}").write_text(text)
    for file_name in dict.fromkeys(signal_files):
        source = (header_path.parent / file_name).resolve()
        target = workdir / file_name
        if not source.is_file() or target.exists():
            continue
        try:
            target.symlink_to(source)
        except OSError:
            shutil.copyfile(source, target)
    return workdir / stem


def _signal_file_names(text: str) -> list[str]:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return [ln.split()[0] for ln in lines[1:]]


def read_record(
    header_path: str | os.PathLike,
    name: str | None = None,
    gain_corrections: Sequence[GainCorrection] = DEFAULT_GAIN_CORRECTIONS,
) -> ReadRecord:
    """Read the record of `header_path` (a `.hea` file) into a canonical (T, 12) Record.

    `name` is how errors and the returned Record name it (default: the header path without
    suffix). Applies the checks and corrections of the module docstring; any failure
    raises RecordError naming the record.
    """
    header_path = Path(header_path)
    name = name or str(header_path.with_suffix(""))
    stem = header_path.stem
    try:
        text = header_path.read_text(errors="replace")
    except OSError as err:
        raise RecordError(name, f"cannot read header: {err}") from err
    try:
        text, note = repair_record_line(text, stem)
    except RecordError as err:
        raise RecordError(name, err.problem) from err
    corrections = [note] if note else []

    # A repaired header is read from a scratch folder beside links to the signal files.
    scratch = tempfile.TemporaryDirectory(prefix="wfdb_repair_") if note else nullcontext()
    with scratch as workdir:
        if workdir is not None:
            path = _staged_copy(header_path, text, _signal_file_names(text), Path(workdir))
        else:
            path = header_path.with_suffix("")
        try:
            header = wfdb.rdheader(str(path))
        except Exception as err:  # wfdb raises several builtin types on malformed headers.
            raise RecordError(name, f"malformed header: {type(err).__name__}: {err}") from err
        if header.sig_len is not None and header.n_sig and header.fs:
            check_signal_files(header, header_path.parent, name)
        try:
            record = read_wfdb(path)
        except RecordError as err:
            raise RecordError(name, err.problem) from err

    signal = record.signal
    rule = _gain_correction(header, stem, gain_corrections)
    if rule is not None:
        signal = (signal * np.float32(rule.wrong_gain / rule.true_gain)).astype(np.float32)
        corrections.append(
            f"header gain {rule.wrong_gain:g}/mV corrected to {rule.true_gain:g}/mV "
            f"(known error of the {rule.source})"
        )
    record = dataclasses.replace(record, name=name, signal=signal)
    return ReadRecord(
        record=record, corrections=tuple(corrections), gain_corrected=rule is not None
    )
