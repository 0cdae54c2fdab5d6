"""The Dower / inverse-Dower matrices and projections, against METHOD.md and physics."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from beatssl_jax.ecg import vcg
from beatssl_jax.ecg.leads import LEAD_INDEX, LEADS
from tests.conftest import SHARED_DATA

METHOD_MD = SHARED_DATA.parent / "docs" / "METHOD.md"


def _method_section_3() -> str:
    if not METHOD_MD.is_file():
        pytest.skip(f"{METHOD_MD} is absent: cannot compare against the written specification")
    text = METHOD_MD.read_text()
    return text[text.index("## 3.") : text.index("## 4.")]


def test_inverse_dower_matches_method_md():
    section = _method_section_3()
    rows = {}
    for axis in "XYZ":
        match = re.search(rf"^{axis}:((?:\s+-?\d\.\d+){{8}})", section, flags=re.M)
        rows[axis] = [float(v) for v in match.group(1).split()]
    expected = np.array([rows["X"], rows["Y"], rows["Z"]])
    np.testing.assert_array_equal(vcg.INVERSE_DOWER, expected.astype(np.float32))


def test_dower_matches_method_md():
    section = _method_section_3()
    found = {}
    for name in LEADS:
        match = re.search(rf"(?<![\w]){name}\s+(-?\d\.\d+)\s+(-?\d\.\d+)\s+(-?\d\.\d+)", section)
        found[name] = [float(v) for v in match.groups()]
    expected = np.array([found[n] for n in LEADS], dtype=np.float32)
    np.testing.assert_array_equal(vcg.DOWER, expected)


def test_dower_rows_obey_einthoven_and_goldberger():
    # Limb leads are linear combinations of I and II; the Dower rows must be too.
    d = {n: vcg.DOWER[LEAD_INDEX[n]].astype(np.float64) for n in LEADS}
    np.testing.assert_allclose(d["III"], d["II"] - d["I"], atol=1e-3)
    np.testing.assert_allclose(d["aVR"], -(d["I"] + d["II"]) / 2, atol=1e-3)
    np.testing.assert_allclose(d["aVL"], d["I"] - d["II"] / 2, atol=1e-3)
    np.testing.assert_allclose(d["aVF"], d["II"] - d["I"] / 2, atol=1e-3)


def test_inverse_dower_is_the_pseudo_inverse_of_the_independent_dower_rows():
    rows = vcg.DOWER[list(vcg.INVERSE_DOWER_COLUMNS)].astype(np.float64)
    np.testing.assert_allclose(np.linalg.pinv(rows), vcg.INVERSE_DOWER, atol=1.5e-3)
    np.testing.assert_allclose(vcg.INVERSE_DOWER @ rows, np.eye(3), atol=1e-3)


def test_inverse_dower_reads_only_independent_leads():
    full = vcg.inverse_dower_12()
    for name in ("III", "aVR", "aVL", "aVF"):
        assert np.all(full[:, LEAD_INDEX[name]] == 0)
    x = np.random.default_rng(0).normal(size=(50, 12)).astype(np.float32)
    by_hand = x[:, [LEAD_INDEX[n] for n in vcg.INVERSE_DOWER_LEADS]] @ vcg.INVERSE_DOWER.T
    np.testing.assert_allclose(np.asarray(vcg.ecg_to_vcg(jnp.asarray(x))), by_hand, atol=1e-5)


def test_round_trip_recovers_a_dipole_signal():
    # A 12-lead signal made by a dipole lies in the Dower column space: VCG -> ECG -> VCG
    # returns the dipole up to the 3-decimal rounding of the coefficients.
    v = np.random.default_rng(1).normal(size=(7, 100, 3)).astype(np.float32)
    back = vcg.ecg_to_vcg(vcg.vcg_to_ecg(jnp.asarray(v)))
    np.testing.assert_allclose(np.asarray(back), v, atol=5e-3 * np.abs(v).max())


def test_projection_is_not_identity_on_general_ecg():
    x = jnp.asarray(np.random.default_rng(2).normal(size=(100, 12)), dtype=jnp.float32)
    projected = vcg.vcg_to_ecg(vcg.ecg_to_vcg(x))
    assert float(jnp.linalg.norm(projected - x)) > 0.5 * float(jnp.linalg.norm(x))
    # ... but applying it twice changes little more (near-idempotent projection).
    twice = vcg.vcg_to_ecg(vcg.ecg_to_vcg(projected))
    np.testing.assert_allclose(np.asarray(twice), np.asarray(projected), atol=2e-2)


def test_shape_errors():
    with pytest.raises(ValueError, match="12 leads"):
        vcg.ecg_to_vcg(jnp.zeros((10, 8)))
    with pytest.raises(ValueError, match="X, Y, Z"):
        vcg.vcg_to_ecg(jnp.zeros((10, 4)))


def test_jit_vmap_does_not_recompile_for_same_shape():
    traces = []

    def both(x):
        traces.append(x.shape)
        return vcg.vcg_to_ecg(vcg.ecg_to_vcg(x))

    f = jax.jit(jax.vmap(both))
    rng = np.random.default_rng(3)
    for _ in range(3):
        out = f(jnp.asarray(rng.normal(size=(4, 500, 12)), dtype=jnp.float32))
        out.block_until_ready()
    assert len(traces) == 1
    assert f._cache_size() == 1
    f(jnp.zeros((2, 500, 12), jnp.float32))
    assert len(traces) == 2  # a new shape does trace again: the counter can fail.
