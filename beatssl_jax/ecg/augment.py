"""The 3KG view: a random spatial transform in the VCG domain plus a wrapping time mask.

Gopal et al., "3KG: Contrastive Learning of 12-Lead Electrocardiograms using
Physiologically-Inspired Augmentations", 2021 (arXiv 2106.04452); METHOD.md section 3.

A view of a (T, 12) record x is

    x' = mask(Dower . S . R . Dinv . x)

- Dinv projects the eight independent leads to the Frank VCG (3, T), Dower maps it back.
- R rotates about X, Y and Z by angles from U(-max_angle, +max_angle), composed in a random
  axis order.
- S scales X, Y and Z by factors from U(scale_min, scale_max), each inverted with
  probability `scale_invert_prob`.
- mask zeroes, per lead, one contiguous window of round(mask_fraction * T) samples starting
  at a uniform position and wrapping around the end of the record.

The spatial part is one (12, 12) matrix per example, so a view costs one small matmul. All
randomness comes from the key, one key per example, so a view is reproducible from it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from beatssl_jax.ecg.vcg import DOWER, inverse_dower_12


@dataclasses.dataclass(frozen=True)
class ThreeKGConfig:
    """Ranges of the 3KG view. Frozen and hashable, so it can be a static jit argument."""

    max_angle_deg: float = 45.0
    scale_min: float = 1.0
    scale_max: float = 1.5
    scale_invert_prob: float = 0.5
    mask_fraction: float = 0.25

    def __post_init__(self):
        if self.max_angle_deg < 0:
            raise ValueError(f"max_angle_deg must be >= 0, got {self.max_angle_deg}")
        if not 0 < self.scale_min <= self.scale_max:
            raise ValueError(
                f"need 0 < scale_min <= scale_max, got {self.scale_min}, {self.scale_max}"
            )
        if not 0 <= self.scale_invert_prob <= 1:
            raise ValueError(f"scale_invert_prob must be in [0, 1], got {self.scale_invert_prob}")
        if not 0 <= self.mask_fraction < 1:
            raise ValueError(f"mask_fraction must be in [0, 1), got {self.mask_fraction}")

    @classmethod
    def from_config(cls, config: Any) -> ThreeKGConfig:
        """Build from any mapping or ConfigDict holding (a subset of) these field names."""
        names = [f.name for f in dataclasses.fields(cls)]
        get = config.get if hasattr(config, "get") else lambda k, d: getattr(config, k, d)
        defaults = cls()
        return cls(**{n: get(n, getattr(defaults, n)) for n in names})


def axis_rotation(axis: int, angle: jnp.ndarray) -> jnp.ndarray:
    """(3, 3) right-handed rotation by `angle` (radians) about X (0), Y (1) or Z (2)."""
    c, s = jnp.cos(angle), jnp.sin(angle)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    m = jnp.eye(3, dtype=angle.dtype)
    return m.at[i, i].set(c).at[j, j].set(c).at[i, j].set(-s).at[j, i].set(s)


def random_rotation(key: jax.Array, max_angle_deg: float) -> jnp.ndarray:
    """Rotations about X, Y, Z by U(-max, +max) angles, composed in a random axis order."""
    angle_key, order_key = jax.random.split(key)
    max_rad = math.radians(max_angle_deg)
    angles = jax.random.uniform(angle_key, (3,), minval=-max_rad, maxval=max_rad)
    per_axis = jnp.stack([axis_rotation(a, angles[a]) for a in range(3)])  # (3, 3, 3)
    order = jax.random.permutation(order_key, 3)
    # The axis order[0] is applied first: R = R[order[2]] @ R[order[1]] @ R[order[0]].
    return per_axis[order[2]] @ per_axis[order[1]] @ per_axis[order[0]]


def random_scaling(key: jax.Array, config: ThreeKGConfig) -> jnp.ndarray:
    """(3,) per-axis factors from U(scale_min, scale_max), each inverted with probability p."""
    value_key, invert_key = jax.random.split(key)
    factors = jax.random.uniform(value_key, (3,), minval=config.scale_min, maxval=config.scale_max)
    invert = jax.random.bernoulli(invert_key, config.scale_invert_prob, (3,))
    return jnp.where(invert, 1.0 / factors, factors)


def spatial_transform(key: jax.Array, config: ThreeKGConfig) -> jnp.ndarray:
    """The (12, 12) matrix Dower . S . R . Dinv of one view, acting on column vectors."""
    rot_key, scale_key = jax.random.split(key)
    rotation = random_rotation(rot_key, config.max_angle_deg)
    scaling = random_scaling(scale_key, config)
    dower = jnp.asarray(DOWER)
    dinv = jnp.asarray(inverse_dower_12())
    return dower @ (scaling[:, None] * rotation) @ dinv


def wrapping_time_mask(key: jax.Array, num_samples: int, fraction: float) -> jnp.ndarray:
    """(T, 12) bool, True on one contiguous window per lead of round(fraction * T) samples.

    Each lead's window starts at a uniform position and wraps around the end of the record.
    """
    length = round(fraction * num_samples)
    starts = jax.random.randint(key, (12,), 0, num_samples)
    t = jnp.arange(num_samples)[:, None]
    return jnp.mod(t - starts[None, :], num_samples) < length


def three_kg_view(
    key: jax.Array, x: jnp.ndarray, config: ThreeKGConfig = ThreeKGConfig()
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """One 3KG view of one record.

    Args:
      key: a PRNG key for this example.
      x: (T, 12) record in the canonical lead order.
      config: the ranges.
    Returns:
      view: (T, 12), the transformed record with masked samples set to zero.
      mask: (T, 12) bool, True where a sample was masked (zeroed).
    """
    spatial_key, mask_key = jax.random.split(key)
    transform = spatial_transform(spatial_key, config).astype(x.dtype)
    mask = wrapping_time_mask(mask_key, x.shape[-2], config.mask_fraction)
    view = x @ transform.T
    return jnp.where(mask, jnp.zeros((), x.dtype), view), mask


def three_kg_views(
    key: jax.Array, x: jnp.ndarray, config: ThreeKGConfig = ThreeKGConfig()
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """3KG views of a batch x: (B, T, 12), one key per example split from `key`.

    Returns views (B, T, 12) and masks (B, T, 12) bool.
    """
    keys = jax.random.split(key, x.shape[0])
    return jax.vmap(three_kg_view, in_axes=(0, 0, None))(keys, x, config)
