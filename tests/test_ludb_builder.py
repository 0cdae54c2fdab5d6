"""ludb builder: tiny releases written with wfdb, corrupt records, and the real LUDB subset."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
import wfdb

import data_builders  # noqa: F401  (registers the builders)
from beatssl_jax.ecg.errors import RecordError
from beatssl_jax.ecg.leads import LEADS
from beatssl_jax.ecg.synthetic import SyntheticConfig, generate_record
from data_builders.common import SignalConfig
from data_builders.ludb import ludb_dataset_builder as ludb
from tests.conftest import check_pipeline_batch, shared_data, write_wfdb_record

WFDB_NAMES = [lead.lower() for lead in LEADS]
# Hand-placed waves: (onset, peak symbol, peak, offset); None drops that bracket.
WAVES = [
    (100, "p", 130, 150),
    (200, "N", 220, 245),
    (330, "t", 380, 430),
    (None, "N", 1220, 1245),  # a QRS whose onset is not annotated
    (1600, "t", 1650, 1700),
]
LEAD_V6_WAVES = [(2000, "p", 2030, 2050), (2100, "N", 2120, 2140)]


def expected_mask(waves: list[tuple]) -> np.ndarray:
    """The wave mask of one lead, written out by hand from the wave list."""
    code = {"p": 1, "N": 2, "t": 3}
    column = np.zeros(5000, np.int8)
    for onset, kind, peak, offset in waves:
        start = peak if onset is None else onset
        column[start : offset + 1] = code[kind]
    return column


def write_annotation(folder: Path, record: str, lead: str, waves: list[tuple]) -> None:
    samples, symbols = [], []
    for onset, kind, peak, offset in waves:
        if onset is not None:
            samples.append(onset)
            symbols.append("(")
        samples += [peak, offset]
        symbols += [kind, ")"]
    # wfdb.wrann accepts letters-only extensions; LUDB's are lead names such as `v1`.
    wfdb.wrann(record, "tmp", np.array(samples), symbol=symbols, write_dir=str(folder), fs=500)
    (folder / f"{record}.tmp").rename(folder / f"{record}.{lead}")


def write_record(
    root: Path,
    record_id: int,
    *,
    fs: int = 500,
    leads: list[str] = WFDB_NAMES,
    nan_at: int | None = None,
    skip_annotation: str | None = None,
) -> None:
    """One LUDB-layout record: 12 leads from the synthetic generator, int16, common gain."""
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    quiet = {"baseline_wander_mv": (0, 0), "mains_mv": (0, 0), "emg_mv": (0.0, 0.01)}
    ecg = generate_record(record_id, SyntheticConfig(**quiet)).ecg.astype(np.float64)
    keep = [WFDB_NAMES.index(name) for name in leads]
    signal = ecg[:, keep]
    if nan_at is not None:
        signal[nan_at : nan_at + 5, 0] = np.nan
    write_wfdb_record(data, str(record_id), signal, fs, leads)
    for lead in WFDB_NAMES:
        if lead != skip_annotation:
            waves = LEAD_V6_WAVES if lead == "v6" else WAVES
            write_annotation(data, str(record_id), lead, waves)


def write_release(root: Path, ids: list[int]) -> Path:
    (root / "RECORDS").write_text("".join(f"data/{i}\n" for i in ids))
    with (root / "ludb.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ID", "Sex", "Age", *ludb.DIAGNOSIS_COLUMNS])
        for i in ids:
            rhythm = "Sinus rhythm" if i % 2 else "Atrial fibrillation"
            row = [str(i), "F\n", f"{40 + i}\n", rhythm, "", "Complete LBBB", "", "LAH\nLVH"]
            writer.writerow(row + [""] * (len(ludb.DIAGNOSIS_COLUMNS) - 5))
    return root


def build(root: Path, data_dir: Path, **kwargs) -> tfds.core.DatasetBuilder:
    builder = tfds.builder("ludb", data_dir=data_dir, num_workers=1, **kwargs)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=root))
    return builder


def test_split_by_record_id():
    assert [ludb.split_of(i) for i in range(1, 11)] == [
        "validation", "train", "train", "train", "test",
        "validation", "train", "train", "train", "test",
    ]  # fmt: skip


def test_tiny_release_hand_computed_labels(tmp_path):
    root = tmp_path / "ludb"
    for i in (2, 5, 6):
        write_record(root, i)
    write_release(root, [2, 5, 6])
    builder = build(root, tmp_path / "tfds")
    assert builder.report.written == {"train": 1, "validation": 1, "test": 1}
    ex = tfds.data_source("ludb", data_dir=tmp_path / "tfds", split="validation")[0]
    assert int(ex["record_id"]) == 6 and int(ex["age"]) == 46 and ex["sex"] == b"F"
    assert ex["diagnoses"].decode() == "Atrial fibrillation\nComplete LBBB\nLAH\nLVH"
    for k, lead in enumerate(WFDB_NAMES):
        waves = LEAD_V6_WAVES if lead == "v6" else WAVES
        assert np.array_equal(ex["wave_mask"][:, k], expected_mask(waves)), lead
        first = waves[0][0]
        last = waves[-1][3]
        span = np.zeros(5000, bool)
        span[first : last + 1] = True
        assert np.array_equal(ex["annotated"][:, k], span), lead
    assert ex["ecg"].shape == (5000, 12) and int(ex["num_beats"]) >= 5


CORRUPTIONS = {
    "truncated_dat": "malformed WFDB record",
    "missing_lead": "V6",
    "nan_samples": "NaN",
    "rate_mismatch": "header rate 1000 Hz with 5000 samples gives 5 s",
    "missing_annotation": "no annotation file for lead aVF",
}


def write_corrupt(root: Path, record_id: int, kind: str) -> None:
    if kind == "missing_lead":
        write_record(root, record_id, leads=WFDB_NAMES[:-1])
    elif kind == "nan_samples":
        write_record(root, record_id, nan_at=1000)
    elif kind == "rate_mismatch":
        write_record(root, record_id, fs=1000)
    elif kind == "missing_annotation":
        write_record(root, record_id, skip_annotation="avf")
    else:
        write_record(root, record_id)
        dat = root / "data" / f"{record_id}.dat"
        dat.write_bytes(dat.read_bytes()[: dat.stat().st_size // 3])


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupt_record_error_names_it(tmp_path, kind):
    write_corrupt(tmp_path, 13, kind)
    task = {"name": "13", "path": str(tmp_path / "data" / "13"), "record_id": 13}
    with pytest.raises(RecordError, match=r"13: ") as info:
        ludb.make_example({**task, "diagnoses": "", "sex": "", "age": -1}, SignalConfig())
    assert CORRUPTIONS[kind] in str(info.value)


def test_bad_records_stop_the_build_or_are_counted(tmp_path):
    root = tmp_path / "ludb"
    good = [2, 5, 6]  # one per split
    bad = dict(zip([3, 4, 7, 8, 9], sorted(CORRUPTIONS), strict=True))  # all train
    for i in good:
        write_record(root, i)
    for i, kind in bad.items():
        write_corrupt(root, i, kind)
    write_release(root, sorted([*good, *bad]))
    with pytest.raises(RecordError, match=r"^3: "):
        build(root, tmp_path / "strict")
    builder = build(root, tmp_path / "lenient", skip_bad_records=True)
    assert builder.report.written == {"train": 1, "validation": 1, "test": 1}
    assert sorted(builder.report.skipped) == ["3", "4", "7", "8", "9"]
    for i, kind in bad.items():
        assert CORRUPTIONS[kind] in builder.report.skipped[str(i)]
    reread = tfds.builder("ludb", data_dir=tmp_path / "lenient")
    assert sorted(reread.info.metadata["skipped_records"]) == ["3", "4", "7", "8", "9"]


def annotation_wave_counts(record_path: Path, lead: str) -> dict[str, int]:
    """Waves per kind in one annotation file: peak marks not directly after a same-kind peak.

    LUDB marks a wave `( peak )`; a wave annotated several times repeats its peak mark
    back to back (`( ( t t ) )`), which counts once.
    """
    ann = wfdb.rdann(str(record_path), lead)
    order = np.argsort(ann.sample, kind="stable")
    symbols = [ann.symbol[i] for i in order]
    counts = dict.fromkeys("pNt", 0)
    for i, s in enumerate(symbols):
        if s in counts and (i == 0 or symbols[i - 1] != s):
            counts[s] += 1
    return counts


def mask_runs(column: np.ndarray, code: int) -> int:
    on = np.concatenate([[False], column == code, [False]])
    return int(np.sum(np.diff(on.astype(np.int8)) == 1))


def check_against_annotations(source, release: Path) -> None:
    for i in range(len(source)):
        ex = source[i]
        path = release / "data" / str(int(ex["record_id"]))
        for k, lead in enumerate(WFDB_NAMES):
            counts = annotation_wave_counts(path, lead)
            runs = {
                kind: mask_runs(ex["wave_mask"][:, k], c) for kind, c in ludb.WAVE_CODES.items()
            }
            assert runs == counts, (path.name, lead)


def copy_subset(release: Path, ids: list[int], dest: Path) -> Path:
    (dest / "data").mkdir(parents=True)
    for i in ids:
        for f in (release / "data").glob(f"{i}.*"):
            shutil.copy(f, dest / "data" / f.name)
    (dest / "RECORDS").write_text("".join(f"data/{i}\n" for i in ids))
    shutil.copy(release / "ludb.csv", dest / "ludb.csv")
    return dest


def test_real_ludb_subset_wave_counts(tmp_path):
    release = shared_data("ludb")
    ids = [int(p.split("/")[-1]) for p in (release / "RECORDS").read_text().split()]
    chosen = [i for i in ids if i % 5 == 0][:2] + [i for i in ids if i % 5 == 1][:2]
    chosen += [i for i in ids if i % 5 > 1][:2]
    root = copy_subset(release, chosen, tmp_path / "ludb")
    builder = tfds.builder("ludb", data_dir=tmp_path / "tfds", num_workers=2)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=root))
    assert builder.report.written == {"train": 2, "validation": 2, "test": 2}
    for split in ("train", "validation", "test"):
        source = tfds.data_source("ludb", data_dir=tmp_path / "tfds", split=split)
        check_against_annotations(source, release)
        ex = source[0]
        assert ex["annotated"].any(axis=0).all() and ex["diagnoses"]


@pytest.mark.slow
def test_real_ludb_full_build(tmp_path):
    release = shared_data("ludb")
    num = len((release / "RECORDS").read_text().split())
    builder = tfds.builder("ludb", data_dir=tmp_path, num_workers=2)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=release))
    assert builder.report.num_written == num and builder.report.skipped == {}
    for split in ("train", "validation", "test"):
        check_against_annotations(tfds.data_source("ludb", data_dir=tmp_path, split=split), release)
    check_pipeline_batch("ludb", str(tmp_path), "train")
