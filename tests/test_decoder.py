"""The U-Net decoder and SegmentationModel: shapes, parameter layout, padding, locality."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from beatssl_jax.models.decoder import (
    NUM_CLASSES,
    DecoderConfig,
    SegmentationModel,
    upsample,
)
from beatssl_jax.models.encoder import Encoder, encoder_preset

TINY = encoder_preset("tiny")
DEC = DecoderConfig(widths=(16, 16, 8, 8), kernel_size=5, num_groups=4)
apply = jax.jit(SegmentationModel(TINY, DEC).apply)


@pytest.fixture(scope="module")
def params():
    x = jnp.zeros((1, 256, 12), jnp.float32)
    return jax.jit(SegmentationModel(TINY, DEC).init)(jax.random.key(0), x)["params"]


@pytest.mark.parametrize("length", [5000, 4096, 1001])
def test_logits_have_the_input_length(params, length):
    x = jax.random.normal(jax.random.key(1), (1, length, 12))
    logits = apply({"params": params}, x)
    assert logits.shape == (1, length, 12, NUM_CLASSES)
    assert logits.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(logits)))


def test_encoder_subtree_is_the_encoders_own_params(params):
    assert set(params) == {"encoder", "decoder"}
    own = jax.jit(Encoder(TINY).init)(jax.random.key(3), jnp.zeros((1, 512, 12)))["params"]
    shapes = jax.tree.map(lambda p: p.shape, params["encoder"])
    assert jax.tree.structure(params["encoder"]) == jax.tree.structure(own)
    assert shapes == jax.tree.map(lambda p: p.shape, own)
    # A pretrained encoder drops straight in and is what the model uses.
    swapped = {"encoder": own, "decoder": params["decoder"]}
    x = jax.random.normal(jax.random.key(4), (1, 512, 12))
    a = apply({"params": swapped}, x)
    b = apply({"params": params}, x)
    assert not np.allclose(a, b)


def test_padding_does_not_change_the_real_samples_inputs(params):
    """An odd length is padded with zeros inside the model: the same as padding by hand."""
    x = jax.random.normal(jax.random.key(5), (1, 1001, 12))
    padded = jnp.pad(x, ((0, 0), (0, 1008 - 1001), (0, 0)))
    a = apply({"params": params}, x)
    b = apply({"params": params}, padded)[:, :1001]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_rows_are_independent(params):
    """GroupNorm normalises each example: a record's logits do not depend on its batch."""
    x = jax.random.normal(jax.random.key(6), (3, 512, 12))
    together = apply({"params": params}, x)
    alone = apply({"params": params}, x[1:2])
    np.testing.assert_allclose(together[1:2], alone, rtol=1e-5, atol=1e-5)


def test_raw_input_reaches_the_logits_at_full_resolution(params):
    """Changing one input sample changes the logits at that very sample (the full-resolution
    skip), not only at the encoder's coarse steps."""
    x = jax.random.normal(jax.random.key(7), (1, 512, 12))
    g = jax.jit(jax.grad(lambda v: apply({"params": params}, v)[0, 101, 0, 2]))(x)
    assert float(jnp.abs(g[0, 101]).sum()) > 0


def test_upsample_repeats_and_crops():
    h = jnp.arange(3.0).reshape(1, 3, 1)
    np.testing.assert_array_equal(upsample(h, 2, 5)[0, :, 0], [0, 0, 1, 1, 2])
    with pytest.raises(ValueError, match="cannot cover"):
        upsample(h, 2, 7)


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="not divisible by num_groups"):
        DecoderConfig(widths=(16, 10, 8, 8), num_groups=4)
    with pytest.raises(ValueError, match="needs 4 widths"):
        DecoderConfig(widths=(16, 8, 8)).check(TINY)
