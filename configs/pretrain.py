"""Pretraining config: `--config=configs/pretrain.py[:arg,arg...]`.

Arguments combine, separated by commas, applied in this order (later ones win):
  ptb_xl       the paper's setting: PTB-XL at 500 Hz, folds 1-9 (the builder's train split
               is folds 1-8 and validation fold 9; fold 10, the test fold, is never read).
               Needs the PhysioNet release: --config.manual_dir=/path/to/ptb-xl (or the
               builder downloads it).
  ecg_corpus   a folder tree of 12-lead WFDB records (--config.manual_dir=...), 500 Hz.
  small        the `small` encoder and a larger batch (one accelerator).
  base         the `base` encoder (pods).
  tiny         the tiny encoder, a small synthetic set (or the chosen dataset as is), a few
               steps and a small batch: tests and smoke runs; `ecg_corpus,tiny` keeps the
               corpus and shrinks the run.
  <preset>     a row of the paper's ablation table as the loss, e.g. `hard`, `soft1^50+hard`
               (`beatssl_jax.losses.ABLATION_PRESETS`); default the paper's best.

The default dataset is the embedded `synthetic_ecg` (a 512-record train split generated and
built on first use, ~25 s on 2 cores), so the bare config runs anywhere with no download.
Every field can be overridden on the command line, e.g. `--config.batch_size=32
--config.augment.mask_fraction=0.5 --config.loss.tau=0.2`.
"""

from __future__ import annotations

import dataclasses

import ml_collections
from ml_collections import config_dict

from beatssl_jax.ecg.augment import ThreeKGConfig
from beatssl_jax.losses import ABLATION_PRESETS, BEST_PRESET, LossConfig
from configs.common import add_dataset_fields, add_optimizer_fields, parse_arguments

DATASET_ARGUMENTS = ("ptb_xl", "ecg_corpus")
SIZE_ARGUMENTS = ("small", "base", "tiny")
ARGUMENTS = (*DATASET_ARGUMENTS, *SIZE_ARGUMENTS, *ABLATION_PRESETS)


def _parse(arg: str | None) -> set[str]:
    chosen = parse_arguments(arg, ARGUMENTS, "configs/pretrain.py")
    if len(chosen & set(DATASET_ARGUMENTS)) > 1 or len(chosen & set(ABLATION_PRESETS)) > 1:
        raise ValueError(
            f"configs/pretrain.py: choose at most one dataset {DATASET_ARGUMENTS} and one loss "
            f"preset, got {sorted(chosen)}"
        )
    return chosen


def _loss_overrides() -> ml_collections.ConfigDict:
    """`loss.preset` plus one None placeholder per LossConfig field: set one to override it."""
    loss = ml_collections.ConfigDict()
    loss.preset = BEST_PRESET
    for field in dataclasses.fields(LossConfig):
        if field.name == "ignore_beat_classes":
            loss[field.name] = config_dict.placeholder(tuple)
        else:
            loss[field.name] = config_dict.placeholder(type(field.default))
    return loss


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = _parse(arg)
    config = ml_collections.ConfigDict()
    config.program = "pretrain"
    config.seed = 0

    # Data (configs/common.py): the embedded synthetic_ecg `n512` unless an argument picks one.
    add_dataset_fields(config)
    config.train_split = "train"  # a TFDS split expression, e.g. "train+validation"
    config.batch_size = 64  # global, across all devices and processes
    config.input = ml_collections.ConfigDict()
    config.input.num_workers = 0  # grain worker processes (0: read in the training process)
    config.input.read_threads = 2
    config.input.prefetch_batches = 2

    # 3KG views (METHOD.md section 3).
    config.augment = ml_collections.ConfigDict(dataclasses.asdict(ThreeKGConfig()))

    # R peaks and beats (METHOD.md sections 4-6).
    config.max_beats_per_record = 8
    config.beat_window = ml_collections.ConfigDict()
    config.beat_window.window_ms = (-250.0, 400.0)
    config.beat_window.pooling = "mean"  # or "overlap" (RoIAlign-style weights)
    # A beat leaves the beat loss in a view that leaves less than this of its window visible.
    config.beat_window.min_visible_fraction = 0.5

    # Model (METHOD.md section 6).
    config.model = ml_collections.ConfigDict()
    config.model.preset = "tiny"  # encoder size: tiny, small, base
    config.model.dtype = "float32"  # "bfloat16" on accelerators
    config.model.projection_dim = 128
    config.model.projector_hidden_dim = 0  # 0: the encoder width
    config.model.projector_layers = 2

    # Loss (METHOD.md section 5): an ablation preset, any field overridable.
    config.loss = _loss_overrides()

    # Optimiser: AdamW, linear warm-up then cosine decay.
    add_optimizer_fields(config, learning_rate=1e-3, warmup_steps=20, final_lr_fraction=0.01)

    # Loop.
    config.num_train_steps = 150
    config.stop_at_step = 0  # > 0: save and stop there (time-boxed jobs); rerun to resume
    config.log_every_steps = 10
    config.checkpoint_every_steps = 50
    config.keep_checkpoints = 3
    config.async_checkpoints = True
    config.tensorboard = False

    if "ptb_xl" in args:
        config.dataset = "ptb_xl"
        config.dataset_config = "500hz"
        config.train_split = "train+validation"  # folds 1-9; fold 10 (test) never
        config.batch_size = 256
        config.num_train_steps = 20000
        config.warmup_steps = 1000
        config.log_every_steps = 50
        config.checkpoint_every_steps = 1000
        config.model.preset = "small"
    if "ecg_corpus" in args:
        config.dataset = "ecg_corpus"
        config.dataset_config = "500hz"
        config.train_split = "train"
        config.batch_size = 256
        config.num_train_steps = 50000
        config.warmup_steps = 2000
        config.log_every_steps = 50
        config.checkpoint_every_steps = 1000
        config.model.preset = "small"
    if "small" in args:
        config.model.preset = "small"
    if "base" in args:
        config.model.preset = "base"
        config.model.dtype = "bfloat16"
    if "tiny" in args:
        if config.dataset == "synthetic_ecg":
            config.dataset_config = "tiny"
            config.synthetic.num_records = 24  # the size of the builder's tiny config
        config.model.preset = "tiny"
        config.model.dtype = "float32"
        config.batch_size = 8
        config.num_train_steps = 30
        config.warmup_steps = 3
        config.log_every_steps = 5
        config.checkpoint_every_steps = 10
    for preset in args & set(ABLATION_PRESETS):
        config.loss.preset = preset
    return config
