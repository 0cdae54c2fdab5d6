"""Projection heads and RoI beat pooling of Beat-SSL (METHOD.md sections 1 and 6).

    e: (B, T', C) from the encoder
      -> mean over T'                         -> rhythm projector g_r -> z_r: (B, D)
      -> RoI beat pooling around each R peak  -> beat projector g_b   -> z_b: (B, K, D)

RoI beat pooling [ours]. Beat k of a record with R peak r (a sample index, -1 for padding)
owns the sample window [r + round(w0 * fs / 1000), r + round(w1 * fs / 1000)), w0, w1 =
`window_ms` (default -250 ms, +400 ms), clipped to the record. Encoder step j stands for the
samples [j * S, (j + 1) * S), S the encoder's total stride. The beat's pooled vector is a
weighted mean of e over the steps that meet its window:
  "mean"     equal weights on every step that overlaps the window (a masked mean);
  "overlap"  weights proportional to the number of window samples in each step, so partly
             covered edge steps count less (an exact 1-D RoIAlign with box interpolation).
Shapes stay static: every record has K beat slots; a padded slot gets all-zero weights, a
zero pooled vector and `has_window` False.

Masked beats [ours, METHOD.md section 3]. A 3KG view zeroes one contiguous stretch per lead;
`beat_visible_fraction` is the fraction of (sample, lead) pairs of a beat's window that the
view left unmasked, and `beat_validity` keeps the real beats whose fraction reaches
`min_visible_fraction`. The train step passes that validity to the beat loss, so mostly
masked beats leave it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from beatssl_jax.models.encoder import Encoder, EncoderConfig, encoder_preset

POOLINGS = ("mean", "overlap")


@dataclasses.dataclass(frozen=True)
class BeatWindowConfig:
    """Where a beat lies around its R peak and how it is pooled (see the module docstring).

    fs: sampling rate of the input, Hz.
    window_ms: (start, stop) of the beat window relative to the R peak, ms.
    pooling: "mean" or "overlap".
    min_visible_fraction: a beat whose window is less visible than this in a 3KG view
      leaves the beat loss.
    """

    fs: float = 500.0
    window_ms: tuple[float, float] = (-250.0, 400.0)
    pooling: str = "mean"
    min_visible_fraction: float = 0.5

    def __post_init__(self):
        object.__setattr__(self, "window_ms", tuple(float(v) for v in self.window_ms))
        if self.fs <= 0:
            raise ValueError(f"BeatWindowConfig: fs must be positive, got {self.fs}")
        if len(self.window_ms) != 2 or not self.window_ms[0] < self.window_ms[1]:
            raise ValueError(
                f"BeatWindowConfig: need window_ms (start < stop), got {self.window_ms}"
            )
        if self.pooling not in POOLINGS:
            raise ValueError(
                f"BeatWindowConfig: pooling must be one of {POOLINGS}, got {self.pooling!r}"
            )
        if not 0 <= self.min_visible_fraction <= 1:
            raise ValueError(
                f"BeatWindowConfig: min_visible_fraction must be in [0, 1], "
                f"got {self.min_visible_fraction}"
            )

    @property
    def offsets(self) -> tuple[int, int]:
        """The window's (start, stop) offsets from the R peak in samples."""
        return tuple(round(ms * self.fs / 1000.0) for ms in self.window_ms)


