"""Models of Beat-SSL (METHOD.md section 6).

Modules:
  encoder  the 1-D residual CNN f over 12 leads: e (B, T', C) and multi-scale features;
           size presets `tiny`, `small`, `base`.
  heads    projectors g_r and g_b, RoI beat pooling around R peaks, beat visibility under
           a 3KG time mask, and `BeatSSLModel` (encoder + both heads).
  decoder  the U-Net decoder over the encoder's multi-scale features and
           `SegmentationModel` (encoder + decoder): per-sample, per-lead P/QRS/T logits.
"""

from beatssl_jax.models.decoder import DecoderConfig, SegmentationModel
from beatssl_jax.models.encoder import (
    ENCODER_PRESETS,
    Encoder,
    EncoderConfig,
    encoder_preset,
)
from beatssl_jax.models.heads import (
    BeatSSLModel,
    BeatWindowConfig,
    ModelConfig,
    Projector,
    beat_validity,
    beat_visible_fraction,
    model_config,
    roi_beat_pool,
)

__all__ = [
    "ENCODER_PRESETS",
    "BeatSSLModel",
    "BeatWindowConfig",
    "DecoderConfig",
    "Encoder",
    "EncoderConfig",
    "ModelConfig",
    "Projector",
    "SegmentationModel",
    "beat_validity",
    "beat_visible_fraction",
    "encoder_preset",
    "model_config",
    "roi_beat_pool",
]
