"""Wave segmentation config: `--config=configs/segment.py[:arg,arg...]` (METHOD.md section 7).

An encoder (a pretraining run's, or a random-init one) and a fresh U-Net decoder
(`models.decoder`) are trained to label every sample of every lead as background, P, QRS or
T, with a cross-entropy over the annotated samples only; the parameters with the best
validation macro F1 (sample-wise, cleaned predictions) are scored on the test split and
saved for `python -m beatssl_jax.delineate`.

Arguments combine, separated by commas:
  ludb   the paper's setting: LUDB at 500 Hz, split by record id (builder docstring).
         Needs the PhysioNet release (or the shared copy): --config.manual_dir=DIR.
         Adds per-lead scaling, noise and baseline wander to the training crops.
         More steps than the synthetic quickstart (12-16 minutes on a 2-core CPU with
         the tiny encoder).
  tiny   the synthetic set's `tiny` config (24/8/8 records) and a short run: tests and
         smoke runs.

The encoder: `--config.pretrained=WORKDIR` (a pretraining run; its latest checkpoint is
read, never written) or `none` (random init from `seed`). `model.preset` empty means the
pretraining run's preset (tiny for `none`). `decoder.widths` needs one entry per encoder
feature: 4 for the tiny preset (stem + 3 stages), 5 for small and base.
"""

from __future__ import annotations

import ml_collections

from configs.common import add_dataset_fields, add_optimizer_fields, parse_arguments

ARGUMENTS = ("ludb", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_arguments(arg, ARGUMENTS, "configs/segment.py")
    config = ml_collections.ConfigDict()
    config.program = "segment"
    config.seed = 0  # random-init encoder, decoder init, crops and augmentation
    config.pretrained = "none"  # a pretraining workdir, or "none"

    # Data: records (T, 12) with `wave_mask` (T, 12) int8 codes and `annotated` (T, 12) bool.
    add_dataset_fields(config)
    config.train_split = "train"
    config.validation_split = "validation"  # picks the best step
    config.test_split = "test"
    config.read_threads = 4

    # Encoder.
    config.model = ml_collections.ConfigDict()
    config.model.preset = ""  # empty: the pretraining run's preset (tiny for "none")
    config.model.dtype = "float32"

    # Decoder (models.decoder.DecoderConfig): one width per encoder feature, coarse to fine
    # (the last one is the full-resolution block that also sees the raw input).
    config.decoder = ml_collections.ConfigDict()
    config.decoder.widths = (64, 64, 48, 32)
    config.decoder.kernel_size = 7
    config.decoder.num_groups = 8
    config.decoder.bottleneck_blocks = 2  # blocks at the encoder's coarsest scale

    # Training: AdamW, linear warm-up then cosine decay (pretrain.learning_rate_schedule).
    config.freeze_encoder = False  # True: the encoder's parameters are never updated
    config.encoder_learning_rate_multiplier = 1.0  # encoder lr = this x learning_rate
    config.batch_size = 16  # random crops per step (rounded to the devices)
    config.num_train_steps = 200  # the synthetic quickstart (< 2 min on 2 CPU cores)
    add_optimizer_fields(config, learning_rate=3e-3, warmup_steps=50, final_lr_fraction=0.02)
    # Loss: masked cross-entropy + dice_weight x masked soft Dice (segment.masked_soft_dice).
    config.dice_weight = 1.0
    # A random window of crop_samples (a multiple of the encoder's total stride) of a
    # random record per row; evaluation runs on whole records. 0: whole records.
    config.crop_samples = 2048
    # Augmentation of training crops (segment.Augmentation): the crop is multiplied by
    # exp(u), u ~ U(log lo, log hi), and each lead by its own factor from lead_scale; white
    # noise with std ~ U(0, noise_std) and per-lead baseline wander (0.05-0.5 Hz) with
    # amplitude ~ U(0, baseline_wander) are added, both in signal units (mV for LUDB).
    config.amplitude_scale = (0.7, 1.4)
    config.lead_scale = (1.0, 1.0)
    config.noise_std = 0.0
    config.baseline_wander = 0.0
    config.log_every_steps = 50
    config.eval_every_steps = 100  # validation macro F1; the best step's parameters are kept
    config.eval_batch_size = 16

    # Post-processing of predicted masks (ecg.delineation.CleanupConfig), applied before
    # the reported metrics; the raw predictions are scored too.
    config.cleanup = ml_collections.ConfigDict()
    config.cleanup.min_duration_ms = (20.0, 20.0, 40.0)  # P, QRS, T
    config.cleanup.max_gap_ms = 10.0
    # Offsets added to the background logit before the argmax (0: plain argmax; negative:
    # more samples labelled as waves); the one with the best validation macro F1 is used
    # for test and by delineate. () or (0.0,): no choice.
    config.background_offsets = (0.0, -0.5, -1.0, -1.5)

    # Reporting.
    config.tolerance_ms = 150.0  # boundary matching
    config.num_overlay_records = 3  # overlay_<record>.png of the first test records
    config.overlay_leads = ("II", "V1", "V5")

    if "ludb" in args:
        config.dataset = "ludb"
        config.dataset_config = "default"
        config.num_train_steps = 1500
        config.eval_every_steps = 250
        # LUDB is in mV (signal std about 0.13): noise up to 0.05 mV and wander up to
        # 0.3 mV, each lead scaled by up to x1.25 on top of the whole-crop factor.
        config.lead_scale = (0.8, 1.25)
        config.noise_std = 0.05
        config.baseline_wander = 0.3
    if "tiny" in args:
        if config.dataset == "synthetic_ecg":
            config.dataset_config = "tiny"
            config.synthetic.num_records = 24  # the size of the builder's tiny config
        config.batch_size = 8
        config.num_train_steps = 300
        config.warmup_steps = 20
        config.crop_samples = 1024
        config.log_every_steps = 25
        config.eval_every_steps = 100
        config.eval_batch_size = 8
        config.decoder.widths = (32, 32, 16, 16)
        config.decoder.num_groups = 4
        config.decoder.bottleneck_blocks = 1
        config.decoder.kernel_size = 5
        config.num_overlay_records = 1
    return config