def beat_window_samples(
    r_peaks: jnp.ndarray, num_samples: int, window: BeatWindowConfig
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(start, stop) sample bounds (B, K) of every beat window, clipped to [0, num_samples].

    Padded beats (r < 0) get the empty window start = stop = 0.
    """
    lo, hi = window.offsets
    real = r_peaks >= 0
    start = jnp.where(real, jnp.clip(r_peaks + lo, 0, num_samples), 0)
    stop = jnp.where(real, jnp.clip(r_peaks + hi, 0, num_samples), 0)
    return start, jnp.maximum(start, stop)


def beat_step_weights(
    r_peaks: jnp.ndarray,
    num_samples: int,
    num_steps: int,
    stride: int,
    window: BeatWindowConfig,
) -> jnp.ndarray:
    """Pooling weights (B, K, T') of every beat over the encoder steps; rows sum to 1 or 0.

    Step j covers samples [j * stride, (j + 1) * stride); see the module docstring for the
    two poolings. A padded beat, or a window that meets no step, has an all-zero row.
    """
    start, stop = beat_window_samples(r_peaks, num_samples, window)
    step_lo = jnp.arange(num_steps) * stride  # (T',)
    step_hi = step_lo + stride
    overlap = jnp.minimum(step_hi, stop[..., None]) - jnp.maximum(step_lo, start[..., None])
    overlap = jnp.maximum(overlap, 0).astype(jnp.float32)  # (B, K, T') samples in common
    weights = overlap if window.pooling == "overlap" else (overlap > 0).astype(jnp.float32)
    total = weights.sum(axis=-1, keepdims=True)
    return weights / jnp.maximum(total, 1.0)


def roi_beat_pool(
    e: jnp.ndarray,
    r_peaks: jnp.ndarray,
    num_samples: int,
    stride: int,
    window: BeatWindowConfig,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """RoI beat pooling: e (B, T', C) and R peaks (B, K) -> pooled (B, K, C), has_window (B, K).

    `num_samples` is the input length T the R peaks index into, `stride` the encoder's
    total stride. has_window is True for real beats whose window meets at least one step.
    """
    weights = beat_step_weights(r_peaks, num_samples, e.shape[1], stride, window)
    pooled = jnp.einsum("bkt,btc->bkc", weights.astype(e.dtype), e)
    return pooled, weights.sum(axis=-1) > 0


def beat_visible_fraction(
    view_mask: jnp.ndarray, r_peaks: jnp.ndarray, window: BeatWindowConfig
) -> jnp.ndarray:
    """Fraction (B, K) of each beat window left unmasked by a 3KG view, over all leads.

    view_mask: (B, T, L) bool, True where the view zeroed a sample (`three_kg_views`).
    The window is clipped to the record; padded beats get 0.
    """
    num_samples = view_mask.shape[1]
    visible = jnp.mean(~view_mask, axis=-1, dtype=jnp.float32)  # (B, T) fraction of leads
    cumulative = jnp.concatenate(
        [jnp.zeros_like(visible[:, :1]), jnp.cumsum(visible, axis=1)], axis=1
    )  # (B, T + 1)
    start, stop = beat_window_samples(r_peaks, num_samples, window)
    inside = jnp.take_along_axis(cumulative, stop, axis=1) - jnp.take_along_axis(
        cumulative, start, axis=1
    )
    length = (stop - start).astype(jnp.float32)
    return jnp.where(length > 0, inside / jnp.maximum(length, 1.0), 0.0)


def beat_validity(
    r_peaks: jnp.ndarray, view_mask: jnp.ndarray | None, window: BeatWindowConfig
) -> jnp.ndarray:
    """(B, K) bool: real beats (r >= 0) visible enough in the view to join the beat loss.

    With `view_mask` None (no time mask) every real beat is valid.
    """
    real = r_peaks >= 0
    if view_mask is None:
        return real
    return real & (beat_visible_fraction(view_mask, r_peaks, window) >= window.min_visible_fraction)


class Projector(nn.Module):
    """An MLP projector: (Dense -> ReLU) x (num_layers - 1) -> Dense(out_dim), in float32."""

    hidden_dim: int
    out_dim: int
    num_layers: int = 2

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = x.astype(jnp.float32)
        for i in range(self.num_layers - 1):
            x = nn.relu(nn.Dense(self.hidden_dim, name=f"hidden{i}")(x))
        return nn.Dense(self.out_dim, name="out")(x)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The pretraining model: encoder, projectors g_r and g_b, RoI beat pooling.

    projection_dim: D of z_r and z_b (128 [peer: 3KG]).
    projector_hidden_dim: hidden width of both projectors; 0 means the encoder width C.
    projector_layers: Dense layers per projector (>= 1).
    """

    encoder: EncoderConfig = dataclasses.field(default_factory=lambda: encoder_preset("tiny"))
    projection_dim: int = 128
    projector_hidden_dim: int = 0
    projector_layers: int = 2
    beat_window: BeatWindowConfig = BeatWindowConfig()

    def __post_init__(self):
        if self.projection_dim < 1 or self.projector_layers < 1 or self.projector_hidden_dim < 0:
            raise ValueError(
                f"ModelConfig: need projection_dim >= 1 ({self.projection_dim}), "
                f"projector_layers >= 1 ({self.projector_layers}), "
                f"projector_hidden_dim >= 0 ({self.projector_hidden_dim})"
            )

    @property
    def hidden_dim(self) -> int:
        return self.projector_hidden_dim or self.encoder.out_width

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | Any) -> ModelConfig:
        """From a mapping / ConfigDict: `encoder` (with `preset` and overrides, see
        `EncoderConfig.from_config`), `beat_window` (BeatWindowConfig fields) and the
        projector fields; anything absent takes its default."""
        get = config.get if hasattr(config, "get") else lambda k, d: getattr(config, k, d)
        enc = EncoderConfig.from_config(get("encoder", None) or {})
        win_cfg = get("beat_window", None) or {}
        win_get = win_cfg.get if hasattr(win_cfg, "get") else lambda k, d: getattr(win_cfg, k, d)
        default_win = BeatWindowConfig()
        window = BeatWindowConfig(
            **{
                f.name: win_get(f.name, getattr(default_win, f.name))
                for f in dataclasses.fields(BeatWindowConfig)
            }
        )
        defaults = cls()
        scalars = ("projection_dim", "projector_hidden_dim", "projector_layers")
        return cls(
            encoder=enc,
            beat_window=window,
            **{n: get(n, getattr(defaults, n)) for n in scalars},
        )


def model_config(preset: str = "tiny", **overrides: Any) -> ModelConfig:
    """A `ModelConfig` with the encoder of a size preset (`tiny`, `small`, `base`)."""
    return ModelConfig(encoder=encoder_preset(preset), **overrides)


class BeatSSLModel(nn.Module):
    """Encoder f with the rhythm head (g_r) and the beat head (RoI pooling, g_b).

    Parameters live under `encoder`, `rhythm_projector` and `beat_projector`, so the
    downstream programs take `params["encoder"]` for an `Encoder` of the same config.
    """

    config: ModelConfig = ModelConfig()

    def setup(self):
        cfg = self.config
        self.encoder = Encoder(cfg.encoder)
        self.rhythm_projector = Projector(cfg.hidden_dim, cfg.projection_dim, cfg.projector_layers)
        self.beat_projector = Projector(cfg.hidden_dim, cfg.projection_dim, cfg.projector_layers)

    def __call__(self, x: jnp.ndarray, r_peaks: jnp.ndarray) -> dict[str, Any]:
        """x: (B, T, 12), r_peaks: (B, K) int sample indices (-1 padded). Returns a dict:

        z_rhythm (B, D), z_beat (B, K, D) (float32, not normalised), has_window (B, K)
        bool, e (B, T', C) and features (the encoder's multi-scale features).
        """
        e, features = self.encoder(x)
        z_rhythm = self.rhythm_projector(jnp.mean(e, axis=1))
        pooled, has_window = roi_beat_pool(
            e, r_peaks, x.shape[1], self.config.encoder.total_stride, self.config.beat_window
        )
        z_beat = self.beat_projector(pooled)
        return {
            "z_rhythm": z_rhythm,
            "z_beat": z_beat,
            "has_window": has_window,
            "e": e,
            "features": features,
        }
