"""Beat-SSL losses against hand-computed cases and a plain loop-based numpy reference."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from beatssl_jax import losses

# ---------------------------------------------------------------------------------------------
# A second implementation: plain numpy, explicit loops, written from METHOD.md section 5.


def ref_normalize(z):
    z = np.asarray(z, np.float64)
    out = np.zeros_like(z)
    for i in range(len(z)):
        n = math.sqrt(sum(v * v for v in z[i]))
        out[i] = z[i] / n if n > 0 else 0.0
    return out


def ref_logits(z, tau):
    zn = ref_normalize(z)
    m = len(zn)
    s = np.zeros((m, m))
    for i in range(m):
        for j in range(m):
            s[i, j] = sum(zn[i, d] * zn[j, d] for d in range(zn.shape[1])) / tau
    return s


def ref_nt_xent(z, tau):
    m = len(z)
    s = ref_logits(z, tau)
    total = 0.0
    for i in range(m):
        p = (i + m // 2) % m
        denom = sum(math.exp(s[i, j]) for j in range(m) if j != i)
        total += -math.log(math.exp(s[i, p]) / denom)
    return total / m


def ref_soft_infonce(z, w, tau, valid=None, row_normalize=False):
    """Returns (loss, number of anchors that count)."""
    m = len(z)
    valid = [True] * m if valid is None else [bool(v) for v in valid]
    s = ref_logits(np.where(np.asarray(valid)[:, None], np.nan_to_num(z), 0.0), tau)
    total, count = 0.0, 0
    for i in range(m):
        if not valid[i]:
            continue
        cands = [j for j in range(m) if j != i and valid[j]]
        mass = sum(w[i, j] for j in cands)
        if mass <= 0:
            continue
        lse = math.log(sum(math.exp(s[i, k]) for k in cands))
        row = 0.0
        for j in cands:
            weight = w[i, j] / mass if row_normalize else w[i, j]
            row += -weight * (s[i, j] - lse)
        total += row
        count += 1
    return (total / count if count else 0.0), count


def ref_common(x, mask, a, b):
    f = x.shape[1]
    common = [d for d in range(f) if mask is None or (mask[a, d] and mask[b, d])]
    return [x[a, d] for d in common], [x[b, d] for d in common]


def ref_cosine(x, mask, a, b):
    va, vb = ref_common(x, mask, a, b)
    na = math.sqrt(sum(v * v for v in va))
    nb = math.sqrt(sum(v * v for v in vb))
    if not va or na * nb == 0:
        return 0.0
    return sum(p * q for p, q in zip(va, vb, strict=True)) / (na * nb)


def ref_soft1(x, gamma, mask=None):
    m = len(x)
    out = np.zeros((m, m))
    for a in range(m):
        for b in range(m):
            out[a, b] = min(max(ref_cosine(x, mask, a, b), 0.0), 1.0) ** gamma
    return out


def ref_soft2(x, alpha, t, mask=None, present=None):
    m, f = x.shape
    present = [True] * m if present is None else list(present)
    d = np.zeros((m, m))
    ok = np.zeros((m, m), bool)
    for a in range(m):
        for b in range(m):
            va, vb = ref_common(x, mask, a, b)
            if va and present[a] and present[b]:
                ok[a, b] = True
                d[a, b] = math.sqrt(
                    sum((p - q) ** 2 for p, q in zip(va, vb, strict=True)) * f / len(va)
                )
    lo, hi = d[ok].min(), d[ok].max()
    out = np.zeros((m, m))
    for a in range(m):
        for b in range(m):
            if ok[a, b]:
                dn = (d[a, b] - lo) / (hi - lo) if hi > lo else 0.0
                out[a, b] = 2 * alpha / (1 + math.exp(t * dn))
    return out


def ref_expand(sim):
    m = len(sim)
    w = np.zeros((2 * m, 2 * m))
    for a in range(2 * m):
        for b in range(2 * m):
            if a == b:
                w[a, b] = 0.0
            elif b == (a + m) % (2 * m):
                w[a, b] = 1.0
            else:
                w[a, b] = sim[a % m, b % m]
    return w


def ref_beat_hard(beat_class, same_class, ignore=(3,)):
    n, k = beat_class.shape
    size = 2 * n * k
    w = np.zeros((size, size))
    for a in range(size):
        va, na, ka = a // (n * k), (a // k) % n, a % k
        for b in range(size):
            vb, nb, kb = b // (n * k), (b // k) % n, b % k
            if a == b or na != nb:
                continue
            if ka == kb and va != vb:
                w[a, b] = 1.0
            ca, cb = beat_class[na, ka], beat_class[nb, kb]
            if same_class and ca == cb and ca >= 0 and ca not in ignore:
                w[a, b] = 1.0
    return w


def ref_total(cfg, z, zb, valid, phi, bc, bf, bm):
    n = len(z) // 2
    if cfg.rhythm == "hard":
        l_r = ref_nt_xent(z, cfg.tau)
    else:
        sim = (
            ref_soft1(phi, cfg.gamma)
            if cfg.rhythm == "soft_1"
            else ref_soft2(phi, cfg.alpha, cfg.t)
        )
        l_r, _ = ref_soft_infonce(z, ref_expand(sim), cfg.tau, row_normalize=cfg.row_normalize)
    if cfg.beat == "none":
        return l_r + 0.0, 0
    k = zb.shape[1]
    flat_z = zb.reshape(2 * n * k, -1)
    flat_valid = valid.reshape(-1)
    x, mask = bf.reshape(n * k, -1), bm.reshape(n * k, -1)
    if cfg.beat == "hard":
        w = ref_beat_hard(bc, cfg.same_class_positives)
        l_b, count = ref_soft_infonce(flat_z, w, cfg.beat_tau, flat_valid, row_normalize=True)
    else:
        if cfg.beat == "soft_1":
            sim = ref_soft1(x, cfg.beat_gamma, mask)
        else:
            present = (valid[:n] | valid[n:]).reshape(-1)
            sim = ref_soft2(x, cfg.alpha, cfg.t, mask, present)
        l_b, count = ref_soft_infonce(
            flat_z, ref_expand(sim), cfg.beat_tau, flat_valid, cfg.beat_row_normalize
        )
    return l_r + cfg.lambda_beat * l_b, count


# ---------------------------------------------------------------------------------------------
# Random batches.


def random_batch(seed, n=3, k=3, d=5, f=4, fb=3):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(2 * n, d)).astype(np.float32)
    zb = rng.normal(size=(2 * n, k, d)).astype(np.float32)
    phi = rng.uniform(size=(n, f)).astype(np.float32)
    num_beats = rng.integers(1, k + 1, size=n)
    real = np.arange(k)[None, :] < num_beats[:, None]  # (n, k)
    bc = np.where(real, rng.integers(0, 4, size=(n, k)), -1).astype(np.int32)
    bm = real[:, :, None] & (rng.uniform(size=(n, k, fb)) > 0.2)
    bf = np.where(bm, rng.uniform(size=(n, k, fb)), 0.0).astype(np.float32)
    visible = rng.uniform(size=(2 * n, k)) > 0.2  # the 3KG mask hides some beats
    valid = np.concatenate([real, real]) & visible
    return z, zb, valid, phi, bc, bf, bm


def jax_total(cfg, z, zb, valid, phi, bc, bf, bm):
    """The JAX total loss, op by op (no compilation per config keeps the tests fast)."""
    return losses.total_loss(
        cfg, z, zb, valid, features=phi, beat_class=bc, beat_features=bf, beat_features_mask=bm
    )


# ---------------------------------------------------------------------------------------------
# Hand-computed cases.


def test_two_views_logits_and_nt_xent_by_hand():
    # N = 1: z0 = (3, 4) / 5 = (0.6, 0.8), z1 = (1, 0); s01 = 0.6 / 0.1 = 6.
    z = jnp.array([[3.0, 4.0], [1.0, 0.0]])
    s = losses.similarity_logits(z, 0.1)
    np.testing.assert_allclose(s, [[10.0, 6.0], [6.0, 10.0]], rtol=1e-6)
    # With 2 views every anchor has one candidate, its positive: -log(1) = 0.
    assert float(losses.nt_xent(z, 0.1)) == pytest.approx(0.0, abs=1e-6)
    w = losses.hard_targets(1)
    np.testing.assert_array_equal(w, [[0.0, 1.0], [1.0, 0.0]])
    assert float(losses.soft_infonce(z, w, 0.1)) == pytest.approx(0.0, abs=1e-6)


def test_soft_targets_of_two_records_by_hand():
    # phi0 = (1, 0), phi1 = (1, 1): cos = 1 / sqrt(2); distance 1, the largest, so D = 1.
    phi = jnp.array([[1.0, 0.0], [1.0, 1.0]])
    c = 1 / math.sqrt(2)
    expected = np.array(
        [
            [0.0, c, 1.0, c],
            [c, 0.0, c, 1.0],
            [1.0, c, 0.0, c],
            [c, 1.0, c, 0.0],
        ]
    )
    np.testing.assert_allclose(losses.soft1_targets(phi, 1.0), expected, rtol=1e-6)
    np.testing.assert_allclose(
        losses.soft1_targets(phi, 2.0), np.where(expected == c, 0.5, expected), rtol=1e-6
    )
    far = 2 * 0.5 / (1 + math.exp(5.0))  # 2 alpha sigmoid(-t * 1) = 0.0066929
    np.testing.assert_allclose(
        losses.soft2_targets(phi, 0.5, 5.0), np.where(expected == c, far, expected), rtol=1e-5
    )


def test_nt_xent_four_views_by_hand():
    # tau = 1; views 0, 2 of record 0 are (1, 0), (1, 0); views 1, 3 of record 1 are (0, 1),
    # (-1, 0). Rows of s: (., 0, 1, -1), (0, ., 0, 0), (1, 0, ., -1), (-1, 0, -1, .).
    z = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
    e = math.e
    anchor0 = math.log(1 + e + 1 / e) - 1  # positive 2 at s = 1
    anchor1 = math.log(3.0)  # positive 3 at s = 0, all three candidates at 0
    anchor3 = math.log(1 + 2 / e)  # positive 1 at s = 0, the others at -1
    expected = (2 * anchor0 + anchor1 + anchor3) / 4  # = 0.61631
    assert expected == pytest.approx(0.61631, abs=1e-5)
    assert float(losses.nt_xent(z, 1.0)) == pytest.approx(expected, rel=1e-6)


def test_soft_infonce_three_items_by_hand():
    # tau = 1, z = (1, 0), (0, 1), (-1, 0): s01 = 0, s02 = -1, s12 = 0.
    z = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    w = jnp.array([[0.0, 1.0, 0.5], [1.0, 0.0, 0.25], [0.5, 0.25, 0.0]])
    a = math.log(1 + math.exp(-1))  # -log p of the s = 0 candidate against one at s = -1
    b = 1 + a  # -log p of the s = -1 candidate
    row0 = 1.0 * a + 0.5 * b
    row1 = (1.0 + 0.25) * math.log(2)  # both candidates at s = 0
    row2 = 0.5 * b + 0.25 * a
    assert float(losses.soft_infonce(z, w, 1.0)) == pytest.approx(
        (row0 + row1 + row2) / 3, rel=1e-6
    )
    normalised = (row0 / 1.5 + row1 / 1.25 + row2 / 0.75) / 3
    assert float(losses.soft_infonce(z, w, 1.0, row_normalize=True)) == pytest.approx(
        normalised, rel=1e-6
    )
    # Item 2 invalid: items 0 and 1 are each other's only candidate, -log 1 = 0.
    valid = jnp.array([True, True, False])
    assert float(losses.soft_infonce(z, w, 1.0, valid)) == pytest.approx(0.0, abs=1e-6)


def test_supcon_beats_by_hand():
    # One record, K = 2 beats of class N, two views, tau = 1. Beat rows (view-major):
    # v0b0 = (1, 0), v0b1 = (0, 1), v1b0 = (1, 0), v1b1 = (0, -1).
    zb = jnp.array([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, -1.0]]])
    valid = jnp.ones((2, 2), bool)
    cls = jnp.array([[0, 0]])
    # Same-class positives on: every other beat of the record is a positive, so each anchor
    # averages -log p over all three candidates: -mean(log softmax(row)).
    rows = [(0.0, 1.0, 0.0), (0.0, 0.0, -1.0), (1.0, 0.0, 0.0), (0.0, -1.0, 0.0)]
    per_anchor = [math.log(sum(math.exp(v) for v in r)) - sum(r) / 3 for r in rows]
    cfg = losses.LossConfig(beat="hard", beat_tau=1.0)
    value, anchors = losses.beat_loss(zb, valid, cfg, beat_class=cls)
    assert float(value) == pytest.approx(sum(per_anchor) / 4, rel=1e-6)
    assert int(anchors) == 4
    # Same-class positives off: the same beat in the other view only (NT-Xent over beats).
    cfg = dataclasses.replace(cfg, same_class_positives=False)
    positives = [1, 2, 0, 1]  # index of the positive among each row's candidates
    per_anchor = [
        math.log(sum(math.exp(v) for v in r)) - r[p] for r, p in zip(rows, positives, strict=True)
    ]
    value, _ = losses.beat_loss(zb, valid, cfg, beat_class=cls)
    assert float(value) == pytest.approx(sum(per_anchor) / 4, rel=1e-6)


# ---------------------------------------------------------------------------------------------
# Against the numpy reference.


@pytest.mark.parametrize("seed", [0, 1])
def test_every_preset_matches_numpy_reference(seed):
    batch = random_batch(seed)
    for name, cfg in losses.ABLATION_PRESETS.items():
        for row_normalize in (False, True):
            cfg_r = dataclasses.replace(
                cfg, row_normalize=row_normalize, beat_row_normalize=row_normalize, tau=0.3
            )
            loss, metrics = jax_total(cfg_r, *batch)
            expected, count = ref_total(cfg_r, *batch)
            assert float(loss) == pytest.approx(expected, rel=2e-5, abs=1e-5), (name, row_normalize)
            assert int(metrics["beat_anchors"]) == count, name


def test_same_class_positives_switch_matches_reference():
    batch = random_batch(3)
    cfg = losses.LossConfig(beat="hard", same_class_positives=False, lambda_beat=0.5)
    loss, _ = jax_total(cfg, *batch)
    assert float(loss) == pytest.approx(ref_total(cfg, *batch)[0], rel=2e-5)


def test_beat_hard_targets_match_reference():
    _, _, _, _, bc, _, _ = random_batch(4, n=3, k=4)
    for same in (False, True):
        w = losses.beat_hard_targets(jnp.asarray(bc), 3, 4, same, (3,))
        np.testing.assert_array_equal(w, ref_beat_hard(bc, same))


def test_masked_soft_targets_match_reference():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6, 4)).astype(np.float32)
    mask = rng.uniform(size=(6, 4)) > 0.4
    mask[0] = False  # a vector with no measured feature compares with nothing
    np.testing.assert_allclose(
        losses.soft1_similarity(x, 3.0, mask), ref_soft1(x, 3.0, mask), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        losses.soft2_similarity(x, 0.5, 2.0, mask),
        ref_soft2(x, 0.5, 2.0, mask),
        rtol=1e-5,
        atol=1e-6,
    )


def test_soft_loss_with_hard_targets_equals_nt_xent():
    # Each row of the hard W holds a single 1, so it already sums to 1: the equality holds
    # both with and without row normalisation.
    z, *_ = random_batch(6)
    expected = float(losses.nt_xent(z, 0.2))
    assert expected == pytest.approx(ref_nt_xent(z, 0.2), rel=1e-5)
    w = losses.hard_targets(3)
    for row_normalize in (False, True):
        got = float(losses.soft_infonce(z, w, 0.2, row_normalize=row_normalize))
        assert got == pytest.approx(expected, rel=1e-6)


# ---------------------------------------------------------------------------------------------
# Properties.


def pad_beats(zb, valid, bc, bf, bm, extra, garbage):
    """Append `extra` padded beat slots per record holding garbage embeddings and features."""
    two_n, _, d = zb.shape
    n = two_n // 2
    zb = np.concatenate([zb, np.full((two_n, extra, d), garbage, np.float32)], axis=1)
    valid = np.concatenate([valid, np.zeros((two_n, extra), bool)], axis=1)
    bc = np.concatenate([bc, np.full((n, extra), -1, np.int32)], axis=1)
    bf = np.concatenate([bf, np.full((n, extra, bf.shape[2]), 0.0, np.float32)], axis=1)
    bm = np.concatenate([bm, np.zeros((n, extra, bm.shape[2]), bool)], axis=1)
    return zb, valid, bc, bf, bm


@pytest.mark.parametrize("garbage", [1e6, np.nan])
def test_padded_beats_leave_the_loss(garbage):
    z, zb, valid, phi, bc, bf, bm = random_batch(7)
    pzb, pvalid, pbc, pbf, pbm = pad_beats(zb, valid, bc, bf, bm, 2, garbage)
    for name in ("hard+hard", "hard+soft1", "soft1^50+soft1^50", "soft2+soft2"):
        cfg = losses.ABLATION_PRESETS[name]
        loss, m = jax_total(cfg, z, zb, valid, phi, bc, bf, bm)
        padded, pm = jax_total(cfg, z, pzb, pvalid, phi, pbc, pbf, pbm)
        assert float(padded) == pytest.approx(float(loss), rel=1e-6), name
        assert int(pm["beat_anchors"]) == int(m["beat_anchors"])
        grad = jax.grad(
            lambda zb_, cfg=cfg: losses.total_loss(
                cfg,
                z,
                zb_,
                pvalid,
                features=phi,
                beat_class=pbc,
                beat_features=pbf,
                beat_features_mask=pbm,
            )[0]
        )(jnp.asarray(pzb))
        assert np.all(np.isfinite(grad)), name
        assert np.all(np.asarray(grad)[:, -2:] == 0), name


def test_gradients_finite_in_degenerate_batches():
    z, zb, valid, phi, bc, bf, bm = random_batch(8)
    z[1] = 0.0  # a zero embedding
    z[2] = z[0]  # identical embeddings
    zb[:, 0] = 0.0
    cases = {"all beats invalid": np.zeros_like(valid), "some invalid": valid}
    for label, v in cases.items():
        for name, cfg in losses.ABLATION_PRESETS.items():

            def f(z_, zb_, cfg=cfg, v=v):
                return losses.total_loss(
                    cfg,
                    z_,
                    zb_,
                    v,
                    features=phi,
                    beat_class=bc,
                    beat_features=bf,
                    beat_features_mask=bm,
                )

            (loss, m), grads = jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(
                jnp.asarray(z), jnp.asarray(zb)
            )
            assert np.isfinite(float(loss)), (label, name)
            assert all(np.all(np.isfinite(g)) for g in grads), (label, name)
            if label == "all beats invalid":
                assert float(m["beat_loss"]) == 0.0 and int(m["beat_anchors"]) == 0


def test_anchors_without_positive_leave_the_mean():
    # Hard beat targets without same-class positives: a beat whose twin in the other view is
    # invalid has no positive and must not count.
    z, zb, valid, phi, bc, bf, bm = random_batch(9)
    valid[:] = True
    valid[3, 1] = False  # record 0, beat 1, second view (N = 3)
    cfg = losses.LossConfig(beat="hard", same_class_positives=False)
    _, m = jax_total(cfg, z, zb, valid, phi, bc, bf, bm)
    assert int(m["beat_anchors"]) == 2 * 3 * 3 - 2  # the invalid beat and its twin
    assert int(m["beat_anchors"]) == ref_total(cfg, z, zb, valid, phi, bc, bf, bm)[1]


def test_permuting_records_leaves_every_loss_unchanged():
    z, zb, valid, phi, bc, bf, bm = random_batch(10)
    n = 3
    perm = np.array([2, 0, 1])
    views = np.concatenate([perm, perm + n])
    permuted = (z[views], zb[views], valid[views], phi[perm], bc[perm], bf[perm], bm[perm])
    for name, cfg in losses.ABLATION_PRESETS.items():
        a, _ = jax_total(cfg, z, zb, valid, phi, bc, bf, bm)
        b, _ = jax_total(cfg, *permuted)
        assert float(b) == pytest.approx(float(a), rel=1e-5), name


def test_lambda_weights_the_beat_loss():
    batch = random_batch(11)
    base = losses.loss_preset("soft1^50+hard")
    l1, m1 = jax_total(base, *batch)
    l3, m3 = jax_total(dataclasses.replace(base, lambda_beat=3.0), *batch)
    assert float(l1) == pytest.approx(float(m1["rhythm_loss"] + m1["beat_loss"]), rel=1e-6)
    assert float(l3) == pytest.approx(float(m3["rhythm_loss"] + 3 * m3["beat_loss"]), rel=1e-6)


# ---------------------------------------------------------------------------------------------
# Presets and configuration.

# (rhythm, beat, exp) of every row of the paper's Table 1 (METHOD.md section 8).
TABLE_1 = [
    ("hard", "none", 1),
    ("hard", "hard", 1),
    ("hard", "soft_1", 1),
    ("hard", "soft_1", 50),
    ("hard", "soft_2", 1),
    ("soft_1", "none", 1),
    ("soft_1", "none", 50),
    ("soft_1", "hard", 1),
    ("soft_1", "hard", 50),
    ("soft_1", "soft_1", 1),
    ("soft_1", "soft_1", 50),
    ("soft_2", "none", 1),
    ("soft_2", "hard", 1),
    ("soft_2", "soft_2", 1),
]


def test_every_table_row_is_a_preset():
    rows = []
    for cfg in losses.ABLATION_PRESETS.values():
        exps = {
            g
            for g, used in ((cfg.gamma, cfg.rhythm), (cfg.beat_gamma, cfg.beat))
            if used == "soft_1"
        }
        assert len(exps) <= 1  # one exponent per row
        rows.append((cfg.rhythm, cfg.beat, int(exps.pop()) if exps else 1))
        # An exponent is only set where soft_1 targets use it.
        assert cfg.gamma == 1.0 or cfg.rhythm == "soft_1"
        assert cfg.beat_gamma == 1.0 or cfg.beat == "soft_1"
    assert sorted(rows) == sorted(TABLE_1)
    assert len(losses.ABLATION_PRESETS) == 14
    best = losses.ABLATION_PRESETS[losses.BEST_PRESET]
    assert (best.rhythm, best.gamma, best.beat) == ("soft_1", 50.0, "hard")


def test_config_from_mapping_and_errors():
    cfg = losses.LossConfig.from_config({"preset": "soft2+soft2", "t": 2.0, "lambda_beat": 0.5})
    assert (cfg.rhythm, cfg.beat, cfg.t, cfg.lambda_beat) == ("soft_2", "soft_2", 2.0, 0.5)
    with pytest.raises(ValueError, match="rhythm must be one of"):
        losses.LossConfig(rhythm="soft_3")
    with pytest.raises(ValueError, match="unknown loss preset"):
        losses.loss_preset("soft1^2")
    with pytest.raises(ValueError, match="need record features"):
        losses.rhythm_loss(jnp.ones((4, 3)), losses.LossConfig(rhythm="soft_1"))


def test_jit_matches_eager():
    batch = random_batch(12)
    for name in ("hard", "soft1^50+hard", "soft2+soft2"):
        cfg = losses.ABLATION_PRESETS[name]
        jitted = jax.jit(jax_total, static_argnums=0)
        got, metrics = jitted(cfg, *batch)
        want, _ = jax_total(cfg, *batch)
        assert float(got) == pytest.approx(float(want), rel=1e-5), name
        assert metrics["beat_anchors"].dtype == jnp.int32
