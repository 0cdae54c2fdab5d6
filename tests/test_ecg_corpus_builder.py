"""ecg_corpus builder: WFDB quirks, corrupt records, the window policy, real corpus.

Fixture trees are written by the tests (wfdb.wrsamp, and scipy.io.savemat for the MATLAB
`.mat` signal files of the PhysioNet/CinC challenges) from noise-free synthetic records.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import tensorflow_datasets as tfds
import wfdb

import data_builders  # noqa: F401  (registers the builders)
from beatssl_jax.ecg.errors import RecordError
from beatssl_jax.ecg.leads import LEADS
from beatssl_jax.ecg.peaks import detect_r_peaks
from beatssl_jax.ecg.preprocess import PreprocessConfig, resample
from beatssl_jax.ecg.synthetic import SyntheticConfig, generate_record
from data_builders.common import SignalConfig
from data_builders.ecg_corpus import Builder
from data_builders.ecg_corpus.ecg_corpus_dataset_builder import (
    CorpusConfig,
    header_length,
    plan_windows,
)
from data_builders.wfdb_reader import find_records, read_record, repair_record_line
from tests.conftest import check_pipeline_batch, shared_data, write_wfdb_record


def synthetic(seed: int, fs: float, seconds: float) -> np.ndarray:
    """(T, 12) mV at `fs`, noise-free (so its limb leads obey Einthoven's law); generated
    at 500 Hz and resampled."""
    rec = generate_record(seed, SyntheticConfig(fs=500.0, duration_s=seconds))
    x = rec.ecg_clean.astype(np.float64)
    return x if fs == 500.0 else resample(x, 500.0, fs)


def write_dat(
    path: Path, x: np.ndarray, fs: float, units: str = "mV", names=LEADS, gain: float = 1000.0
) -> Path:
    write_wfdb_record(path.parent, path.name, x, fs, names, units=units, gain=gain)
    return path.with_suffix(".hea")


def write_cinc2020_georgia(path: Path, x: np.ndarray, fs: float = 500.0) -> Path:
    """A record as the CinC 2020 Georgia release stores it: MATLAB v4 `.mat` signal, a
    header whose record line names `<name>.mat`, and a gain of 4880/mV where the ADC
    values are in units of 1/1000 mV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    val = np.round(x.T * 1000.0).astype(np.int16)  # (12, T), true gain 1000/mV
    scipy.io.savemat(path.with_suffix(".mat"), {"val": val}, format="4")
    mat = f"{path.name}.mat"
    lines = [f"{mat} 12 {fs:g} {x.shape[0]} 05-May-2020 14:50:55"]
    lines += [
        f"{mat} 16+24 4880/mV 16 0 {v} 0 0 {n}" for v, n in zip(val[:, 0], LEADS, strict=True)
    ]
    lines += ["#Age: 76", "#Dx: 426783006"]
    path.with_suffix(".hea").write_text("\n".join(lines) + "\n")
    return path.with_suffix(".hea")


def build(root: Path, data_dir: Path, config="100hz", **kwargs) -> Builder:
    builder = Builder(config=config, data_dir=str(data_dir), num_workers=1, **kwargs)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(root)))
    return builder


def examples(builder: Builder) -> dict[str, dict]:
    name = f"ecg_corpus/{builder.builder_config.name}"
    source = tfds.data_source(name, data_dir=str(builder.data_dir_root))["train"]
    out = {}
    for i in range(len(source)):
        ex = source[i]
        out[f"{ex['record'].decode()}#{int(ex['window_index'])}"] = ex
    return out


# --- Header quirks. --------------------------------------------------------------------------


def test_repair_record_line_uses_the_header_file_name():
    text = "# a comment\nE00009.mat 12 500 5000 05-May-2020 14:50:55\nE00009.mat 16+24 ...\n"
    repaired, note = repair_record_line(text, "E00009")
    assert repaired.splitlines()[1] == "E00009 12 500 5000 05-May-2020 14:50:55"
    assert repaired.splitlines()[2] == "E00009.mat 16+24 ..."  # signal lines untouched
    assert "'E00009.mat'" in note
    assert repair_record_line("E00009 12 500 5000\n", "E00009") == ("E00009 12 500 5000\n", None)
    with pytest.raises(RecordError, match="multi-segment"):
        repair_record_line("E00009/3 12 500 5000\n", "E00009")


