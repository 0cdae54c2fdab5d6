"""Pretraining config: `--config=configs/pretrain.py[:arg,arg...]`.

Arguments combine, separated by commas:
  tiny   a small synthetic set and short run, for tests and smoke runs.

The default dataset is the embedded `synthetic_ecg`, so the bare config runs anywhere with
no download. Every field can be overridden on the command line, e.g.
`--config.batch_size=32 --config.augment.mask_fraction=0.5`.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from beatssl_jax.ecg.augment import ThreeKGConfig
from beatssl_jax.ecg.synthetic import SyntheticConfig

ARGUMENTS = ("tiny",)


def _parse(arg: str | None) -> set[str]:
    chosen = {a.strip() for a in (arg or "").split(",") if a.strip()}
    unknown = chosen - set(ARGUMENTS)
    if unknown:
        raise ValueError(
            f"configs/pretrain.py: unknown argument(s) {sorted(unknown)}; known: {ARGUMENTS}"
        )
    return chosen


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = _parse(arg)
    config = ml_collections.ConfigDict()
    config.program = "pretrain"
    config.seed = 0

    # Data.
    config.dataset = "synthetic_ecg"
    config.data_dir = ""  # TFDS data dir; empty means the TFDS default
    config.manual_dir = ""  # source files for datasets that are not built yet
    config.fs = 500.0
    config.num_samples = 5000
    config.batch_size = 64  # global, across all devices and processes
    config.synthetic = ml_collections.ConfigDict()
    config.synthetic.num_records = 256
    config.synthetic.generator = ml_collections.ConfigDict(dataclasses.asdict(SyntheticConfig()))

    # 3KG views (METHOD.md section 3).
    config.augment = ml_collections.ConfigDict(dataclasses.asdict(ThreeKGConfig()))

    # R peaks and beats (METHOD.md sections 4-5).
    config.max_beats_per_record = 8

    # Loop.
    config.num_train_steps = 1000
    config.log_every_steps = 10
    config.checkpoint_every_steps = 200

    if "tiny" in args:
        config.synthetic.num_records = 16
        config.batch_size = 8
        config.num_train_steps = 30
        config.log_every_steps = 5
        config.checkpoint_every_steps = 10
    return config
