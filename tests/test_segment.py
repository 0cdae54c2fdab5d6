"""The segmentation program: masked loss, frozen encoder, crops, and a short real run.

The end-to-end run (`slow`) trains on the synthetic `tiny` set (24/8/8 records, exact wave
masks) and must learn real waves: test macro F1 far above what any constant or random
labelling gets, and QRS complexes nearly perfect.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from beatssl_jax import segment, sharding
from beatssl_jax.models.decoder import DecoderConfig
from beatssl_jax.models.encoder import Encoder, encoder_preset
from configs import segment as segment_config

TINY = encoder_preset("tiny")


# ---------------------------------------------------------------------------------------------
# The loss.


def test_masked_cross_entropy_hand_computed():
    logits = jnp.zeros((1, 2, 1, 4)).at[0, 0, 0].set(jnp.array([2.0, 0.0, 0.0, 0.0]))
    labels = jnp.array([[[0], [3]]])
    annotated = jnp.array([[[True], [False]]])
    loss, count = segment.masked_cross_entropy(logits, labels, annotated)
    expected = -(2.0 - np.log(np.exp(2.0) + 3.0))  # -log softmax(logits)[0]
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
    assert int(count) == 1
    none, count = segment.masked_cross_entropy(logits, labels, jnp.zeros_like(annotated))
    assert float(none) == 0.0 and int(count) == 0


def test_samples_outside_the_annotation_contribute_nothing():
    """Relabelling (and corrupting) every unannotated sample leaves loss and gradient
    exactly unchanged."""
    k1, k2, k3, k4 = jax.random.split(jax.random.key(0), 4)
    logits = jax.random.normal(k1, (2, 64, 12, 4))
    labels = jax.random.randint(k2, (2, 64, 12), 0, 4)
    annotated = jax.random.bernoulli(k3, 0.4, (2, 64, 12))
    other = jnp.where(annotated, labels, jax.random.randint(k4, labels.shape, 0, 4))
    assert bool(jnp.any(other != labels))
    corrupted = jnp.where(annotated[..., None], logits, jnp.inf)  # non-finite outside

    def loss(lg, lb):
        return segment.masked_cross_entropy(lg, lb, annotated)[0]

    l1, g1 = jax.value_and_grad(loss)(logits, labels)
    l2, g2 = jax.value_and_grad(loss)(logits, other)
    l3 = loss(corrupted, other)
    assert float(l1) == float(l2) == float(l3)
    np.testing.assert_array_equal(np.asarray(g1), np.asarray(g2))
    assert not np.any(np.asarray(g1)[~np.asarray(annotated)])


def test_soft_dice_hand_computed_and_masked():
    """One annotated P sample predicted P with probability 1/2 (logits [0, 0, -inf, -inf]
    at one sample): Dice of P = 2 * 0.5 / (0.5 + 1); QRS and T have no true and no
    predicted mass (Dice 0, the loss's convention for an empty class)."""
    logits = jnp.array([[[[0.0, 0.0, -1e9, -1e9]], [[0.0, 9.0, 0.0, 0.0]]]])  # (1, 2, 1, 4)
    labels = jnp.array([[[1], [3]]])
    annotated = jnp.array([[[True], [False]]])
    loss = segment.masked_soft_dice(logits, labels, annotated)
    np.testing.assert_allclose(float(loss), 1.0 - (2 * 0.5 / 1.5) / 3, rtol=1e-6)
    relabelled = segment.masked_soft_dice(logits, jnp.array([[[1], [0]]]), annotated)
    assert float(relabelled) == float(loss)


# ---------------------------------------------------------------------------------------------
# Training state: the frozen encoder.


def _config(freeze: bool):
    config = segment_config.get_config("tiny")
    config.freeze_encoder = freeze
    config.warmup_steps = 1
    return config


def _train_a_few_steps(freeze: bool) -> tuple:
    config = _config(freeze)
    dec = DecoderConfig(widths=(8, 8, 8, 8), kernel_size=3, num_groups=4)
    x = jnp.zeros((1, 256, 12))
    encoder_params = jax.jit(Encoder(TINY).init)(jax.random.key(1), x)["params"]
    before = jax.tree.map(np.array, encoder_params)
    mesh = sharding.make_mesh(jax.local_devices())
    state = segment.create_train_state(config, TINY, dec, encoder_params, 256)
    decoder_before = jax.tree.map(np.array, state.params["decoder"])
    state = jax.device_put(state, sharding.replicated_sharding(mesh))
    step = segment.make_train_step(config, mesh)
    rng = np.random.default_rng(0)
    n = mesh.shape[sharding.DATA_AXIS]
    batch = {
        "ecg": rng.standard_normal((2 * n, 256, 12)).astype(np.float32),
        "wave_mask": rng.integers(0, 4, (2 * n, 256, 12)).astype(np.int8),
        "annotated": np.ones((2 * n, 256, 12), bool),
    }
    for _ in range(3):
        state, metrics = step(state, jax.device_put(batch, sharding.batch_sharding(mesh)))
    assert np.isfinite(float(metrics["loss"]))
    after = jax.tree.map(np.asarray, state.params)
    return before, decoder_before, after


def _changed(a, b) -> bool:
    return any(
        not np.array_equal(x, y)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


@pytest.mark.slow  # compiles a full train step per variant
@pytest.mark.parametrize("freeze", [True, False])
def test_frozen_encoder_is_bit_identical(freeze):
    before, decoder_before, after = _train_a_few_steps(freeze)
    assert _changed(decoder_before, after["decoder"])
    if freeze:
        for x, y in zip(jax.tree.leaves(before), jax.tree.leaves(after["encoder"]), strict=True):
            np.testing.assert_array_equal(x, y)
    else:
        assert _changed(before, after["encoder"])


def test_create_train_state_rejects_a_foreign_encoder():
    small = encoder_preset("small")
    x = jnp.zeros((1, 64, 12))
    params = jax.eval_shape(lambda: Encoder(small).init(jax.random.key(0), x)["params"])
    with pytest.raises(ValueError, match="do not have the structure"):
        segment.create_train_state(_config(False), TINY, DecoderConfig(), params, 64)


# ---------------------------------------------------------------------------------------------
# Crops.


def test_sample_batch_crops_align_fields_and_scale_the_signal():
    n, t = 5, 300
    time = np.broadcast_to(np.arange(t, dtype=np.float32)[None, :, None], (n, t, 12))
    data = {
        "ecg": np.ascontiguousarray(time + 1000.0 * np.arange(n)[:, None, None]),
        "wave_mask": np.broadcast_to((np.arange(t) % 4)[None, :, None], (n, t, 12)).astype(np.int8),
        "annotated": np.broadcast_to((np.arange(t) < 150)[None, :, None], (n, t, 12)),
    }
    batch = segment.sample_batch(
        np.random.default_rng(0), data, 64, 32, segment.Augmentation(), 500.0
    )
    assert batch["ecg"].shape == (64, 32, 12) and batch["ecg"].dtype == np.float32
    start = batch["ecg"][:, 0, 0] % 1000.0  # the crop's first sample index
    np.testing.assert_array_equal(batch["ecg"][:, :, 3] % 1000.0, start[:, None] + np.arange(32))
    idx = start[:, None].astype(int) + np.arange(32)
    np.testing.assert_array_equal(batch["wave_mask"][:, :, 0], idx % 4)
    np.testing.assert_array_equal(batch["annotated"][:, :, 0], idx < 150)
    assert start.min() >= 0 and start.max() <= t - 32
    ones = {**data, "ecg": np.ones((n, t, 12), np.float32)}
    whole = segment.Augmentation(amplitude_scale=(0.5, 2.0))
    scaled = segment.sample_batch(np.random.default_rng(0), ones, 64, 0, whole, 500.0)["ecg"]
    assert scaled.shape == (64, t, 12)
    factor = scaled[:, 0, 0]
    np.testing.assert_array_equal(scaled, np.broadcast_to(factor[:, None, None], scaled.shape))
    assert factor.min() >= 0.5 - 1e-6 and factor.max() <= 2.0 + 1e-6 and factor.std() > 0.1
    with pytest.raises(ValueError, match="exceeds"):
        segment.sample_batch(np.random.default_rng(0), data, 2, 512, segment.Augmentation(), 500.0)


def test_augmentation_lead_scale_noise_and_wander():
    rng = np.random.default_rng(1)
    ones = np.ones((256, 1000, 12), np.float32)
    per_lead = segment.Augmentation(lead_scale=(0.8, 1.25))(rng, ones, 500.0)
    factors = per_lead[:, 0, :]  # constant over time, different between leads
    np.testing.assert_allclose(per_lead, np.broadcast_to(factors[:, None, :], per_lead.shape))
    assert factors.min() >= 0.8 - 1e-6 and factors.max() <= 1.25 + 1e-6
    assert np.std(factors, axis=1).mean() > 0.05
    noisy = segment.Augmentation(noise_std=0.1)(rng, ones, 500.0) - 1.0
    stds = noisy.std(axis=(1, 2))  # one level per crop, drawn from U(0, 0.1)
    assert stds.max() <= 0.1 * 1.05 and 0.04 < stds.mean() < 0.06
    assert abs(noisy.mean()) < 1e-3
    wander = segment.Augmentation(wander=0.3)(rng, np.zeros((256, 5000, 12), np.float32), 500.0)
    amp = np.abs(wander).max(axis=1)  # per crop and lead, at most the drawn amplitude
    assert amp.max() <= 0.3 + 1e-6 and amp.mean() > 0.05
    # slow: no more than a 0.5 Hz sinusoid's steepest step between neighbouring samples
    step = np.abs(np.diff(wander, axis=1)).max()
    assert step <= 0.3 * 2 * np.pi * 0.5 / 500.0 + 1e-6
    with pytest.raises(ValueError, match="lead_scale"):
        segment.Augmentation(lead_scale=(1.2, 1.0))
    with pytest.raises(ValueError, match="noise_std"):
        segment.Augmentation(noise_std=-1.0)


def test_per_record_scores_hand_computed():
    # Two records, one lead, 10 samples, all annotated. Record "a" is predicted exactly;
    # in record "b" the QRS (samples 4-5) is predicted as samples 4-6: QRS F1 = 2*2/(2*2+1).
    true = np.zeros((2, 10, 1), np.int8)
    true[:, 1:3, 0], true[:, 4:6, 0], true[:, 7:9, 0] = 1, 2, 3
    pred = true.copy()
    pred[1, 6, 0] = 2
    data = {"wave_mask": true, "annotated": np.ones_like(true, bool)}
    scores = segment.per_record_scores(data, pred, ["a", "b"], 500.0, 150.0)
    assert scores["a"]["samplewise_macro_f1"] == pytest.approx(1.0)
    assert scores["b"]["QRS_f1"] == pytest.approx(0.8)
    assert scores["b"]["P_f1"] == pytest.approx(1.0) and scores["b"]["T_f1"] == pytest.approx(1.0)
    assert scores["b"]["samplewise_macro_f1"] == pytest.approx((1 + 0.8 + 1) / 3)


def test_config_arguments():
    assert segment_config.get_config().program == "segment"
    ludb = segment_config.get_config("ludb")
    assert (
        ludb.dataset == "ludb"
        and ludb.num_train_steps > segment_config.get_config().num_train_steps
    )
    assert ludb.crop_samples % TINY.total_stride == 0
    with pytest.raises(ValueError, match="unknown argument"):
        segment_config.get_config("nope")


# ---------------------------------------------------------------------------------------------
# End to end.


@pytest.mark.slow
def test_train_and_evaluate_learns_waves(tmp_path):
    config = segment_config.get_config("tiny")
    config.data_dir = str(tmp_path / "tfds")
    config.num_build_workers = 1
    workdir = tmp_path / "run"
    report = segment.train_and_evaluate(config, str(workdir))

    on_disk = json.loads((workdir / "metrics.json").read_text())
    assert on_disk["records"] == {"train": 24, "validation": 8, "test": 8}
    assert on_disk["provenance"]["pretrained"] == "none"
    test = report["test"]["cleaned"]
    # Chance: labelling every sample background scores F1 0 (NaN-free here: true waves
    # exist); a uniform random labelling scores F1 near 2p / (p + 4p) < 0.4 for a wave of
    # fraction p. The synthetic labels are exact, so a few hundred steps do far better.
    assert test["samplewise"]["macro_f1"] > 0.6
    assert test["samplewise"]["QRS"]["f1"] > 0.9
    assert test["boundaries"]["QRS_onset"]["f1"] > 0.9
    assert report["best_step"] in [h["step"] for h in report["validation_history"]]
    assert (workdir / "overlay_test0.png").stat().st_size > 10_000
    per_record = on_disk["test_per_record"]
    assert sorted(per_record) == sorted(f"test{i}" for i in range(8))
    assert (
        min(r["samplewise_macro_f1"] for r in per_record.values())
        <= test["samplewise"]["macro_f1"]
        <= max(r["samplewise_macro_f1"] for r in per_record.values())
    )

    # The saved model is the best step's: its predictions give the reported test scores.
    params, info = segment.load_model(workdir)
    assert info["step"] == report["best_step"]
    from beatssl_jax import downstream

    builder = downstream.prepare_dataset(config)
    data = downstream.read_split(builder, "test", segment.FIELDS)
    mesh = sharding.make_mesh(jax.local_devices())
    predict = segment.predict_fn(
        segment.EncoderConfig(**info["encoder"]), DecoderConfig(**info["decoder"])
    )
    raw = segment.predict_masks(params, predict, data, 8, mesh, info["background_offset"])
    again = segment.score(
        data, raw, segment.clean_masks(raw, 500.0, segment.cleanup_config(config)), 500.0, 150.0
    )
    assert again["cleaned"]["samplewise"]["macro_f1"] == pytest.approx(
        test["samplewise"]["macro_f1"], abs=1e-9
    )
