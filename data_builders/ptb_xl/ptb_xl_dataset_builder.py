"""ptb_xl: PTB-XL 1.0.3 with superdiagnostic labels and the recommended fold split.

Wagner et al., "PTB-XL, a large publicly available electrocardiography dataset", Scientific
Data 7, 2020 (CC-BY 4.0). Labels and folds follow METHOD.md section 7 (`labels.py`).

Source: `--manual_dir` holding the PTB-XL layout (`ptbxl_database.csv`,
`scp_statements.csv`, `records100/`, `records500/`), or else PhysioNet's 1.0.3 archive through
the download manager.

Configs: `500hz` reads `filename_hr` (records500), `100hz` reads `filename_lr` (records100);
both give 10 s records. Records are read by `data_builders.wfdb_reader.read_record` (file-size
checks, lead names in any spelling, NU kept as NU) and turned into the common fields by
`common.common_fields`.

Splits: `train` (strat_fold 1-8), `validation` (9), `test` (10). Fields beside the common
ones:
  ecg_id, patient_id (-1 when absent), strat_fold   int32
  scp_codes                  JSON text of the record's SCP codes and likelihoods
  superdiagnostic            (5,) float32 multi-hot over CD, HYP, MI, NORM, STTC
  has_superdiagnostic        bool; False: no diagnostic code (kept for pretraining)
  record                     the WFDB record's path in the PTB-XL layout
  units                      'mV', or 'NU' for records normalised before they reached us
  limb_lead_inconsistency    relative violation of Einthoven's and Goldberger's relations
Age and sex are not exposed: tables copied from releases before 1.0.3 give ages above 89
as 300.

Metadata (beside the common entries): superdiagnostic counts per split, records per
units, and how many records break the limb-lead relations beyond
`inconsistency_threshold` (per-lead z-scoring does; the VCG-based 3KG views then see
distorted leads).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

from beatssl_jax.ecg.preprocess import PreprocessConfig
from data_builders.common import EcgBuilderConfig, EcgDatasetBuilder, SignalConfig, common_fields
from data_builders.ptb_xl.labels import (
    DATABASE_CSV,
    FOLD_SPLIT,
    SPLIT_FOLDS,
    SUPERCLASSES,
    diagnostic_classes,
    read_database,
    read_statements,
    record_metadata,
)
from data_builders.wfdb_reader import (
    DEFAULT_GAIN_CORRECTIONS,
    GainCorrection,
    read_record,
)

log = logging.getLogger(__name__)

URL = (
    "https://physionet.org/static/published-projects/ptb-xl/"
    "ptb-xl-a-large-publicly-available-electrocardiography-dataset-1.0.3.zip"
)
ARCHIVE_FOLDER = "ptb-xl-a-large-publicly-available-electrocardiography-dataset-1.0.3"
FILENAME_COLUMNS = {"hr": "filename_hr", "lr": "filename_lr"}
DEFAULT_INCONSISTENCY_THRESHOLD = 0.05


@dataclasses.dataclass(eq=False)
class PtbXlConfig(EcgBuilderConfig):
    """A ptb_xl variant: which record files to read (`hr` 500 Hz, `lr` 100 Hz) and how.

    `inconsistency_threshold`: limb_lead_inconsistency above which a record is counted as
    breaking the limb-lead relations in the metadata (faithful records stay below 0.02).
    """

    records: str = "hr"
    gain_corrections: tuple[GainCorrection, ...] = DEFAULT_GAIN_CORRECTIONS
    inconsistency_threshold: float = DEFAULT_INCONSISTENCY_THRESHOLD

    def __post_init__(self):
        if self.records not in FILENAME_COLUMNS:
            raise ValueError(
                f"records must be one of {tuple(FILENAME_COLUMNS)}, got {self.records}"
            )


def _config(name: str, fs: float, records: str) -> PtbXlConfig:
    return PtbXlConfig(
        name=name,
        description=f"10 s records at {fs:g} Hz from {FILENAME_COLUMNS[records]}.",
        signal=SignalConfig(preprocess=PreprocessConfig(fs=fs), num_samples=round(10 * fs)),
        records=records,
    )


def make_example(
    task: tuple[str, dict[str, Any]],
    signal: SignalConfig,
    gain_corrections: Sequence[GainCorrection],
) -> dict[str, Any]:
    """Read one record (task = (header path, label fields)) and compute its example."""
    header, labels = task
    name = labels["record"]
    read = read_record(header, name, gain_corrections)
    rec = read.record
    fields = common_fields(rec.signal, rec.fs, signal, record=name, units=rec.units)
    return {
        **fields,
        **labels,
        "units": rec.units,
        "limb_lead_inconsistency": np.float32(rec.limb_lead_inconsistency),
    }


def find_source_root(path: Path) -> Path | None:
    """The folder holding `ptbxl_database.csv`: `path` itself or one folder below it."""
    path = Path(path)
    if (path / DATABASE_CSV).is_file():
        return path
    if (path / ARCHIVE_FOLDER / DATABASE_CSV).is_file():
        return path / ARCHIVE_FOLDER
    if path.is_dir():
        for child in sorted(path.iterdir()):
            if (child / DATABASE_CSV).is_file():
                return child
    return None


class Builder(EcgDatasetBuilder):
    """DatasetBuilder for ptb_xl (see the module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "PTB-XL 1.0.3: superdiagnostic labels (CD, HYP, MI, NORM, STTC) with any "
        "likelihood, folds 1-8 / 9 / 10, common Beat-SSL target fields.",
    }
    BUILDER_CONFIGS: ClassVar[list[PtbXlConfig]] = [
        _config("500hz", 500.0, "hr"),
        _config("100hz", 100.0, "lr"),
    ]
    DEFAULT_CONFIG_NAME = "500hz"
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Optional. Without it the builder downloads PTB-XL 1.0.3 from PhysioNet. To build "
        "from a local copy, pass --manual_dir=DIR where DIR holds ptbxl_database.csv, "
        "scp_statements.csv, records100/ and records500/ (or the extracted archive folder)."
    )

    def _extra_features(self) -> dict[str, tfds.features.FeatureConnector]:
        scalar = tfds.features.Scalar
        return {
            "ecg_id": scalar(dtype=np.int32),
            "patient_id": scalar(dtype=np.int32),
            "strat_fold": scalar(dtype=np.int32),
            "scp_codes": tfds.features.Text(),
            "superdiagnostic": tfds.features.Tensor(shape=(len(SUPERCLASSES),), dtype=np.float32),
            "has_superdiagnostic": scalar(dtype=np.bool_),
            "record": tfds.features.Text(),
            "units": tfds.features.Text(),
            "limb_lead_inconsistency": scalar(dtype=np.float32),
        }

    def _source_root(self, dl_manager: Any) -> Path:
        try:
            manual = Path(dl_manager.manual_dir)
        except (AssertionError, ValueError):
            manual = None
        root = find_source_root(manual) if manual is not None else None
        if root is not None:
            log.info("ptb_xl: reading the PTB-XL layout in %s", root)
            return root
        log.warning("ptb_xl: no PTB-XL layout in the manual dir (%s); downloading %s", manual, URL)
        extracted = Path(dl_manager.download_and_extract(URL))
        root = find_source_root(extracted)
        if root is None:
            raise FileNotFoundError(
                f"ptb_xl: no {DATABASE_CSV} in the extracted archive {extracted}"
            )
        return root

    def _split_tasks(self, dl_manager: Any) -> dict[str, list[tuple[str, Any]]]:
        root = self._source_root(dl_manager)
        table = read_database(root)
        code_to_class = diagnostic_classes(read_statements(root))
        column = FILENAME_COLUMNS[self.builder_config.records]
        tasks: dict[str, list[tuple[str, Any]]] = {split: [] for split in SPLIT_FOLDS}
        for row in table.sort_values("ecg_id").to_dict("records"):
            labels = record_metadata(row, code_to_class)
            labels["record"] = str(row[column])
            header = str(root / f"{row[column]}.hea")
            tasks[FOLD_SPLIT[labels["strat_fold"]]].append((labels["record"], (header, labels)))
        return tasks

    def _example_fn(self):
        cfg = self.builder_config
        return functools.partial(
            make_example, signal=cfg.signal, gain_corrections=cfg.gain_corrections
        )

    def _start_build(self) -> None:
        self._stats: dict[str, _SplitStats] = {}

    def _observe_example(self, split: str, example: Mapping[str, Any]) -> None:
        counts = self._stats.setdefault(split, _SplitStats())
        counts.add(example, self.builder_config.inconsistency_threshold)

    def _extra_metadata(self) -> dict[str, Any]:
        return {
            "superclasses": list(SUPERCLASSES),
            "split_folds": {split: list(folds) for split, folds in SPLIT_FOLDS.items()},
            "inconsistency_threshold": self.builder_config.inconsistency_threshold,
            "split_stats": {split: s.to_dict() for split, s in sorted(self._stats.items())},
        }


@dataclasses.dataclass
class _SplitStats:
    """Running counts over the examples of one split."""

    records: int = 0
    superdiagnostic: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    without_superdiagnostic: int = 0
    units: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    limb_lead_inconsistent: collections.Counter = dataclasses.field(
        default_factory=collections.Counter
    )

    def add(self, example: Mapping[str, Any], threshold: float) -> None:
        self.records += 1
        labels = np.asarray(example["superdiagnostic"])
        for name, value in zip(SUPERCLASSES, labels, strict=True):
            self.superdiagnostic[name] += int(value > 0)
        self.without_superdiagnostic += int(not example["has_superdiagnostic"])
        self.units[example["units"]] += 1
        if float(example["limb_lead_inconsistency"]) > threshold:
            self.limb_lead_inconsistent[example["units"]] += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "superdiagnostic": {name: self.superdiagnostic[name] for name in SUPERCLASSES},
            "without_superdiagnostic": self.without_superdiagnostic,
            "units": dict(sorted(self.units.items())),
            "limb_lead_inconsistent_by_units": dict(sorted(self.limb_lead_inconsistent.items())),
        }