def test_cinc2020_georgia_name_and_gain_are_corrected(tmp_path):
    x = synthetic(3, 500.0, 10.0)
    header = write_cinc2020_georgia(tmp_path / "E01234", x)
    with pytest.raises(Exception, match="record line"):
        wfdb.rdheader(str(tmp_path / "E01234"))  # what wfdb alone does with it
    read = read_record(header, "georgia/E01234")
    assert read.gain_corrected and len(read.corrections) == 2
    assert "4880/mV corrected to 1000/mV" in read.corrections[1]
    assert read.record.name == "georgia/E01234" and read.record.units == "mV"
    # Amplitudes back at the true gain, within ADC quantisation.
    np.testing.assert_allclose(read.record.signal, x, atol=1e-3)
    assert read.record.limb_lead_inconsistency < 0.02


def test_gain_rule_needs_the_georgia_name_and_every_lead_at_4880(tmp_path):
    x = synthetic(4, 500.0, 10.0)
    header = write_dat(tmp_path / "Q0001", x, 500.0, gain=4880.0)
    read = read_record(header)
    assert not read.gain_corrected and read.corrections == ()
    np.testing.assert_allclose(read.record.signal, x, atol=1e-3)


# --- Corrupt records: each a clear error naming the record, or a counted skip. ----------------


def corrupt_tree(root: Path) -> dict[str, str]:
    """One good record and four corrupt ones; returns record -> expected error pattern."""
    x = synthetic(5, 100.0, 10.0)
    write_dat(root / "good", x, 100.0)
    # A truncated .dat: the header promises 1000 samples, the file holds 400.
    write_dat(root / "truncated", x, 100.0)
    dat = (root / "truncated.dat").read_bytes()
    (root / "truncated.dat").write_bytes(dat[: 400 * 12 * 2])
    # A missing lead: V3 was never written.
    keep = [i for i, n in enumerate(LEADS) if n != "V3"]
    write_dat(root / "missing_lead", x[:, keep], 100.0, names=[LEADS[i] for i in keep])
    # NaN samples (stored as the WFDB invalid-sample value).
    y = x.copy()
    y[100:150, LEADS.index("aVL")] = np.nan
    write_dat(root / "nan_samples", y, 100.0)
    # Header rate disagreeing with the data: 10 s at 100 Hz claimed as 10 s at 50 Hz.
    write_dat(root / "wrong_rate", x, 100.0)
    hea = root / "wrong_rate.hea"
    lines = hea.read_text().splitlines()
    lines[0] = "wrong_rate 12 50 500"
    hea.write_text("\n".join(lines) + "\n")
    return {
        "truncated": r"truncated\.dat is truncated: it holds 400 of the 1000 samples",
        "missing_lead": r"missing V3",
        "nan_samples": r"50 NaN or infinite samples in leads aVL",
        "wrong_rate": r"holds 1000 samples per lead \(20\.00 s at 50 Hz\).*header gives 500 "
        r"\(10\.00 s\): the header's sampling rate or length disagrees",
    }


