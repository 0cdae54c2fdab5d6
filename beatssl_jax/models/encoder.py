"""The ECG encoder f: a 1-D residual CNN over the 12 leads (METHOD.md section 6) [ours].

    x: (B, T, 12) -> stem conv (stride s0) -> stage 1 ... stage S (stride s1 ... sS)
      -> e: (B, T', C), T' = T / (s0 * s1 * ... * sS) rounded up at every strided layer

Every stage is `depth` residual blocks (two convolutions with a norm and a ReLU, and a 1x1
projection on the shortcut when the width or the length changes); the first block of a stage
carries its stride. The encoder also returns the multi-scale features a U-Net decoder skips
from: the stem output and every stage output, finest first, the last one being e.

Normalisation is GroupNorm (default) or LayerNorm, never BatchNorm. Both normalise each
example on its own, so the encoder's output for one record does not depend on the other
records of the batch, nor on how the global batch is split over devices: a data-parallel
loss equals the single-device loss on the same global batch with no cross-device
statistics, and there is no mutable `batch_stats` collection to carry through training,
checkpoints and evaluation.

Convolutions use SAME padding, so a strided layer maps length L to ceil(L / stride); encoder
step j summarises the input around samples [j * S, (j + 1) * S) with S the total stride
(`EncoderConfig.total_stride`), which is how R-peak sample positions map to steps.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

NUM_LEADS = 12
NORMS = ("group", "layer")
MIN_TOTAL_STRIDE = 8
MAX_TOTAL_STRIDE = 32


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Shape of the residual CNN. Frozen and hashable (a Flax module attribute).

    stem_width / stem_kernel / stem_stride: the first convolution.
    widths, depths, strides: one entry per stage (output channels, residual blocks, stride
      of the stage's first block).
    kernel_size: temporal kernel of the residual convolutions.
    norm: "group" (GroupNorm with `num_groups` groups) or "layer" (LayerNorm over channels);
      see the module docstring for why there is no BatchNorm.
    zero_init_residual: start every block's last norm scale at 0, so each block starts as
      the identity on its shortcut.
    dtype: computation dtype ("float32", or "bfloat16" on accelerators); parameters stay
      float32.
    """

    stem_width: int = 32
    stem_kernel: int = 15
    stem_stride: int = 2
    widths: tuple[int, ...] = (32, 64, 128)
    depths: tuple[int, ...] = (1, 1, 1)
    strides: tuple[int, ...] = (2, 2, 2)
    kernel_size: int = 7
    norm: str = "group"
    num_groups: int = 8
    zero_init_residual: bool = True
    dtype: str = "float32"

    def __post_init__(self):
        # Tuples even when built from lists (e.g. a ConfigDict), so the config stays hashable.
        for name in ("widths", "depths", "strides"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if not len(self.widths) == len(self.depths) == len(self.strides) > 0:
            raise ValueError(
                f"EncoderConfig: widths {self.widths}, depths {self.depths} and strides "
                f"{self.strides} must be non-empty and of one length (one entry per stage)"
            )
        if min(self.depths) < 1 or min(self.strides) < 1 or self.stem_stride < 1:
            raise ValueError(
                f"EncoderConfig: depths {self.depths} and strides {self.strides}, "
                f"stem_stride {self.stem_stride} must be >= 1"
            )
        if not MIN_TOTAL_STRIDE <= self.total_stride <= MAX_TOTAL_STRIDE:
            raise ValueError(
                f"EncoderConfig: total stride {self.total_stride} (stem {self.stem_stride} x "
                f"stages {self.strides}) must lie in [{MIN_TOTAL_STRIDE}, {MAX_TOTAL_STRIDE}]"
            )
        if self.norm not in NORMS:
            raise ValueError(f"EncoderConfig: norm must be one of {NORMS}, got {self.norm!r}")
        if self.norm == "group":
            bad = [w for w in (self.stem_width, *self.widths) if w % self.num_groups]
            if bad:
                raise ValueError(
                    f"EncoderConfig: widths {bad} are not divisible by num_groups {self.num_groups}"
                )

    @property
    def feature_strides(self) -> tuple[int, ...]:
        """Stride of every multi-scale feature (stem, then each stage), finest first."""
        out = [self.stem_stride]
        for s in self.strides:
            out.append(out[-1] * s)
        return tuple(out)

    @property
    def total_stride(self) -> int:
        """Input samples per step of e: the product of the stem and stage strides."""
        return self.stem_stride * math.prod(self.strides)

    @property
    def out_width(self) -> int:
        """Channels C of e."""
        return self.widths[-1]

    def feature_lengths(self, num_samples: int) -> tuple[int, ...]:
        """Length of every multi-scale feature for an input of `num_samples` samples."""
        lengths = [-(-num_samples // self.stem_stride)]
        for s in self.strides:
            lengths.append(-(-lengths[-1] // s))
        return tuple(lengths)

    def output_length(self, num_samples: int) -> int:
        """T' of e for an input of T = `num_samples` samples (ceil at every strided layer)."""
        return self.feature_lengths(num_samples)[-1]

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | Any) -> EncoderConfig:
        """A preset by name (`config.preset`, default "tiny") with any fields overridden."""
        get = config.get if hasattr(config, "get") else lambda k, d: getattr(config, k, d)
        base = encoder_preset(get("preset", "tiny"))
        names = [f.name for f in dataclasses.fields(cls)]
        return dataclasses.replace(base, **{n: get(n, getattr(base, n)) for n in names})


ENCODER_PRESETS: dict[str, EncoderConfig] = {
    # CPU and tests: 3 blocks, ~35k parameters with the projectors, total stride 16.
    "tiny": EncoderConfig(
        stem_width=16,
        stem_kernel=7,
        widths=(16, 32, 32),
        depths=(1, 1, 1),
        strides=(2, 2, 2),
        kernel_size=5,
        num_groups=4,
    ),
    # A single accelerator: 8 blocks, ~2.8M parameters, total stride 16.
    "small": EncoderConfig(
        stem_width=32,
        widths=(64, 128, 128, 256),
        depths=(2, 2, 2, 2),
        strides=(1, 2, 2, 2),
        kernel_size=7,
    ),
    # Pods: 12 blocks, 512 channels, ~14M parameters, total stride 16.
    "base": EncoderConfig(
        stem_width=64,
        widths=(64, 128, 256, 512),
        depths=(3, 3, 3, 3),
        strides=(1, 2, 2, 2),
        kernel_size=7,
        num_groups=16,
    ),
}


def encoder_preset(name: str) -> EncoderConfig:
    """The `EncoderConfig` of a size preset (`tiny`, `small`, `base`)."""
    if name not in ENCODER_PRESETS:
        raise ValueError(f"unknown encoder preset {name!r}; known: {sorted(ENCODER_PRESETS)}")
    return ENCODER_PRESETS[name]


def make_norm(config: EncoderConfig, name: str, zero_scale: bool = False) -> nn.Module:
    """A per-example normalisation layer (GroupNorm or LayerNorm) over (B, L, C) inputs."""
    scale_init = nn.initializers.zeros if zero_scale else nn.initializers.ones
    if config.norm == "group":
        return nn.GroupNorm(
            num_groups=config.num_groups, dtype=config.dtype, scale_init=scale_init, name=name
        )
    return nn.LayerNorm(dtype=config.dtype, scale_init=scale_init, name=name)


class ResidualBlock(nn.Module):
    """conv(k, stride) -> norm -> ReLU -> conv(k) -> norm, plus the shortcut, then ReLU."""

    config: EncoderConfig
    width: int
    stride: int

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        cfg = self.config
        k = (cfg.kernel_size,)
        y = nn.Conv(
            self.width,
            k,
            strides=self.stride,
            padding="SAME",
            use_bias=False,
            dtype=cfg.dtype,
            name="conv1",
        )(x)
        y = nn.relu(make_norm(cfg, "norm1")(y))
        y = nn.Conv(self.width, k, padding="SAME", use_bias=False, dtype=cfg.dtype, name="conv2")(y)
        y = make_norm(cfg, "norm2", zero_scale=cfg.zero_init_residual)(y)
        shortcut = x
        if self.stride != 1 or x.shape[-1] != self.width:
            shortcut = nn.Conv(
                self.width,
                (1,),
                strides=self.stride,
                padding="SAME",
                use_bias=False,
                dtype=cfg.dtype,
                name="shortcut",
            )(x)
            shortcut = make_norm(cfg, "shortcut_norm")(shortcut)
        return nn.relu(shortcut + y)


class Encoder(nn.Module):
    """The Beat-SSL encoder f: (B, T, 12) ECGs -> e (B, T', C) and multi-scale features.

    Returns (e, features): `features` is a tuple of (B, T_s, C_s) arrays, the stem output and
    each stage output, finest first (strides `config.feature_strides`); features[-1] is e.
    """

    config: EncoderConfig = EncoderConfig()

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> tuple[jnp.ndarray, tuple[jnp.ndarray, ...]]:
        cfg = self.config
        if x.ndim != 3 or x.shape[-1] != NUM_LEADS:
            raise ValueError(f"Encoder: expected x of shape (B, T, {NUM_LEADS}), got {x.shape}")
        h = nn.Conv(
            cfg.stem_width,
            (cfg.stem_kernel,),
            strides=cfg.stem_stride,
            padding="SAME",
            use_bias=False,
            dtype=cfg.dtype,
            name="stem_conv",
        )(x)
        h = nn.relu(make_norm(cfg, "stem_norm")(h))
        features = [h]
        for s, (width, depth, stride) in enumerate(
            zip(cfg.widths, cfg.depths, cfg.strides, strict=True)
        ):
            for b in range(depth):
                h = ResidualBlock(cfg, width, stride if b == 0 else 1, name=f"stage{s}_block{b}")(h)
            features.append(h)
        return h, tuple(features)
