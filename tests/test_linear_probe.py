"""The linear probe: the head on features with a known answer, label subsets, whole runs."""

from __future__ import annotations

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from beatssl_jax import checkpointing, classify, downstream, linear_probe, metrics
from beatssl_jax.ecg.leads import LEADS
from beatssl_jax.ecg.synthetic import SyntheticConfig, generate_record
from beatssl_jax.models.encoder import Encoder, encoder_preset
from configs.linear_probe import get_config
from tests.conftest import write_wfdb_record

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------
# The logistic head.


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_head_recovers_a_linear_signal(optimizer):
    # Class k is [x_k > 0]: a linear rule the head can express exactly.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 24)).astype(np.float32)
    y = (x[:, :5] > 0).astype(np.int32)
    head, losses = linear_probe.fit_logistic_head(
        x[:2000], y[:2000], weight_decay=1e-3, steps=300, optimizer=optimizer, learning_rate=0.05
    )
    assert head["kernel"].shape == (24, 5) and head["bias"].shape == (5,)
    assert losses[-1] < losses[0]
    p = linear_probe.predict_proba(head, x[2000:])
    assert np.all((p >= 0) & (p <= 1))
    for k in range(5):
        assert metrics.auroc(y[2000:, k], p[:, k]) > 0.95
    # The weight of feature k dominates class k's column.
    assert np.all(np.argmax(np.abs(head["kernel"]), axis=0) == np.arange(5))


def test_head_on_noise_labels_is_at_chance():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6000, 24)).astype(np.float32)
    y = rng.integers(0, 2, size=(6000, 5))
    head, _ = linear_probe.fit_logistic_head(x[:3000], y[:3000], weight_decay=1e-2, steps=200)
    p = linear_probe.predict_proba(head, x[3000:])
    aurocs = [metrics.auroc(y[3000:, k], p[:, k]) for k in range(5)]
    # The AUROC of a useless score on 3000 records has SD ~ 0.011 around 0.5.
    assert all(abs(a - 0.5) < 0.05 for a in aurocs), aurocs


def test_weight_decay_shrinks_the_kernel():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((500, 8)).astype(np.float32)
    y = (x[:, :5] > 0).astype(np.int32)
    norms = [
        np.linalg.norm(
            linear_probe.fit_logistic_head(x, y, weight_decay=wd, steps=200)[0]["kernel"]
        )
        for wd in (1e-4, 1e-1, 10.0)
    ]
    assert norms[0] > norms[1] > norms[2]


def test_pooling_shapes_and_values():
    e = jnp.arange(2 * 3 * 4, dtype=jnp.float32).reshape(2, 3, 4)  # (B, T', C)
    np.testing.assert_allclose(linear_probe.pool_features(e, "mean"), np.asarray(e).mean(1))
    mm = linear_probe.pool_features(e, "mean_max")
    assert mm.shape == (2, 8)
    np.testing.assert_allclose(mm[:, 4:], np.asarray(e)[:, -1, :])
    with pytest.raises(ValueError, match="pooling"):
        linear_probe.pool_features(e, "attention")


def test_standardisation_maps_train_features_to_zero_mean_unit_sd():
    rng = np.random.default_rng(3)
    f = rng.normal(5.0, 3.0, size=(400, 6)).astype(np.float32)
    f[:, 2] = 7.0  # a constant dimension
    mean, std = linear_probe.standardisation(f)
    z = (f - mean) / std
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(np.delete(z.std(0), 2), 1.0, atol=1e-4)
    assert np.all(z[:, 2] == 0.0)


# ---------------------------------------------------------------------------------------------
# Label fractions.


