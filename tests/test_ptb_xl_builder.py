"""ptb_xl builder: label protocol, fold split, reading back without TensorFlow, real data.

Fixture datasets are written by the tests (wfdb.wrsamp over synthetic records) in the
PTB-XL layout, with labels computed by hand from METHOD.md section 7.
"""

from __future__ import annotations

import ast
import csv
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow_datasets as tfds
from scipy import signal as sp_signal

import data_builders  # noqa: F401  (registers the builders)
from beatssl_jax.ecg.errors import RecordError
from beatssl_jax.ecg.leads import LEADS
from beatssl_jax.ecg.preprocess import bandpass
from beatssl_jax.ecg.synthetic import SyntheticConfig, generate_record
from data_builders.common import feature_stats
from data_builders.ptb_xl import Builder
from data_builders.ptb_xl.labels import (
    SUPERCLASSES,
    diagnostic_classes,
    parse_scp_codes,
    superdiagnostic,
)
from data_builders.ptb_xl.ptb_xl_dataset_builder import ARCHIVE_FOLDER, URL
from tests.conftest import check_pipeline_batch, shared_data, write_wfdb_record

STATEMENTS = """\
,description,diagnostic,form,rhythm,diagnostic_class,diagnostic_subclass
NORM,normal ECG,1.0,,,NORM,NORM
IMI,inferior myocardial infarction,1.0,,,MI,IMI
LVH,left ventricular hypertrophy,1.0,,,HYP,LVH
ISC_,non-specific ischemic,1.0,,,STTC,ISC_
NDT,non-diagnostic T abnormalities,1.0,1.0,,STTC,STTC
CLBBB,complete left bundle branch block,1.0,,,CD,_AVB
ABQRS,abnormal QRS,,1.0,,,
SR,sinus rhythm,,,1.0,,
"""

# ecg_id, patient_id, age, strat_fold, scp_codes, units, expected (CD, HYP, MI, NORM, STTC).
# Ages above 89 read 300 in copies from old releases; the builder must not care.
ROWS = [
    (1, 101, 56, 1, "{'NORM': 100.0, 'SR': 0.0}", "mV", (0, 0, 0, 1, 0)),
    # ABQRS is a form statement (diagnostic empty): ignored. Likelihood 15 still counts.
    (2, 102, 300, 3, "{'IMI': 15.0, 'LVH': 100.0, 'ISC_': 100.0, 'ABQRS': 0.0}", "NU",
     (0, 1, 1, 0, 1)),
    # Likelihood 0 counts too.
    (3, 103, 71, 8, "{'CLBBB': 0.0}", "mV", (1, 0, 0, 0, 0)),
    # Rhythm only: no superdiagnostic label, kept with has_superdiagnostic False.
    (4, 101, 57, 9, "{'SR': 0.0}", "NU", (0, 0, 0, 0, 0)),
    (5, 105, 44, 10, "{'NDT': 50.0, 'NORM': 0.0}", "mV", (0, 0, 0, 1, 1)),
]  # fmt: skip
SPLIT_OF_FOLD = {1: "train", 3: "train", 8: "train", 9: "validation", 10: "test"}
NU_LEADS = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
# One mV record stores its leads in a scrambled order, chest leads first.
SCRAMBLED = [6, 7, 8, 9, 10, 11, 0, 1, 2, 3, 4, 5]


def _write(path: Path, x: np.ndarray, fs: float, units: str, names: list[str]) -> None:
    write_wfdb_record(
        path.parent, path.name, x, fs, names, units=units,
        comments=["written by tests/test_ptb_xl_builder.py"],
    )  # fmt: skip


def _signal(ecg_id: int, units: str) -> np.ndarray:
    """(5000, 12) at 500 Hz: a noise-free synthetic record (its limb leads obey Einthoven's
    law), per-lead z-scored when units are NU."""
    rec = generate_record(ecg_id, SyntheticConfig(fs=500.0, duration_s=10.0))
    x = rec.ecg_clean.astype(np.float64)
    if units == "NU":
        x = (x - x.mean(axis=0)) / x.std(axis=0)
    return x


