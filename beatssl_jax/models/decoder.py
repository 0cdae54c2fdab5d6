"""A U-Net decoder over the encoder's multi-scale features, for per-lead wave segmentation.

    x: (B, T, 12) -> pad T to a multiple of the encoder's total stride S
      -> Encoder -> features f_0 (stride s_0) ... f_K = e (stride S), finest first
      -> h = f_K -> `bottleneck_blocks` x block(widths[0]) at stride S (more context per
         step: each block widens the receptive field by 2 (kernel - 1) S samples)
      -> for k = K-1 .. 0: h = up(h, s_{k+1} / s_k) ++ f_k -> block(widths[K-1-k])
      -> h = up(h, s_0) ++ x (the raw input: a full-resolution skip, which sharpens the
         boundaries the strided features blur) -> block(widths[-1])
      -> Dense(12 * 4) -> logits (B, T, 12, 4), cropped back to the input's T

`up` repeats every step r times (nearest neighbour) and crops to the skip's length, so the
encoder's ceil lengths line up with their skips; `block` is two convolutions, each followed
by GroupNorm and a ReLU (the per-example normalisation of the encoder, see
`models.encoder`). The four classes per sample and lead are the codes of
`ecg.delineation`: 0 background, 1 P, 2 QRS, 3 T.

`SegmentationModel(encoder_config, decoder_config)` holds the two halves under the names
`encoder` and `decoder`, so its parameters are {"encoder": ..., "decoder": ...} and the
encoder subtree has exactly the structure of `Encoder(cfg).init(...)["params"]`: a
pretrained encoder (`downstream.load_encoder`) drops straight in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from beatssl_jax.models.encoder import NUM_LEADS, Encoder, EncoderConfig

NUM_CLASSES = 4  # background, P, QRS, T


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """Shape of the U-Net decoder. Frozen and hashable (a Flax module attribute).

    widths: output channels of each decoder block, coarse to fine: one block per skip
      (len(encoder features) - 1 of them, `EncoderConfig.feature_strides` minus the
      coarsest), then one at full resolution. Length len(encoder.feature_strides).
    kernel_size: temporal kernel of the decoder's convolutions.
    num_groups: GroupNorm groups; every width must be divisible by it.
    bottleneck_blocks: blocks at the coarsest scale before the first upsampling.
    dtype: computation dtype; parameters stay float32 and logits are float32.
    """

    widths: tuple[int, ...] = (32, 32, 32, 32)
    kernel_size: int = 5
    num_groups: int = 4
    bottleneck_blocks: int = 0
    dtype: str = "float32"

    def __post_init__(self):
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"DecoderConfig: widths {self.widths} must be non-empty and >= 1")
        bad = [w for w in self.widths if w % self.num_groups]
        if bad:
            raise ValueError(
                f"DecoderConfig: widths {bad} are not divisible by num_groups {self.num_groups}"
            )
        if self.bottleneck_blocks < 0:
            raise ValueError(
                f"DecoderConfig: bottleneck_blocks must be >= 0, got {self.bottleneck_blocks}"
            )
        if self.kernel_size < 1:
            raise ValueError(f"DecoderConfig: kernel_size must be >= 1, got {self.kernel_size}")

    def check(self, encoder: EncoderConfig) -> None:
        """Raise ValueError unless there is one width per encoder feature."""
        need = len(encoder.feature_strides)
        if len(self.widths) != need:
            raise ValueError(
                f"DecoderConfig: widths {self.widths} has {len(self.widths)} entries; the "
                f"encoder has {need} features (strides {encoder.feature_strides}), so the "
                f"decoder needs {need} widths ({need - 1} skips and the full-resolution block)"
            )

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | Any) -> DecoderConfig:
        """A DecoderConfig from a ConfigDict / mapping with (some of) its fields."""
        get = config.get if hasattr(config, "get") else lambda k, d: getattr(config, k, d)
        base = cls()
        names = [f.name for f in dataclasses.fields(cls)]
        return dataclasses.replace(base, **{n: get(n, getattr(base, n)) for n in names})


def upsample(h: jnp.ndarray, ratio: int, length: int) -> jnp.ndarray:
    """(B, L, C) -> (B, length, C): every step repeated `ratio` times, cropped to `length`."""
    if ratio > 1:
        h = jnp.repeat(h, ratio, axis=1)
    if h.shape[1] < length:
        raise ValueError(
            f"upsample: {h.shape[1]} steps after x{ratio} cannot cover a skip of {length}"
        )
    return h[:, :length]


class DecoderBlock(nn.Module):
    """Two (conv -> GroupNorm -> ReLU) layers: (B, L, C_in) -> (B, L, width)."""

    config: DecoderConfig
    width: int

    @nn.compact
    def __call__(self, h: jnp.ndarray) -> jnp.ndarray:
        cfg = self.config
        for i in range(2):
            h = nn.Conv(
                self.width,
                (cfg.kernel_size,),
                padding="SAME",
                use_bias=False,
                dtype=cfg.dtype,
                name=f"conv{i + 1}",
            )(h)
            h = nn.GroupNorm(num_groups=cfg.num_groups, dtype=cfg.dtype, name=f"norm{i + 1}")(h)
            h = nn.relu(h)
        return h


class UNetDecoder(nn.Module):
    """Encoder features (finest first) and the input x -> logits (B, T, 12, NUM_CLASSES).

    x: (B, T, 12) with T a multiple of the encoder's total stride (SegmentationModel pads).
    """

    encoder_config: EncoderConfig
    config: DecoderConfig = DecoderConfig()

    @nn.compact
    def __call__(self, x: jnp.ndarray, features: tuple[jnp.ndarray, ...]) -> jnp.ndarray:
        cfg = self.config
        cfg.check(self.encoder_config)
        strides = self.encoder_config.feature_strides
        if len(features) != len(strides):
            raise ValueError(f"UNetDecoder: {len(features)} features for encoder strides {strides}")
        h = features[-1]
        for i in range(cfg.bottleneck_blocks):
            h = DecoderBlock(cfg, cfg.widths[0], name=f"bottleneck{i}")(h)
        for level, k in enumerate(range(len(features) - 2, -1, -1)):
            skip = features[k]  # (B, T / strides[k], C_k)
            h = upsample(h, strides[k + 1] // strides[k], skip.shape[1])
            h = jnp.concatenate([h, skip.astype(h.dtype)], axis=-1)
            h = DecoderBlock(cfg, cfg.widths[level], name=f"up{level}")(h)
        h = upsample(h, strides[0], x.shape[1])  # (B, T, widths[-2])
        h = jnp.concatenate([h, x.astype(h.dtype)], axis=-1)
        h = DecoderBlock(cfg, cfg.widths[-1], name="full")(h)
        logits = nn.Dense(NUM_LEADS * NUM_CLASSES, dtype=cfg.dtype, name="logits")(h)
        b, t = x.shape[:2]
        return logits.reshape(b, t, NUM_LEADS, NUM_CLASSES).astype(jnp.float32)


class SegmentationModel(nn.Module):
    """Encoder + U-Net decoder: x (B, T, 12), any T -> logits (B, T, 12, NUM_CLASSES).

    T is zero-padded at the end to a multiple of the encoder's total stride and the logits
    are cropped back to T, so every skip has exactly the length its upsampled path has.
    """

    encoder_config: EncoderConfig
    decoder_config: DecoderConfig = DecoderConfig()

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        if x.ndim != 3 or x.shape[-1] != NUM_LEADS:
            raise ValueError(
                f"SegmentationModel: expected x of shape (B, T, {NUM_LEADS}), got {x.shape}"
            )
        t = x.shape[1]
        missing = (-t) % self.encoder_config.total_stride
        xp = jnp.pad(x, ((0, 0), (0, missing), (0, 0))) if missing else x  # (B, T_pad, 12)
        _, features = Encoder(self.encoder_config, name="encoder")(xp)
        logits = UNetDecoder(self.encoder_config, self.decoder_config, name="decoder")(xp, features)
        return logits[:, :t]