def _labels(n: int, prevalence: tuple[float, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((n, len(prevalence))) < np.asarray(prevalence)).astype(np.int32)


@pytest.mark.parametrize("fraction,expected", [(0.01, 10), (0.1, 100), (0.25, 250), (1.0, 1000)])
def test_label_subset_size_without_top_up(fraction, expected):
    y = _labels(1000, (0.5, 0.5, 0.5, 0.5, 0.5))
    idx, added = linear_probe.label_subset(y, fraction, seed=0, min_positives=1)
    assert added == 0  # at 50 % prevalence every class has positives in 10 records here
    assert idx.size == expected == math.ceil(fraction * 1000)
    assert len(np.unique(idx)) == idx.size and idx.min() >= 0 and idx.max() < 1000


def test_label_subset_rounds_up():
    y = _labels(37, (0.5,) * 5)
    idx, _ = linear_probe.label_subset(y, 0.1, seed=0, min_positives=0)
    assert idx.size == 4  # ceil(3.7)


def test_label_subset_deterministic_per_seed_and_nested():
    y = _labels(500, (0.3,) * 5)
    a, _ = linear_probe.label_subset(y, 0.1, seed=4, min_positives=0)
    b, _ = linear_probe.label_subset(y, 0.1, seed=4, min_positives=0)
    c, _ = linear_probe.label_subset(y, 0.1, seed=5, min_positives=0)
    small, _ = linear_probe.label_subset(y, 0.02, seed=4, min_positives=0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert set(small) <= set(a)


def test_label_subset_tops_up_rare_classes():
    # Class 4 has exactly 3 positives among 2000 records; class 3 has none.
    y = _labels(2000, (0.5, 0.3, 0.2, 0.0, 0.0))
    y[[10, 500, 1500], 4] = 1
    idx, added = linear_probe.label_subset(y, 0.01, seed=0, min_positives=2)
    positives = y[idx].sum(0)
    assert positives[4] == 2  # topped up to min_positives
    assert positives[3] == 0  # none exist: nothing to add
    assert np.all(positives[:3] >= 2)
    assert idx.size == 20 + added and added >= 2
    # min_positives above what the split holds: all of them.
    idx, _ = linear_probe.label_subset(y, 0.01, seed=0, min_positives=5)
    assert y[idx, 4].sum() == 3


def test_label_subset_rejects_bad_fractions():
    y = _labels(10, (0.5,))
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            linear_probe.label_subset(y, bad, seed=0, min_positives=1)


# ---------------------------------------------------------------------------------------------
# The encoder of a pretraining run.


def _pretraining_run(workdir, preset: str = "tiny", num_samples: int = 5000, seed: int = 11):
    """A workdir laid out like a pretraining run: config.json and a checkpoint whose state
    holds the encoder (params/encoder) beside a projector and optimiser-like entries."""
    cfg = encoder_preset(preset)
    x = jax.ShapeDtypeStruct((1, num_samples, 12), jnp.float32)
    shapes = jax.eval_shape(lambda x: Encoder(cfg).init(jax.random.key(0), x)["params"], x)
    # Values no init of any seed gives (and no op-by-op init to wait for).
    rng = np.random.default_rng(seed)
    enc = jax.tree.map(lambda s: rng.normal(0.0, 0.1, s.shape).astype(np.float32), shapes)
    state = {
        "step": np.int32(6),
        "params": {"encoder": enc, "rhythm_projector": {"w": np.ones((4, 3), np.float32)}},
        "opt_state": {"mu": np.zeros((4, 3), np.float32)},
    }
    with checkpointing.Checkpointer(workdir / "checkpoints", async_save=False) as ckpt:
        ckpt.save(6, state, force=True)
    (workdir / "config.json").write_text(
        json.dumps({"program": "pretrain", "model": {"preset": preset}})
    )
    return enc


def _listing(root):
    return sorted(
        (str(p.relative_to(root)), p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*")
    )


def test_encoder_mismatch_names_both_presets(tmp_path):
    run = tmp_path / "pretrain"
    _pretraining_run(run, "tiny", num_samples=256)
    config = get_config()
    config.pretrained = str(run)
    config.model.preset = "small"
    with pytest.raises(downstream.EncoderMismatchError) as err:
        downstream.load_encoder(config, 256)
    assert "'tiny'" in str(err.value) and "'small'" in str(err.value)
    assert str(run) in str(err.value)


def test_probe_refuses_the_pretraining_workdir(tmp_path):
    run = tmp_path / "pretrain"
    _pretraining_run(run, "tiny", num_samples=256)
    before = _listing(run)
    config = get_config("tiny")
    config.pretrained = str(run)
    with pytest.raises(ValueError, match="pretrain"):
        linear_probe.train_and_evaluate(config, str(run))
    assert _listing(run) == before


# ---------------------------------------------------------------------------------------------
# Whole runs on the synthetic tiny set (24/8/8 records).


@pytest.fixture(scope="module")
def tiny_data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


def _tiny_config(data_dir, pretrained: str = "none"):
    config = get_config("tiny")
    config.data_dir = str(data_dir)
    config.num_build_workers = 1
    config.pretrained = pretrained
    config.probe.weight_decays = (1e-2, 1e-1)
    return config


def _check_report(work, report):
    on_disk = json.loads((work / "metrics.json").read_text())
    assert on_disk["fractions"].keys() == {"1%", "10%", "100%"}
    assert report["fractions"].keys() == on_disk["fractions"].keys()
    counts = on_disk["records"]
    assert [counts[s]["records"] for s in ("train", "validation", "test")] == [24, 8, 8]
    for pct, r in on_disk["fractions"].items():
        frac = float(pct[:-1]) / 100
        assert r["train_records"] == math.ceil(frac * 24) + r["topped_up"]
        for c, n in r["train_positives"].items():
            assert n >= min(2, counts["train"]["positives"][c])
        ci = r["test_intervals"]
        assert ci["num_samples"] == 200 and ci["level"] == 0.95
        for key in ("macro_auroc", "macro_f1"):
            assert {"low", "high", "used"} <= ci[key].keys()
        assert set(r["test"]["per_class"]) == {"CD", "HYP", "MI", "NORM", "STTC"}
        assert "macro_auroc" in r["validation"]
        png = work / r["roc_plot"]
        assert png.name == f"roc_{pct[:-1]}.png"
        assert png.read_bytes()[:8] == PNG_SIGNATURE and png.stat().st_size > 2000
    assert json.loads((work / "config.json").read_text())["program"] == "linear_probe"
    return on_disk


@pytest.mark.slow
def test_run_with_random_init_encoder(tmp_path, tiny_data_dir):
    work = tmp_path / "probe"
    config = _tiny_config(tiny_data_dir)
    report = linear_probe.train_and_evaluate(config, str(work))
    on_disk = _check_report(work, report)
    assert on_disk["provenance"]["pretrained"] == "none"
    assert on_disk["provenance"]["preset"] == "tiny"
    # The saved encoder is the random init of config.seed, built here independently.
    expected = Encoder(encoder_preset("tiny")).init(
        jax.random.key(config.seed), jnp.zeros((1, 5000, 12))
    )["params"]
    state, info = linear_probe.load_predictor(work)
    for a, b in zip(jax.tree.leaves(state["encoder"]), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, np.asarray(b), rtol=1e-6, atol=1e-7)
    assert info["class_names"] == ["CD", "HYP", "MI", "NORM", "STTC"]
    # classify reads this run back: a synthetic record written as WFDB at 250 Hz.
    signal = generate_record(3, SyntheticConfig(fs=250.0, duration_s=10.0, emg_mv=(0.0, 0.0))).ecg
    write_wfdb_record(tmp_path, "user", signal, 250, LEADS)
    result = classify.classify(work, tmp_path / "user", tmp_path / "preds.csv", verbose=False)
    (p,) = result.predictions
    assert p.windows == 1 and p.fs == 250.0
    assert np.all((p.probabilities >= 0) & (p.probabilities <= 1))


@pytest.mark.slow
def test_run_from_pretraining_checkpoint_reads_it_only(tmp_path, tiny_data_dir):
    run = tmp_path / "pretrain"
    _pretraining_run(run, "tiny")
    before = _listing(run)
    work = tmp_path / "probe"
    config = _tiny_config(tiny_data_dir, pretrained=str(run))
    report = linear_probe.train_and_evaluate(config, str(work))
    on_disk = _check_report(work, report)
    assert on_disk["provenance"]["pretrained"] == str(run)
    assert on_disk["provenance"]["step"] == 6
    assert on_disk["provenance"]["preset"] == "tiny"  # taken from the run's config.json
    # The encoder the probe used equals the checkpoint's, read here through another path.
    stored = checkpointing.restore_subtree(run / "checkpoints", "params/encoder")
    state, _ = linear_probe.load_predictor(work)
    flat_saved = dict(jax.tree_util.tree_flatten_with_path(state["encoder"])[0])
    flat_stored = dict(jax.tree_util.tree_flatten_with_path(stored)[0])
    assert flat_saved.keys() == flat_stored.keys()
    for key, value in flat_stored.items():
        np.testing.assert_array_equal(flat_saved[key], value)
    assert _listing(run) == before  # nothing written, touched or removed
    # A second run into the same workdir replaces the predictor.
    config.label_fractions = (1.0,)
    linear_probe.train_and_evaluate(config, str(work))
    assert sorted(os.listdir(work / "checkpoints")) == ["1"]
