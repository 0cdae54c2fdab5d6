"""The 3KG view: properties checked against independent formulations."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from beatssl_jax.ecg import augment, vcg
from beatssl_jax.ecg.augment import ThreeKGConfig

IDENTITY_VIEW = ThreeKGConfig(
    max_angle_deg=0.0, scale_min=1.0, scale_max=1.0, scale_invert_prob=0.0, mask_fraction=0.0
)


def _record(seed=0, t=1000):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=(t, 12)), dtype=jnp.float32)


def test_zero_angle_unit_scale_view_is_the_dower_projection_not_the_input():
    x = _record()
    view, mask = augment.three_kg_view(jax.random.key(0), x, IDENTITY_VIEW)
    assert not bool(mask.any())
    projected = x[:, list(vcg.INVERSE_DOWER_COLUMNS)] @ vcg.INVERSE_DOWER.T @ vcg.DOWER.T
    np.testing.assert_allclose(np.asarray(view), np.asarray(projected), atol=1e-4)
    assert float(jnp.abs(view - x).max()) > 0.1


def test_rotation_is_proper_and_preserves_vcg_norm():
    for seed in range(20):
        r = np.asarray(augment.random_rotation(jax.random.key(seed), 45.0), dtype=np.float64)
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-5)
        assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-5)
    v = vcg.ecg_to_vcg(_record(1))
    rotated = v @ jnp.asarray(r, jnp.float32).T
    np.testing.assert_allclose(
        np.linalg.norm(np.asarray(rotated), axis=-1), np.linalg.norm(np.asarray(v), axis=-1),
        rtol=1e-4, atol=1e-5,
    )  # fmt: skip


def test_rotation_only_view_preserves_vcg_norm_up_to_dower_rounding():
    # With S = I and no mask, Dinv . view = (Dinv . Dower) R v and Dinv . Dower ~ I to 1e-3.
    config = dataclasses.replace(IDENTITY_VIEW, max_angle_deg=45.0)
    x = _record(2)
    view, _ = augment.three_kg_view(jax.random.key(3), x, config)
    norm_in = np.linalg.norm(np.asarray(vcg.ecg_to_vcg(x)), axis=-1)
    norm_out = np.linalg.norm(np.asarray(vcg.ecg_to_vcg(view)), axis=-1)
    np.testing.assert_allclose(norm_out, norm_in, rtol=5e-3, atol=1e-3)


def test_rotation_angle_bound():
    # Each of the three rotations turns by at most max_angle, so the composition turns by at
    # most 3 x max_angle; a small bound keeps R close to the identity.
    for seed in range(10):
        r = np.asarray(augment.random_rotation(jax.random.key(seed), 2.0), dtype=np.float64)
        angle = np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1, 1)))
        assert angle <= 6.0 + 1e-3


def test_axis_rotation_matches_right_hand_rule():
    quarter = jnp.float32(np.pi / 2)
    x_hat, y_hat, z_hat = np.eye(3)
    np.testing.assert_allclose(augment.axis_rotation(0, quarter) @ y_hat, z_hat, atol=1e-6)
    np.testing.assert_allclose(augment.axis_rotation(1, quarter) @ z_hat, x_hat, atol=1e-6)
    np.testing.assert_allclose(augment.axis_rotation(2, quarter) @ x_hat, y_hat, atol=1e-6)


def test_scaling_range_and_inversion_rate():
    config = ThreeKGConfig()
    keys = jax.random.split(jax.random.key(4), 2000)
    s = np.asarray(jax.vmap(lambda k: augment.random_scaling(k, config))(keys))
    inverted = s < 1.0
    assert np.all(s[~inverted] <= 1.5 + 1e-6) and np.all(s[~inverted] >= 1.0)
    assert np.all(s[inverted] >= 1 / 1.5 - 1e-6)
    assert inverted.mean() == pytest.approx(0.5, abs=0.03)


def test_spatial_transform_composition_against_step_by_step_numpy():
    config = ThreeKGConfig()
    key = jax.random.key(5)
    spatial_key, _ = jax.random.split(key)  # the view's key -> (spatial, mask)
    rot_key, scale_key = jax.random.split(spatial_key)
    r = np.asarray(augment.random_rotation(rot_key, config.max_angle_deg), np.float64)
    s = np.asarray(augment.random_scaling(scale_key, config), np.float64)
    x = np.asarray(_record(6), np.float64)
    # Step by step on row vectors: 8 leads -> VCG -> rotate -> scale -> 12 leads.
    eight = x[:, list(vcg.INVERSE_DOWER_COLUMNS)]
    v = eight @ vcg.INVERSE_DOWER.T.astype(np.float64)
    v = (v @ r.T) * s
    expected = v @ vcg.DOWER.T.astype(np.float64)
    no_mask = dataclasses.replace(config, mask_fraction=0.0)
    view, _ = augment.three_kg_view(key, jnp.asarray(x, jnp.float32), no_mask)
    np.testing.assert_allclose(np.asarray(view), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5, 0.1])
def test_mask_fraction_and_wrapping_contiguity(fraction):
    t = 997
    config = dataclasses.replace(ThreeKGConfig(), mask_fraction=fraction)
    x = _record(7, t) + 10.0  # no exact zeros outside the mask
    for seed in range(5):
        view, mask = augment.three_kg_view(jax.random.key(seed), x, config)
        mask = np.asarray(mask)
        np.testing.assert_array_equal(mask.sum(axis=0), round(fraction * t))
        # One contiguous window on the circle: at most two changes around the loop.
        changes = (mask != np.roll(mask, 1, axis=0)).sum(axis=0)
        assert np.all(changes == (2 if fraction > 0 else 0))
        assert np.all(np.asarray(view)[mask] == 0)
        assert np.all(np.asarray(view)[~mask] != 0)


def test_some_mask_wraps_around_the_end():
    config = dataclasses.replace(ThreeKGConfig(), mask_fraction=0.5)
    masks = [
        np.asarray(augment.three_kg_view(jax.random.key(s), _record(8, 200), config)[1])
        for s in range(5)
    ]
    assert any(np.any(m[0] & m[-1]) for m in masks)


def test_same_key_same_view_and_different_keys_differ():
    x = _record(9)
    a, ma = augment.three_kg_view(jax.random.key(10), x)
    b, mb = augment.three_kg_view(jax.random.key(10), x)
    c, _ = augment.three_kg_view(jax.random.key(11), x)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(ma), np.asarray(mb))
    assert not np.allclose(np.asarray(a), np.asarray(c))


def test_batched_views_equal_per_example_views_with_split_keys():
    x = jnp.stack([_record(s, 300) for s in range(4)])
    key = jax.random.key(12)
    views, masks = augment.three_kg_views(key, x)
    for i, k in enumerate(jax.random.split(key, 4)):
        v, m = augment.three_kg_view(k, x[i])
        np.testing.assert_allclose(np.asarray(views[i]), np.asarray(v), atol=1e-6)
        np.testing.assert_array_equal(np.asarray(masks[i]), np.asarray(m))
    # Different examples get different transforms.
    assert not np.allclose(np.asarray(views[0]), np.asarray(views[1]))


def test_jit_vmap_view_does_not_recompile_across_calls():
    traces = []

    def view(key, x):
        traces.append(1)
        return augment.three_kg_view(key, x, ThreeKGConfig())

    f = jax.jit(jax.vmap(view))
    for seed in range(3):
        keys = jax.random.split(jax.random.key(seed), 8)
        out, _ = f(keys, jnp.ones((8, 500, 12), jnp.float32) * seed)
        out.block_until_ready()
    assert len(traces) == 1 and f._cache_size() == 1


def test_config_validation_and_from_config():
    with pytest.raises(ValueError, match="mask_fraction"):
        ThreeKGConfig(mask_fraction=1.0)
    with pytest.raises(ValueError, match="scale_min"):
        ThreeKGConfig(scale_min=2.0, scale_max=1.0)
    config = ThreeKGConfig.from_config({"max_angle_deg": 10.0, "unrelated": 3})
    assert config.max_angle_deg == 10.0 and config.mask_fraction == 0.25
