"""ludb: the Lobachevsky University Electrocardiography Database 1.0.1, for wave segmentation.

Source: Kalyakulina et al., IEEE Access 8, 2020; PhysioNet release 1.0.1 (ODC-By 1.0). 200
records of 10 s, 500 Hz, 12 leads, with P, QRS and T waves annotated per lead by
cardiologists (METHOD.md section 7).

Input: `--manual_dir` holding the release layout (`RECORDS`, `ludb.csv`, `data/<id>.hea`,
`.dat` and one annotation file per lead, `.i` ... `.v6`), either at its top or in one
sub-folder; without a manual dir, PhysioNet's 1.0.1 zip is downloaded and extracted. The
records built are those listed in `RECORDS`, so a partial release builds.

Signals: `records.read_wfdb(path, gain_policy="common")`. The ADC values of LUDB 1.0.1 obey
Einthoven's law exactly, but its headers give each lead its own gain; one gain for all leads
restores the relations between leads that the VCG projection relies on (see
`records.read_wfdb`). Every record must be 12 leads in mV, 10 s at 500 Hz.

Fields beside the common ones (`data_builders.common`):
  record_id   int32, the LUDB record number;
  wave_mask   (T, 12) int8, 0 background, 1 P, 2 QRS, 3 T; column k from lead k's own
              annotation file (`ecg.ludb.read_waves`): each wave covers its onset to its
              offset inclusive (its peak where a bracket is missing); waves written in time
              order, so where two touch the later one keeps the shared sample;
  annotated   (T, 12) bool, each lead's annotated span (`ecg.ludb.waves_span`, inclusive):
              LUDB leaves the record edges unannotated, so losses and metrics use only these
              samples; a lead without waves is not annotated anywhere;
  diagnoses   text, the record's `ludb.csv` diagnosis columns (rhythm, axis, conduction,
              extrasystoles, hypertrophies, pacing, ischemia, repolarisation, other), one
              statement per line;
  sex, age    from `ludb.csv` (age -1 when not a number, e.g. ">89").

Split, deterministic by record id: `test` when id % 5 == 0, `validation` when id % 5 == 1,
`train` otherwise (60 / 20 / 20 %; the full release has 120 / 40 / 40 records).
"""

from __future__ import annotations

import csv
import functools
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

from beatssl_jax.ecg.errors import RecordError
from beatssl_jax.ecg.leads import LEADS
from beatssl_jax.ecg.ludb import LUDB_FS, list_records, read_waves, waves_span
from beatssl_jax.ecg.preprocess import MILLIVOLT
from beatssl_jax.ecg.records import read_wfdb
from data_builders.common import (
    EcgBuilderConfig,
    EcgDatasetBuilder,
    SignalConfig,
    align_labels,
    common_fields,
    label_features,
)

LUDB_URL = (
    "https://physionet.org/static/published-projects/ludb/"
    "lobachevsky-university-electrocardiography-database-1.0.1.zip"
)
LUDB_DURATION_S = 10.0
LUDB_NUM_SAMPLES = round(LUDB_DURATION_S * LUDB_FS)
DIAGNOSIS_COLUMNS: tuple[str, ...] = (
    "Rhythms",
    "Electric axis of the heart",
    "Conduction abnormalities",
    "Extrasystolies",
    "Hypertrophies",
    "Cardiac pacing",
    "Ischemia",
    "Non-specific repolarization abnormalities",
    "Other states",
)
WAVE_CODES: dict[str, int] = {"p": 1, "N": 2, "t": 3}  # codes of `wave_mask`
SPLITS: tuple[str, ...] = ("train", "validation", "test")


def split_of(record_id: int) -> str:
    """The split of an LUDB record: test if id % 5 == 0, validation if 1, else train."""
    remainder = int(record_id) % 5
    return "test" if remainder == 0 else "validation" if remainder == 1 else "train"


def release_root(path: str | Path) -> Path:
    """The folder holding `RECORDS`: `path` itself or its single sub-folder that has it."""
    path = Path(path)
    if (path / "RECORDS").is_file():
        return path
    found = sorted(p.parent for p in path.glob("*/RECORDS"))
    if len(found) != 1:
        raise FileNotFoundError(
            f"{path}: expected an LUDB release (RECORDS, ludb.csv, data/) here or in one "
            f"sub-folder, found {len(found)} candidates"
        )
    return found[0]


def read_metadata(root: Path) -> dict[int, dict[str, Any]]:
    """record id -> {diagnoses, sex, age} from `<root>/ludb.csv`."""
    path = root / "ludb.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{root}: no ludb.csv in the LUDB release")
    rows = {}
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            statements = [
                line.strip()
                for column in DIAGNOSIS_COLUMNS
                for line in (row.get(column) or "").splitlines()
                if line.strip()
            ]
            age = (row.get("Age") or "").strip()
            rows[int(row["ID"])] = {
                "diagnoses": "\n".join(statements),
                "sex": (row.get("Sex") or "").strip(),
                "age": int(age) if age.isdigit() else -1,
            }
    return rows


