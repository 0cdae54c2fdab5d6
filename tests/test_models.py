"""Encoder shapes and strides, RoI beat pooling, beat visibility, the pretraining model."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from beatssl_jax.models import (
    ENCODER_PRESETS,
    BeatSSLModel,
    BeatWindowConfig,
    Encoder,
    EncoderConfig,
    ModelConfig,
    beat_validity,
    beat_visible_fraction,
    model_config,
    roi_beat_pool,
)


@pytest.mark.parametrize("preset", sorted(ENCODER_PRESETS))
def test_encoder_shapes_and_total_stride(preset):
    cfg = ENCODER_PRESETS[preset]
    assert 8 <= cfg.total_stride <= 32
    x = jnp.zeros((2, 1000, 12))
    params = jax.eval_shape(Encoder(cfg).init, jax.random.key(0), x)
    e, features = jax.eval_shape(Encoder(cfg).apply, params, x)
    assert e.shape == (2, -(-1000 // cfg.total_stride), cfg.out_width)
    assert cfg.output_length(1000) == e.shape[1]
    assert len(features) == len(cfg.widths) + 1 and features[-1].shape == e.shape
    for f, stride, width in zip(
        features, cfg.feature_strides, (cfg.stem_width, *cfg.widths), strict=True
    ):
        assert f.shape == (2, -(-1000 // stride), width)
    assert cfg.feature_strides[-1] == cfg.total_stride


def test_tiny_encoder_runs_and_is_batch_independent():
    # GroupNorm normalises each record on its own: a record's features do not depend on
    # the rest of the batch (so a data-parallel split of the batch cannot change them).
    cfg = ENCODER_PRESETS["tiny"]
    x = jax.random.normal(jax.random.key(1), (3, 400, 12))
    enc = Encoder(cfg)
    params = jax.jit(enc.init)(jax.random.key(0), x)
    apply = jax.jit(enc.apply)
    e, _ = apply(params, x)
    alone, _ = apply(params, x[1:2])
    assert e.shape == (3, 25, cfg.out_width)
    assert np.all(np.isfinite(e))
    np.testing.assert_allclose(alone[0], e[1], rtol=1e-5, atol=1e-5)
    assert "batch_stats" not in params


def test_encoder_config_checks():
    with pytest.raises(ValueError, match="total stride 4"):
        EncoderConfig(stem_stride=1, strides=(2, 2, 1))
    with pytest.raises(ValueError, match="one length"):
        EncoderConfig(widths=(32, 64), depths=(1, 1, 1))
    with pytest.raises(ValueError, match="num_groups"):
        EncoderConfig(widths=(30, 64, 128))
    cfg = EncoderConfig.from_config({"preset": "small", "norm": "layer", "strides": [1, 2, 2, 4]})
    assert cfg.norm == "layer" and cfg.strides == (1, 2, 2, 4) and cfg.total_stride == 32
    hash(cfg)


def test_roi_pooling_against_hand_computed_means():
    # fs = 1000 Hz so 1 ms = 1 sample; window [R - 8, R + 12); stride 4; 40 samples, 10 steps.
    window = BeatWindowConfig(fs=1000.0, window_ms=(-8.0, 12.0))
    e = jnp.arange(2 * 10 * 3, dtype=jnp.float32).reshape(2, 10, 3) ** 1.5
    r = jnp.array([[20, 2, -1], [38, 0, 17]])
    pooled, has = roi_beat_pool(e, r, num_samples=40, stride=4, window=window)
    en = np.asarray(e)
    expected = np.stack(
        [
            # R = 20: samples [12, 32) meet steps 3..7 ([12, 16) ... [28, 32)).
            [en[0, 3:8].mean(0), en[0, 0:4].mean(0), np.zeros(3)],
            # R = 38: [30, 40) (clipped) meets steps 7..9; R = 0: [0, 12) meets steps 0..2;
            # R = 17: [9, 29) meets steps 2..7.
            [en[1, 7:10].mean(0), en[1, 0:3].mean(0), en[1, 2:8].mean(0)],
        ]
    )
    # R = 2: [-6, 14) clipped to [0, 14) meets steps 0..3.
    np.testing.assert_allclose(pooled, expected, rtol=1e-6)
    np.testing.assert_array_equal(has, [[True, True, False], [True, True, True]])

    overlap = dataclasses.replace(window, pooling="overlap")
    pooled, _ = roi_beat_pool(e, r, num_samples=40, stride=4, window=overlap)
    # R = 2: samples [0, 14) put 4, 4, 4, 2 samples in steps 0..3.
    want = (4 * en[0, 0] + 4 * en[0, 1] + 4 * en[0, 2] + 2 * en[0, 3]) / 14
    np.testing.assert_allclose(pooled[0, 1], want, rtol=1e-6)
    # R = 17: [9, 29) puts 3, 4, 4, 4, 4, 1 samples in steps 2..7.
    w = np.array([3, 4, 4, 4, 4, 1.0])
    np.testing.assert_allclose(pooled[1, 2], (w[:, None] * en[1, 2:8]).sum(0) / 20, rtol=1e-6)


def test_beat_visible_fraction_by_hand():
    window = BeatWindowConfig(fs=1000.0, window_ms=(-5.0, 5.0), min_visible_fraction=0.5)
    mask = np.zeros((1, 50, 12), bool)
    mask[0, 10:20, :6] = True  # half the leads hidden over [10, 20)
    mask[0, 30:40, :] = True  # every lead hidden over [30, 40)
    r = jnp.array([[15, 35, 40, 2, -1]])
    frac = beat_visible_fraction(jnp.asarray(mask), r, window)
    # [10, 20): half hidden; [30, 40): all; [35, 45): half the window; [0, 7): clipped, clear.
    np.testing.assert_allclose(frac, [[0.5, 0.0, 0.5, 1.0, 0.0]], atol=1e-6)
    valid = beat_validity(r, jnp.asarray(mask), window)
    np.testing.assert_array_equal(valid, [[True, False, True, True, False]])
    np.testing.assert_array_equal(beat_validity(r, None, window), [[True] * 4 + [False]])


def test_beat_ssl_model_forward_and_params():
    cfg = model_config("tiny", projection_dim=16, beat_window=BeatWindowConfig(fs=100.0))
    model = BeatSSLModel(cfg)
    x = jax.random.normal(jax.random.key(2), (2, 320, 12))
    r = jnp.array([[50, 150, 250, -1], [40, -1, -1, -1]])
    params = jax.jit(model.init)(jax.random.key(0), x, r)
    assert set(params["params"]) == {"encoder", "rhythm_projector", "beat_projector"}
    apply = jax.jit(model.apply)
    out = apply(params, x, r)
    assert out["z_rhythm"].shape == (2, 16) and out["z_beat"].shape == (2, 4, 16)
    assert out["z_rhythm"].dtype == jnp.float32
    np.testing.assert_array_equal(out["has_window"], r >= 0)
    # The encoder alone, with the encoder's parameters, gives the same feature map.
    e, _ = jax.jit(Encoder(cfg.encoder).apply)({"params": params["params"]["encoder"]}, x)
    np.testing.assert_allclose(e, out["e"], rtol=1e-5, atol=1e-6)
    # Padded slots pool nothing: all of them project the same zero vector.
    np.testing.assert_allclose(out["z_beat"][1, 1], out["z_beat"][1, 3], rtol=1e-6)


def test_model_config_from_mapping():
    cfg = ModelConfig.from_config(
        {
            "encoder": {"preset": "base", "dtype": "bfloat16"},
            "beat_window": {"window_ms": [-200, 300], "pooling": "overlap"},
            "projection_dim": 64,
        }
    )
    assert cfg.encoder.widths == ENCODER_PRESETS["base"].widths
    assert cfg.encoder.dtype == "bfloat16"
    assert cfg.beat_window.window_ms == (-200.0, 300.0) and cfg.beat_window.offsets == (-100, 150)
    assert cfg.projection_dim == 64 and cfg.hidden_dim == 512
    hash(cfg)
    with pytest.raises(ValueError, match="pooling"):
        BeatWindowConfig(pooling="max")