def write_layout(root: Path, missing_record: bool = False) -> dict[int, np.ndarray]:
    """A 5-record PTB-XL layout under `root`; returns the 500 Hz signals (canonical order).

    `missing_record` adds a sixth row (fold 2) whose record files do not exist.
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "scp_statements.csv").write_text(STATEMENTS)
    signals = {}
    rows = []
    for ecg_id, patient, age, fold, codes, units, _ in ROWS:
        lr = f"records100/00000/{ecg_id:05d}_lr"
        hr = f"records500/00000/{ecg_id:05d}_hr"
        x = _signal(ecg_id, units)
        signals[ecg_id] = x
        names = NU_LEADS if units == "NU" else list(LEADS)
        order = SCRAMBLED if ecg_id == 1 else list(range(12))
        stored, stored_names = x[:, order], [names[i] for i in order]
        _write(root / hr, stored, 500.0, units, stored_names)
        low = sp_signal.resample_poly(stored, 1, 5, axis=0)
        _write(root / lr, low, 100.0, units, stored_names)
        rows.append([ecg_id, float(patient), float(age), fold, codes, lr, hr])
    if missing_record:
        rows.append([6, 106.0, 60.0, 2, "{'NORM': 100.0}", "records100/00000/00006_lr",
                     "records500/00000/00006_hr"])  # fmt: skip
    with open(root / "ptbxl_database.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["ecg_id", "patient_id", "age", "strat_fold", "scp_codes", "filename_lr", "filename_hr"]
        )
        writer.writerows(rows)
    return signals


def build(root: Path, data_dir: Path, config: str = "100hz", **kwargs) -> Builder:
    builder = Builder(config=config, data_dir=str(data_dir), num_workers=1, **kwargs)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(root)))
    return builder


def read_back(data_dir: Path, config: str) -> dict[str, list[dict]]:
    sources = tfds.data_source(f"ptb_xl/{config}", data_dir=str(data_dir))
    return {split: [src[i] for i in range(len(src))] for split, src in sources.items()}


# --- Labels. -------------------------------------------------------------------------------


def test_parse_scp_codes_reads_python_dict_literals():
    assert parse_scp_codes("{'NORM': 100.0, 'SR': 0.0}") == {"NORM": 100.0, "SR": 0.0}
    assert parse_scp_codes("{}") == {}
    with pytest.raises(ValueError, match="ecg_id 7"):
        parse_scp_codes("[1, 2]", ecg_id=7)
    with pytest.raises(ValueError, match="not a dict literal"):
        parse_scp_codes("__import__('os')")


def test_superdiagnostic_matches_hand_computed_labels():
    from io import StringIO

    classes = diagnostic_classes(pd.read_csv(StringIO(STATEMENTS), index_col=0))
    assert classes == {
        "NORM": "NORM", "IMI": "MI", "LVH": "HYP", "ISC_": "STTC", "NDT": "STTC", "CLBBB": "CD",
    }  # fmt: skip
    assert SUPERCLASSES == ("CD", "HYP", "MI", "NORM", "STTC")
    for *_, codes, _, expected in ROWS:
        labels = superdiagnostic(parse_scp_codes(codes), classes)
        assert labels.dtype == np.float32
        np.testing.assert_array_equal(labels, np.array(expected, np.float32), err_msg=codes)


# --- Fixture builds. ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fixture_layout(tmp_path_factory) -> tuple[Path, dict[int, np.ndarray]]:
    root = tmp_path_factory.mktemp("ptbxl_layout")
    return root, write_layout(root)


@pytest.mark.parametrize("config, fs", [("100hz", 100.0), ("500hz", 500.0)])
def test_fixture_build_labels_splits_and_signals(fixture_layout, tmp_path, config, fs):
    root, signals = fixture_layout
    builder = build(root, tmp_path, config)
    assert builder.report.written == {"train": 3, "validation": 1, "test": 1}
    assert builder.report.skipped == {}
    splits = read_back(tmp_path, config)
    expected = {row[0]: row for row in ROWS}
    seen = set()
    num_samples = round(10 * fs)
    for split, examples in splits.items():
        for ex in examples:
            ecg_id, patient, _, fold, codes, units, labels = expected[int(ex["ecg_id"])]
            seen.add(ecg_id)
            assert SPLIT_OF_FOLD[fold] == split
            assert int(ex["strat_fold"]) == fold and int(ex["patient_id"]) == patient
            np.testing.assert_array_equal(ex["superdiagnostic"], np.array(labels, np.float32))
            assert bool(ex["has_superdiagnostic"]) == any(labels)
            assert json.loads(ex["scp_codes"]) == ast.literal_eval(codes)
            assert ex["units"].decode() == units
            suffix = "hr" if fs == 500 else "lr"
            assert ex["record"].decode().endswith(f"{ecg_id:05d}_{suffix}")
            assert ex["ecg"].shape == (num_samples, 12) and ex["ecg"].dtype == np.float32
            assert 5 <= int(ex["num_beats"]) <= 32
            # Per-lead z-scoring breaks Einthoven's law; faithful mV records keep it.
            if units == "NU":
                assert float(ex["limb_lead_inconsistency"]) > 0.05
            else:
                assert float(ex["limb_lead_inconsistency"]) < 0.02
            # Canonical lead order (record 1 was stored scrambled): every built lead
            # matches the same lead of the band-passed source best.
            source = bandpass(sp_signal.resample_poly(signals[ecg_id], round(fs), 500, axis=0), fs)
            corr = np.corrcoef(ex["ecg"].T, source[:num_samples].T)[:12, 12:]
            assert np.all(np.argmax(corr, axis=1) == np.arange(12)), ecg_id
            assert np.all(np.diag(corr) > 0.95), (ecg_id, np.diag(corr))
    assert seen == {row[0] for row in ROWS}
    stats = builder.info.metadata["split_stats"]
    assert stats["train"]["superdiagnostic"] == {"CD": 1, "HYP": 1, "MI": 1, "NORM": 1, "STTC": 1}
    assert stats["validation"]["without_superdiagnostic"] == 1
    assert stats["test"]["superdiagnostic"]["STTC"] == 1
    assert stats["train"]["units"] == {"NU": 1, "mV": 2}
    assert feature_stats(builder).names == tuple(builder.info.metadata["feature_stats"]["names"])
    assert "tensorflow" not in sys.modules


def test_missing_record_raises_with_its_name_or_is_skipped(tmp_path):
    root = tmp_path / "layout"
    write_layout(root, missing_record=True)
    with pytest.raises(RecordError, match=r"records100/00000/00006_lr.*cannot read header"):
        build(root, tmp_path / "strict")
    builder = build(root, tmp_path / "skipping", skip_bad_records=True)
    assert list(builder.report.skipped) == ["records100/00000/00006_lr"]
    assert builder.report.written == {"train": 3, "validation": 1, "test": 1}
    assert "records100/00000/00006_lr" in builder.info.metadata["skipped_records"]


class _StubDownloads:
    """A download manager without a manual dir whose archive extracts to `extracted`."""

    def __init__(self, extracted: Path):
        self.extracted = extracted
        self.urls: list[str] = []

    @property
    def manual_dir(self) -> Path:
        raise AssertionError("Manual directory does not exist or is empty.")

    def download_and_extract(self, url: str) -> Path:
        self.urls.append(url)
        return self.extracted


def test_without_a_manual_layout_the_physionet_archive_is_used(tmp_path):
    folder = tmp_path / "extracted" / ARCHIVE_FOLDER
    folder.mkdir(parents=True)
    (folder / "ptbxl_database.csv").write_text("ecg_id\n")
    downloads = _StubDownloads(tmp_path / "extracted")
    root = Builder(config="100hz", data_dir=str(tmp_path / "data"))._source_root(downloads)
    assert root == folder
    assert downloads.urls == [URL] and URL.endswith("electrocardiography-dataset-1.0.3.zip")


# --- Real data (../shared/data/ptbxl). -------------------------------------------------------


def independent_counts(root: Path) -> dict[str, dict[str, int]]:
    """Superclass counts per split from the CSVs, written apart from the builder's labels."""
    classes = {}
    with open(root / "scp_statements.csv", newline="") as f:
        for row in csv.DictReader(f):
            code = row[""]
            if row["diagnostic"] and float(row["diagnostic"]) == 1.0:
                classes[code] = row["diagnostic_class"]
    split_of = {**{k: "train" for k in range(1, 9)}, 9: "validation", 10: "test"}
    counts = {s: {c: 0 for c in (*SUPERCLASSES, "none", "records")} for s in set(split_of.values())}
    with open(root / "ptbxl_database.csv", newline="") as f:
        for row in csv.DictReader(f):
            split = split_of[int(float(row["strat_fold"]))]
            found = {classes[c] for c in ast.literal_eval(row["scp_codes"]) if c in classes}
            for c in found:
                counts[split][c] += 1
            counts[split]["none"] += not found
            counts[split]["records"] += 1
    return counts


