"""Linear-probe config: `--config=configs/linear_probe.py[:arg,arg...]` (METHOD.md section 7).

A frozen encoder (a pretraining run's, or a random-init one) gives one pooled feature
vector per record; a logistic head (one Dense layer, 5 sigmoid outputs, binary
cross-entropy) is fitted on standardised features of a fraction of the train split, its
per-class thresholds chosen on validation, and it is scored on test.

Arguments combine, separated by commas:
  ptb_xl   the paper's setting: PTB-XL at 500 Hz, folds 1-8 train, 9 validation, 10 test.
           Needs the PhysioNet release (or the shared subset): --config.manual_dir=DIR.
  tiny     the synthetic set's `tiny` config (24/8/8 records), fewer bootstrap resamples
           and fitting steps: tests and smoke runs.

The encoder: `--config.pretrained=WORKDIR` (a pretraining run; its latest checkpoint is
read, never written) or `none` (random init from `seed`, the baseline). `model.preset`
empty means the pretraining run's preset. The default dataset is the embedded
`synthetic_ecg` `n512` set that pretraining's default config also builds, so the
quickstart reuses it. Every field can be overridden on the command line, e.g.
`--config.label_fractions='(0.1, 1.0)' --config.probe.weight_decays='(0.01,)'`.
"""

from __future__ import annotations

import ml_collections

from configs.common import add_dataset_fields, parse_arguments

ARGUMENTS = ("ptb_xl", "tiny")
SUPERCLASSES = ("CD", "HYP", "MI", "NORM", "STTC")  # METHOD.md section 7, this order


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_arguments(arg, ARGUMENTS, "configs/linear_probe.py")
    config = ml_collections.ConfigDict()
    config.program = "linear_probe"
    config.seed = 0  # random-init encoder, label subsets, bootstrap resamples
    config.pretrained = "none"  # a pretraining workdir, or "none"

    # Data.
    add_dataset_fields(config)
    config.train_split = "train"
    config.validation_split = "validation"  # thresholds and weight decay are chosen here
    config.test_split = "test"
    config.label_field = "superdiagnostic"  # (C,) float32 multi-hot
    # Records where this bool field is False have no label and leave the task (counted);
    # empty: every record is labelled.
    config.label_mask_field = "has_superdiagnostic"
    config.class_names = SUPERCLASSES
    config.read_threads = 4

    # Encoder (frozen).
    config.model = ml_collections.ConfigDict()
    config.model.preset = ""  # empty: the pretraining run's preset (tiny for "none")
    config.model.dtype = "float32"
    config.pooling = "mean"  # over time of e (B, T', C): "mean" (C) or "mean_max" (2C)
    config.batch_size = 32  # feature extraction, rounded up to a multiple of the devices

    # Label fractions of the train split; each subset is a seeded random draw of
    # ceil(f * N) labelled records, topped up so every class has at least `min_positives`
    # positives when the full train split has that many (linear_probe.label_subset).
    config.label_fractions = (0.01, 0.1, 1.0)
    config.min_positives = 2

    # The logistic head, fitted full-batch on standardised features: L-BFGS (a convex
    # problem, converges in a few hundred iterations) or Adam. Loss: mean binary
    # cross-entropy + weight_decay / 2 * ||kernel||^2. With several weight decays, each is
    # fitted and the one with the best validation macro AUROC is kept.
    config.probe = ml_collections.ConfigDict()
    config.probe.optimizer = "lbfgs"  # or "adam"
    config.probe.steps = 300
    config.probe.learning_rate = 0.01  # Adam only; L-BFGS uses a line search
    config.probe.weight_decays = (1e-4, 1e-3, 1e-2, 1e-1)

    # Reporting.
    config.bootstrap_samples = 1000
    config.bootstrap_level = 0.95
    config.plots = True  # roc_<pct>.png per label fraction (test split)

    if "ptb_xl" in args:
        config.dataset = "ptb_xl"
        config.dataset_config = "500hz"
    if "tiny" in args:
        if config.dataset == "synthetic_ecg":
            config.dataset_config = "tiny"
            config.synthetic.num_records = 24  # the size of the builder's tiny config
        config.batch_size = 8
        config.bootstrap_samples = 200
        config.probe.steps = 100
    return config
