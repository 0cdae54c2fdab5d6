"""What the configs share: argument parsing, dataset fields and optimiser fields.

`parse_arguments(arg, known, source)` reads the comma-separated `:arg,arg` of a config
file. `add_optimizer_fields(config, ...)` adds the fields of `pretrain.OptimizerConfig`
(AdamW, linear warm-up then cosine decay) for pretraining and segmentation.
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


def parse_arguments(arg: str | None, known: tuple[str, ...], source: str) -> set[str]:
    """The arguments of `--config=<source>:a,b`; an unknown one is an error naming them."""
    chosen = {a.strip() for a in (arg or "").split(",") if a.strip()}
    unknown = chosen - set(known)
    if unknown:
        raise ValueError(f"{source}: unknown argument(s) {sorted(unknown)}; known: {known}")
    return chosen


def add_optimizer_fields(
    config: ml_collections.ConfigDict,
    *,
    learning_rate: float,
    warmup_steps: int,
    final_lr_fraction: float,
) -> ml_collections.ConfigDict:
    """The fields `pretrain.OptimizerConfig.from_config` reads (num_train_steps aside)."""
    config.learning_rate = learning_rate
    config.warmup_steps = warmup_steps
    config.final_lr_fraction = final_lr_fraction
    config.weight_decay = 1e-4
    config.adam_b1 = 0.9
    config.adam_b2 = 0.999
    config.adam_eps = 1e-8
    config.grad_clip_norm = 1.0  # 0: no clipping
    return config
