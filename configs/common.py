"""Config fields every program that reads a dataset shares (pretraining and downstream).

`add_dataset_fields(config)` adds the dataset's name and builder config, where it is built
(`data_dir`) and read from (`manual_dir`), the record shape, and the knobs of the embedded
`synthetic_ecg` set (built on first use from `synthetic`, so a bare config runs anywhere).
"""

from __future__ import annotations

import dataclasses

import ml_collections

from beatssl_jax.ecg.synthetic import SyntheticConfig

SYNTHETIC_RECORDS = 512


def add_dataset_fields(
    config: ml_collections.ConfigDict,
    dataset: str = "synthetic_ecg",
    dataset_config: str = f"n{SYNTHETIC_RECORDS}",
) -> ml_collections.ConfigDict:
    config.dataset = dataset
    # The builder config; for synthetic_ecg a name the builder does not define is made from
    # `synthetic` below (num_records train records, a tenth of that for validation and test).
    config.dataset_config = dataset_config
    config.data_dir = ""  # TFDS data dir; empty means the TFDS default
    config.manual_dir = ""  # source files for datasets that are not built yet
    config.num_build_workers = 0  # 0: all cores
    config.fs = 500.0
    config.num_samples = 5000
    config.synthetic = ml_collections.ConfigDict()
    config.synthetic.num_records = SYNTHETIC_RECORDS
    config.synthetic.generator = ml_collections.ConfigDict(dataclasses.asdict(SyntheticConfig()))
    return config