def test_real_label_counts_match_an_independent_count():
    root = shared_data("ptbxl")
    counts = independent_counts(root)
    total = {c: sum(counts[s][c] for s in counts) for c in counts["train"]}
    # The figures published with the shared data.
    assert total == {
        "CD": 128, "HYP": 58, "MI": 83, "NORM": 262, "STTC": 152, "none": 0, "records": 509,
    }  # fmt: skip
    assert counts["test"]["records"] == 63
    # The builder's label functions over the same tables.
    classes = diagnostic_classes(pd.read_csv(root / "scp_statements.csv", index_col=0))
    table = pd.read_csv(root / "ptbxl_database.csv")
    labels = np.stack([superdiagnostic(parse_scp_codes(s), classes) for s in table["scp_codes"]])
    assert dict(zip(SUPERCLASSES, labels.sum(axis=0).astype(int).tolist(), strict=True)) == {
        c: total[c] for c in SUPERCLASSES
    }


@pytest.mark.slow
def test_real_build_reads_back_without_tensorflow(tmp_path):
    root = shared_data("ptbxl")
    builder = Builder(config="100hz", data_dir=str(tmp_path), num_workers=2)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(root)))
    assert builder.report.skipped == {}
    counts = independent_counts(root)
    stats = builder.info.metadata["split_stats"]
    sources = tfds.data_source("ptb_xl/100hz", data_dir=str(tmp_path))
    for split, source in sources.items():
        assert len(source) == counts[split]["records"], split
        assert stats[split]["superdiagnostic"] == {c: counts[split][c] for c in SUPERCLASSES}
        labels = np.stack([source[i]["superdiagnostic"] for i in range(len(source))])
        assert labels.sum(axis=0).astype(int).tolist() == [counts[split][c] for c in SUPERCLASSES]
    test = sources["test"]
    assert {int(test[i]["strat_fold"]) for i in range(len(test))} == {10}
    check_pipeline_batch("ptb_xl/100hz", str(tmp_path), "train")
    units = {u: sum(stats[s]["units"].get(u, 0) for s in stats) for u in ("mV", "NU")}
    # Raw records (header comment "raw PTB-XL record") against per-lead z-scored ones.
    raw = sum("raw PTB-XL record" in p.read_text() for p in (root / "records100").rglob("*.hea"))
    assert units == {"mV": raw, "NU": 509 - raw}
    assert "tensorflow" not in sys.modules