def wave_labels(record_path: str | Path, num_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """(wave_mask (T, 12) int8, annotated (T, 12) bool) from the 12 annotation files."""
    name = Path(record_path).name
    mask = np.zeros((num_samples, len(LEADS)), np.int8)
    annotated = np.zeros((num_samples, len(LEADS)), np.bool_)
    for k, lead in enumerate(LEADS):
        waves = read_waves(record_path, lead)
        if not waves:
            continue
        first, last = waves_span(waves)
        if first < 0 or last >= num_samples:
            raise RecordError(
                name,
                f"lead {lead} annotates samples {first}..{last}, outside the signal's "
                f"{num_samples} samples",
            )
        for wave in waves:
            mask[wave.start : wave.end + 1, k] = WAVE_CODES[wave.kind]
        annotated[first : last + 1, k] = True
    return mask, annotated


def make_example(task: dict[str, Any], signal: SignalConfig) -> dict[str, Any]:
    """Read one LUDB record and its annotations and compute every field of its example."""
    name, path = task["name"], task["path"]
    rec = read_wfdb(path, gain_policy="common")
    length = rec.signal.shape[0]
    if rec.units != MILLIVOLT:
        raise RecordError(name, f"expected LUDB signals in mV, got {rec.units}")
    if rec.fs != LUDB_FS or length != LUDB_NUM_SAMPLES:
        raise RecordError(
            name,
            f"header rate {rec.fs:g} Hz with {length} samples gives {length / rec.fs:g} s; "
            f"LUDB records are {LUDB_DURATION_S:g} s at {LUDB_FS:g} Hz ({LUDB_NUM_SAMPLES} "
            "samples)",
        )
    mask, annotated = wave_labels(path, length)
    fields = common_fields(rec.signal, rec.fs, signal, record=name, units=rec.units)
    return {
        **fields,
        "record_id": task["record_id"],
        "wave_mask": align_labels(mask, rec.fs, signal, fill=0),
        "annotated": align_labels(annotated, rec.fs, signal, fill=False),
        "diagnoses": task["diagnoses"],
        "sex": task["sex"],
        "age": task["age"],
    }


class Builder(EcgDatasetBuilder):
    """DatasetBuilder for ludb (see the module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    HOMEPAGE = "https://physionet.org/content/ludb/1.0.1/"
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Initial release: LUDB 1.0.1 with one common gain per record, per-lead wave "
        "masks and annotated spans, diagnoses, split by record id mod 5.",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Optional. Place the LUDB 1.0.1 release (RECORDS, ludb.csv, data/) in manual_dir, "
        f"e.g. unzip {LUDB_URL} there. Without it the zip is downloaded."
    )
    BUILDER_CONFIGS: ClassVar[list[EcgBuilderConfig]] = [
        EcgBuilderConfig(name="default", description="500 Hz, 10 s, as released."),
    ]
    DEFAULT_CONFIG_NAME = "default"

    def _extra_features(self) -> dict[str, tfds.features.FeatureConnector]:
        return {
            **label_features(self.signal_config.num_samples),
            "record_id": tfds.features.Scalar(dtype=np.int32),
            "diagnoses": tfds.features.Text(),
            "sex": tfds.features.Text(),
            "age": tfds.features.Scalar(dtype=np.int32),
        }

    def _source_dir(self, dl_manager: Any) -> Path:
        try:
            manual = Path(dl_manager.manual_dir)
        except AssertionError:  # no manual dir given, or it is empty
            return release_root(dl_manager.download_and_extract(LUDB_URL))
        return release_root(manual)

    def _split_tasks(self, dl_manager: Any) -> dict[str, list[tuple[str, Any]]]:
        root = self._source_dir(dl_manager)
        metadata = read_metadata(root)
        tasks: dict[str, list[tuple[str, Any]]] = {split: [] for split in SPLITS}
        for path in list_records(root):
            name = path.name
            try:
                record_id = int(name)
            except ValueError as err:
                raise RecordError(name, f"RECORDS lists {path}, not a numbered record") from err
            if record_id not in metadata:
                raise RecordError(name, f"record {record_id} has no row in {root / 'ludb.csv'}")
            task = {"name": name, "path": str(path), "record_id": record_id, **metadata[record_id]}
            tasks[split_of(record_id)].append((name, task))
        return tasks

    def _example_fn(self):
        return functools.partial(make_example, signal=self.signal_config)