@pytest.fixture(scope="module")
def corrupt_root(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("corrupt")
    return root, corrupt_tree(root)


@pytest.mark.parametrize("record", ["truncated", "missing_lead", "nan_samples", "wrong_rate"])
def test_corrupt_record_error_names_the_record(corrupt_root, record):
    root, patterns = corrupt_root
    with pytest.raises(RecordError, match=rf"^corpus/{record}: .*{patterns[record]}"):
        read_record(root / f"{record}.hea", f"corpus/{record}")


def test_corrupt_records_raise_or_are_skipped_and_counted(corrupt_root, tmp_path):
    root, patterns = corrupt_root
    with pytest.raises(RecordError, match=r"missing_lead#0: .*missing V3"):
        build(root, tmp_path / "strict")
    builder = build(root, tmp_path / "skipping", skip_bad_records=True)
    failed = builder.info.metadata["records_failed"]
    assert sorted(failed) == sorted(patterns)
    for record, pattern in patterns.items():
        assert re.search(pattern, failed[record]), (record, failed[record])
    assert builder.report.written == {"train": 1}
    assert builder.info.metadata["records_built"] == 1
    assert builder.info.metadata["records_found"] == 5


# --- Windows. ---------------------------------------------------------------------------------


def test_plan_windows_hand_computed():
    config = CorpusConfig(name="t", signal=SignalConfig(PreprocessConfig(fs=100.0), 1000))
    # 28934 samples at 500 Hz = 57.9 s: five whole 10 s windows (2000 source samples each).
    spans, reason = plan_windows(500.0, 28934, config)
    assert reason is None
    assert spans == [(0, 10000), (5000, 15000), (10000, 20000), (15000, 25000), (20000, 28934)]
    capped = CorpusConfig(
        name="t", signal=SignalConfig(PreprocessConfig(fs=100.0), 1000), max_windows=2
    )
    assert plan_windows(500.0, 28934, capped)[0] == [(0, 10000), (5000, 15000)]
    # 7 s: one padded window; 3 s: below the default minimum of half a window.
    assert plan_windows(250.0, 1750, config) == ([(0, 1750)], None)
    spans, reason = plan_windows(250.0, 750, config)
    assert spans == [] and "3.00 s" in reason and "need >= 500" in reason


def test_header_length_reads_the_record_line(tmp_path):
    (tmp_path / "a.hea").write_text("# c\nE00009.mat 12 500 5000 05-May-2020\n")
    (tmp_path / "b.hea").write_text("b 12 360/1000(0)\n")
    assert header_length(tmp_path / "a.hea") == (500.0, 5000)
    assert header_length(tmp_path / "b.hea") is None


@pytest.fixture(scope="module")
def mixed_tree(tmp_path_factory) -> Path:
    """Records of several rates, lengths, units and spellings in nested folders."""
    root = tmp_path_factory.mktemp("mixed")
    write_dat(root / "a" / "long_500", synthetic(10, 500.0, 25.0), 500.0)  # 2 windows
    write_dat(root / "a" / "short_250", synthetic(11, 250.0, 7.0), 250.0)  # padded
    write_dat(root / "a" / "tiny_250", synthetic(12, 250.0, 3.0), 250.0)  # too short
    z = synthetic(13, 100.0, 10.0)
    z = (z - z.mean(axis=0)) / z.std(axis=0)
    upper = [n.upper() for n in LEADS]
    write_dat(root / "b" / "deep" / "zscored", z, 100.0, units="NU", names=upper)
    write_cinc2020_georgia(root / "c" / "E00777", synthetic(14, 500.0, 10.0))
    (root / ".hidden").mkdir()
    (root / ".hidden" / "ignored.hea").write_text("not a header\n")
    return root


def test_find_records_walks_the_tree(mixed_tree):
    names = [p.relative_to(mixed_tree).as_posix() for p in find_records(mixed_tree)]
    assert names == [
        "a/long_500.hea", "a/short_250.hea", "a/tiny_250.hea", "b/deep/zscored.hea",
        "c/E00777.hea",
    ]  # fmt: skip


def test_mixed_tree_build(mixed_tree, tmp_path):
    builder = build(mixed_tree, tmp_path)
    md = builder.info.metadata
    assert md["records_found"] == 5 and md["records_built"] == 4
    assert list(md["records_too_short"]) == ["a/tiny_250"]
    assert md["records_failed"] == {}
    assert md["records_by_units"] == {"NU": 1, "mV": 3}
    assert md["limb_lead_inconsistent_by_units"] == {"NU": 1, "mV": 0}
    assert list(md["corrections"]) == ["c/E00777"]
    got = examples(builder)
    assert sorted(got) == ["a/long_500#0", "a/long_500#1", "a/short_250#0", "b/deep/zscored#0",
                           "c/E00777#0"]  # fmt: skip
    for ex in got.values():
        assert ex["ecg"].shape == (1000, 12) and ex["ecg"].dtype == np.float32
    assert int(got["a/long_500#1"]["num_windows"]) == 2
    assert int(got["a/long_500#0"]["source_num_samples"]) == 12500
    assert float(got["a/short_250#0"]["source_fs"]) == 250.0
    # 7 s at 100 Hz: 700 samples of signal, the rest zero padding without beats.
    short = got["a/short_250#0"]
    assert int(short["valid_samples"]) == 700
    assert not np.any(short["ecg"][700:])
    peaks = short["r_peaks"][: int(short["num_beats"])]
    assert np.all((peaks >= 0) & (peaks < 700))
    assert got["b/deep/zscored#0"]["units"] == b"NU"
    assert float(got["b/deep/zscored#0"]["limb_lead_inconsistency"]) > 0.05
    georgia = got["c/E00777#0"]
    assert b"4880/mV corrected to 1000/mV" in georgia["corrections"]
    assert b"Dx: 426783006" in georgia["header_comments"]
    # The second window starts 10 s into the record: its beats are the source's beats there.
    src = synthetic(10, 500.0, 25.0)
    expected = detect_r_peaks(src, 500.0)
    expected = expected[(expected >= 5000) & (expected < 10000)] / 5.0 - 1000
    second = got["a/long_500#1"]
    found = second["r_peaks"][: int(second["num_beats"])]
    assert len(found) >= len(expected) - 1
    assert all(np.min(np.abs(expected - p)) <= 2 for p in found[1:-1])
    assert "tensorflow" not in sys.modules


# --- Real data (../shared/data/ecg_corpus). ---------------------------------------------------


def qrs_peak_to_peak(x: np.ndarray, fs: float) -> float:
    """Median over beats of the largest per-lead QRS peak-to-peak amplitude (mV)."""
    half = round(0.06 * fs)
    p2p = [np.ptp(x[max(0, r - half) : r + half], axis=0).max() for r in detect_r_peaks(x, fs)]
    return float(np.median(p2p))


def test_real_cinc2020_georgia_amplitudes_match_the_2021_release():
    root = shared_data("ecg_corpus")
    quirky = sorted((root / "awwong1_cinc2020_tests").glob("E*.hea"))
    assert [p.stem for p in quirky] == ["E00009", "E00015", "E00018", "E00793"]
    reference = [
        qrs_peak_to_peak(read_record(p).record.signal, 500.0)
        for p in sorted((root / "torch_ecg_cinc2021").glob("E*.hea"))
    ]
    lo, hi = min(reference), max(reference)
    for header in quirky:
        read = read_record(header)
        assert read.gain_corrected, header
        amplitude = qrs_peak_to_peak(read.record.signal, 500.0)
        assert lo * 0.8 <= amplitude <= hi * 1.2, (header.stem, amplitude, lo, hi)
        assert amplitude / 4.88 < 0.8 * lo  # the header's own gain would be implausibly low


def test_real_cinc2020_tests_all_read():
    root = shared_data("ecg_corpus") / "awwong1_cinc2020_tests"
    headers = find_records(root)
    assert len(headers) == 26
    for header in headers:
        rec = read_record(header).record
        assert rec.units == "mV" and rec.fs == 500.0 and rec.signal.shape[1] == 12
        assert 5000 <= rec.signal.shape[0] <= 28934
        assert rec.limb_lead_inconsistency < 0.05, header.stem


@pytest.mark.slow
def test_real_corpus_every_record_built_or_reported(tmp_path):
    root = shared_data("ecg_corpus")
    builder = Builder(config="100hz", data_dir=str(tmp_path), num_workers=2, skip_bad_records=True)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(root)))
    md = builder.info.metadata
    names = {p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.hea")}
    source = tfds.data_source("ecg_corpus/100hz", data_dir=str(tmp_path))["train"]
    built = {source[i]["record"].decode() for i in range(len(source))}
    reported = set(md["records_failed"]) | set(md["records_too_short"])
    assert built | reported == names and not built & reported
    assert md["records_found"] == len(names) == 924
    assert md["records_built"] == len(built)
    assert sorted(md["corrections"]) == [
        f"awwong1_cinc2020_tests/{r}" for r in ("E00009", "E00015", "E00018", "E00793")
    ]
    folders = md["records_by_folder"]
    assert folders["ptbxl_processed"]["records"] == 858
    # Per-lead z-scored exports all break the limb-lead relations; raw mV records do not.
    assert folders["ptbxl_processed"]["limb_lead_inconsistent"] == 858
    assert md["limb_lead_inconsistent_by_units"].get("mV", 0) == 0
    check_pipeline_batch("ecg_corpus/100hz", str(tmp_path), "train")
    assert "tensorflow" not in sys.modules
