"""Projections between the 12-lead ECG and the 3D Frank vectorcardiogram (VCG).

Dower et al. (1980) give the 12 leads as a linear image of the Frank X, Y, Z leads; the
inverse Dower transform (Edenbrandt and Pahlm, 1988) estimates X, Y, Z from the eight
independent leads V1-V6, I, II. The coefficients are those used by 3KG (Gopal et al. 2021,
arXiv 2106.04452) and listed in METHOD.md section 3.

`vcg_to_ecg(ecg_to_vcg(x))` is a rank-3 projection of the 12 leads, not the identity.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from beatssl_jax.ecg.leads import LEAD_INDEX

# Input order of the inverse Dower matrix: the eight independent leads.
INVERSE_DOWER_LEADS: tuple[str, ...] = ("V1", "V2", "V3", "V4", "V5", "V6", "I", "II")
INVERSE_DOWER_COLUMNS: tuple[int, ...] = tuple(LEAD_INDEX[n] for n in INVERSE_DOWER_LEADS)

# (3, 8): rows X, Y, Z; columns V1..V6, I, II.
INVERSE_DOWER = np.array(
    [
        [-0.172, -0.074, 0.122, 0.231, 0.239, 0.194, 0.156, -0.010],
        [0.057, -0.019, -0.106, -0.022, 0.041, 0.048, -0.227, 0.887],
        [-0.229, -0.310, -0.246, -0.063, 0.055, 0.108, 0.022, 0.102],
    ],
    dtype=np.float32,
)

# (12, 3): rows in the canonical lead order I, II, III, aVR, aVL, aVF, V1..V6; columns X, Y, Z.
DOWER = np.array(
    [
        [0.632, -0.235, 0.059],   # I
        [0.235, 1.066, -0.132],   # II
        [-0.397, 1.301, -0.191],  # III
        [-0.434, -0.415, 0.037],  # aVR
        [0.515, -0.768, 0.125],   # aVL
        [-0.081, 1.184, -0.162],  # aVF
        [-0.515, 0.157, -0.917],  # V1
        [0.044, 0.164, -1.387],   # V2
        [0.882, 0.098, -1.277],   # V3
        [1.213, 0.127, -0.601],   # V4
        [1.125, 0.127, -0.086],   # V5
        [0.831, 0.076, 0.230],    # V6
    ],
    dtype=np.float32,
)  # fmt: skip


def inverse_dower_12() -> np.ndarray:
    """The inverse Dower transform as a (3, 12) matrix over the canonical lead order.

    Columns of the derived leads (III, aVR, aVL, aVF) are zero: the transform reads only the
    eight independent leads.
    """
    full = np.zeros((3, 12), dtype=np.float32)
    full[:, list(INVERSE_DOWER_COLUMNS)] = INVERSE_DOWER
    return full


def ecg_to_vcg(x: jnp.ndarray) -> jnp.ndarray:
    """12-lead ECG (..., T, 12), canonical order -> Frank VCG (..., T, 3) by inverse Dower."""
    if x.shape[-1] != 12:
        raise ValueError(f"ecg_to_vcg expects 12 leads on the last axis, got shape {x.shape}")
    return jnp.asarray(x) @ jnp.asarray(inverse_dower_12().T, dtype=x.dtype)


def vcg_to_ecg(v: jnp.ndarray) -> jnp.ndarray:
    """Frank VCG (..., T, 3) -> 12-lead ECG (..., T, 12), canonical order, by Dower."""
    if v.shape[-1] != 3:
        raise ValueError(f"vcg_to_ecg expects X, Y, Z on the last axis, got shape {v.shape}")
    return jnp.asarray(v) @ jnp.asarray(DOWER.T, dtype=v.dtype)
