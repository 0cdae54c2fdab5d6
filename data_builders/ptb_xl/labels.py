"""PTB-XL metadata: SCP codes, superdiagnostic labels and the fold split.

Wagner et al., "PTB-XL, a large publicly available electrocardiography dataset", Scientific
Data 7, 2020; the label protocol of Strodthoff et al., "Deep learning for ECG analysis:
benchmarks and insights from PTB-XL", IEEE JBHI 25, 2021 (METHOD.md section 7):

- superdiagnostic labels: every code in a record's `scp_codes` whose row in
  `scp_statements.csv` has `diagnostic == 1`, at any likelihood (0 included), mapped to its
  `diagnostic_class`. A record with no such code has no superdiagnostic label; it stays in
  the dataset (pretraining uses it) with `has_superdiagnostic = False`, and the
  classification task drops it.
- class order: CD, HYP, MI, NORM, STTC (alphabetical).
- folds: `strat_fold` 1-8 train, 9 validation, 10 test.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

# The class order (CD, HYP, MI, NORM, STTC) has one home, shared with the synthetic set.
from beatssl_jax.ecg.synthetic import SUPERCLASSES

SUPERCLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(SUPERCLASSES)}

# strat_fold -> split (METHOD.md section 7).
SPLIT_FOLDS: dict[str, tuple[int, ...]] = {
    "train": (1, 2, 3, 4, 5, 6, 7, 8),
    "validation": (9,),
    "test": (10,),
}
FOLD_SPLIT: dict[int, str] = {fold: split for split, folds in SPLIT_FOLDS.items() for fold in folds}

DATABASE_CSV = "ptbxl_database.csv"
STATEMENTS_CSV = "scp_statements.csv"


def parse_scp_codes(text: str, ecg_id: int | None = None) -> dict[str, float]:
    """The `scp_codes` column, a Python dict literal such as "{'NORM': 100.0, 'SR': 0.0}".

    Parsed with `ast.literal_eval` (never `eval`); values are likelihoods in percent.
    """
    where = f"ecg_id {ecg_id}" if ecg_id is not None else "scp_codes"
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError) as err:
        raise ValueError(f"{where}: scp_codes {text!r} is not a dict literal") from err
    if not isinstance(value, dict):
        raise ValueError(f"{where}: scp_codes {text!r} is not a dict")
    return {str(code): float(likelihood) for code, likelihood in value.items()}


def diagnostic_classes(statements: pd.DataFrame) -> dict[str, str]:
    """SCP code -> diagnostic class, for the statements with `diagnostic == 1`.

    `statements` is `scp_statements.csv` read with the code column as its index.
    """
    diagnostic = statements[statements["diagnostic"] == 1]
    mapping = {}
    for code, cls in diagnostic["diagnostic_class"].items():
        if not isinstance(cls, str) or cls not in SUPERCLASS_INDEX:
            raise ValueError(
                f"scp_statements.csv: diagnostic code {code!r} has class {cls!r}, "
                f"expected one of {SUPERCLASSES}"
            )
        mapping[str(code)] = cls
    return mapping


def superdiagnostic(codes: Mapping[str, float], code_to_class: Mapping[str, str]) -> np.ndarray:
    """(5,) float32 multi-hot over SUPERCLASSES: the classes of the record's diagnostic codes.

    Every diagnostic code counts whatever its likelihood, 0 included. Codes that are not
    diagnostic (form, rhythm) are ignored. All zeros means "no superdiagnostic label".
    """
    labels = np.zeros(len(SUPERCLASSES), dtype=np.float32)
    for code in codes:
        cls = code_to_class.get(code)
        if cls is not None:
            labels[SUPERCLASS_INDEX[cls]] = 1.0
    return labels


def read_statements(root: Path) -> pd.DataFrame:
    """`scp_statements.csv` with the SCP code as index."""
    return pd.read_csv(Path(root) / STATEMENTS_CSV, index_col=0)


def read_database(root: Path) -> pd.DataFrame:
    """`ptbxl_database.csv`, checked for the columns the builder uses.

    Ages are not used: in copies of the table from releases before 1.0.3, ages above 89
    read 300 (de-identification), so the column is not comparable across releases.
    """
    path = Path(root) / DATABASE_CSV
    table = pd.read_csv(path)
    needed = ("ecg_id", "patient_id", "scp_codes", "strat_fold", "filename_lr", "filename_hr")
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    if not table["ecg_id"].is_unique:
        duplicated = table["ecg_id"][table["ecg_id"].duplicated()].tolist()[:5]
        raise ValueError(f"{path}: duplicated ecg_id values, e.g. {duplicated}")
    bad_folds = sorted(set(table["strat_fold"]) - set(FOLD_SPLIT))
    if bad_folds:
        raise ValueError(f"{path}: strat_fold values outside 1-10: {bad_folds}")
    return table


def record_metadata(row: Mapping, code_to_class: Mapping[str, str]) -> dict:
    """The label fields of one database row (a mapping of column name to value).

    Returns ecg_id, patient_id (-1 when absent), strat_fold, scp_codes (JSON text with the
    codes in the CSV's order), superdiagnostic and has_superdiagnostic.
    """
    ecg_id = int(row["ecg_id"])
    codes = parse_scp_codes(row["scp_codes"], ecg_id)
    labels = superdiagnostic(codes, code_to_class)
    patient = row["patient_id"]
    has_patient = patient is not None and not (isinstance(patient, float) and math.isnan(patient))
    return {
        "ecg_id": ecg_id,
        "patient_id": int(patient) if has_patient else -1,
        "strat_fold": int(row["strat_fold"]),
        "scp_codes": json.dumps(codes),
        "superdiagnostic": labels,
        "has_superdiagnostic": bool(labels.any()),
    }
