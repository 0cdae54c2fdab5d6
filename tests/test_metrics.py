"""Classification and delineation metrics (beatssl_jax.metrics) against independent references."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from beatssl_jax import metrics
from beatssl_jax.metrics import (
    auroc,
    best_thresholds,
    bootstrap_intervals,
    boundary_scores,
    classification_metrics,
    f1_score,
    match_boundaries,
    roc_curve,
    samplewise_scores,
    segmentation_metrics,
)

# ------------------------------------------------------------------------------------------
# Classification
# ------------------------------------------------------------------------------------------


def _pairwise_auroc(y: np.ndarray, s: np.ndarray) -> float:
    """Brute force: P(score_pos > score_neg) + 0.5 P(tie) over all pairs."""
    pos = s[y == 1][:, None]
    neg = s[y == 0][None, :]
    return float(np.mean((pos > neg) + 0.5 * (pos == neg)))


def _f1_brute(y: np.ndarray, pred: np.ndarray) -> float:
    tp = sum(1 for a, b in zip(y, pred, strict=True) if a and b)
    fp = sum(1 for a, b in zip(y, pred, strict=True) if not a and b)
    fn = sum(1 for a, b in zip(y, pred, strict=True) if a and not b)
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan


def _labelled_scores(rng: np.random.Generator, n: int, c: int, signal: float = 1.0):
    y = (rng.random((n, c)) < 0.3).astype(int)
    p = 1.0 / (1.0 + np.exp(-(signal * (2 * y - 1) + rng.normal(size=(n, c)))))
    return y, p


def test_auroc_matches_pairwise_count_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(2, 60))
        y = rng.integers(0, 2, n)
        if y.min() == y.max():
            continue
        s = rng.integers(0, 5, n).astype(float)  # many ties
        assert auroc(y, s) == pytest.approx(_pairwise_auroc(y, s), abs=1e-12)


def test_auroc_perfect_inverted_and_single_class():
    y = np.array([0, 0, 1, 1])
    assert auroc(y, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert auroc(y, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert auroc(y, np.full(4, 0.5)) == 0.5
    assert math.isnan(auroc(np.ones(4, int), np.arange(4.0)))
    assert math.isnan(auroc(np.zeros(4, int), np.arange(4.0)))
    with pytest.raises(ValueError, match="expected y_true"):
        auroc(np.ones(3), np.ones(4))


def test_f1_hand_cases():
    y = np.array([1, 1, 1, 0, 0, 0])
    pred = np.array([1, 1, 0, 1, 0, 0], bool)  # TP 2, FP 1, FN 1
    assert f1_score(y, pred) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert f1_score(y, y.astype(bool)) == 1.0
    assert f1_score(y, np.zeros(6, bool)) == 0.0
    # No positive and none predicted: undefined, NaN by convention.
    assert math.isnan(f1_score(np.zeros(4, int), np.zeros(4, bool)))
    assert f1_score(np.zeros(4, int), np.array([1, 0, 0, 0], bool)) == 0.0


def test_best_thresholds_match_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(20):
        n, c = int(rng.integers(3, 25)), 3
        y = rng.integers(0, 2, (n, c))
        y[0] = 1  # every class has a positive
        p = rng.integers(0, 6, (n, c)) / 5.0  # ties
        t = best_thresholds(y, p)
        for k in range(c):
            # Brute force over every candidate "p >= s" with s a distinct score.
            candidates = np.unique(p[:, k])
            f1s = np.array([_f1_brute(y[:, k], p[:, k] >= s) for s in candidates])
            best = f1s.max()
            assert f1_score(y[:, k], p[:, k] >= t[k]) == pytest.approx(best)
            # Tie-break: the smallest winning threshold, i.e. the most predicted positives.
            s_star = candidates[np.flatnonzero(np.isclose(f1s, best))[0]]
            np.testing.assert_array_equal(p[:, k] >= t[k], p[:, k] >= s_star)
            lower = candidates[candidates < s_star]
            if lower.size:  # the threshold is the midpoint towards the next lower score
                assert t[k] == pytest.approx(0.5 * (s_star + lower.max()))


def test_best_thresholds_hand_case_and_no_positive():
    y = np.array([[1, 0], [1, 0], [0, 0], [1, 0], [0, 0]])
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4], [0.1, 0.5]])
    # Class 0: cut at 0.8 -> F1 = 4/5; cut at 0.6 -> TP 3, FP 1 -> 6/7 (best); midpoint 0.35.
    t = best_thresholds(y, p)
    assert t[0] == pytest.approx(0.35)
    assert t[1] == np.inf


def test_classification_metrics_structure_and_values():
    rng = np.random.default_rng(2)
    y, p = _labelled_scores(rng, 200, 3)
    names = ["A", "B", "C"]
    t = np.array([0.5, 0.4, 0.6])
    out = classification_metrics(y, p, t, names)
    for k, name in enumerate(names):
        row = out["per_class"][name]
        assert row["auroc"] == pytest.approx(_pairwise_auroc(y[:, k], p[:, k]))
        assert row["f1"] == pytest.approx(_f1_brute(y[:, k], p[:, k] >= t[k]))
        assert row["positives"] == int(y[:, k].sum())
        assert row["threshold"] == t[k]
    macro = np.mean([_pairwise_auroc(y[:, k], p[:, k]) for k in range(3)])
    assert out["macro_auroc"] == pytest.approx(macro)
    json.dumps(out)
    with pytest.raises(ValueError, match="thresholds have shape"):
        classification_metrics(y, p, t[:2], names)


def test_roc_curve_area_equals_auroc():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 80)
    s = rng.integers(0, 10, 80).astype(float)
    fpr, tpr, thr = roc_curve(y, s)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(thr) < 0)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(auroc(y, s))


def test_bootstrap_auroc_vectorised_equals_direct_resamples():
    rng = np.random.default_rng(4)
    n = 40
    y = rng.integers(0, 2, n).astype(bool)
    s = rng.integers(0, 6, n).astype(float)
    idx = rng.integers(0, n, (30, n))
    counts = np.stack([np.bincount(i, minlength=n) for i in idx])
    got = metrics._bootstrap_auroc(y, s, counts)
    want = [auroc(y[i], s[i]) if 0 < y[i].sum() < n else math.nan for i in idx]
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_bootstrap_intervals_properties():
    rng = np.random.default_rng(5)
    names = ["A", "B"]
    t = np.array([0.5, 0.5])
    y, p = _labelled_scores(rng, 300, 2)
    point = classification_metrics(y, p, t, names)
    ci = bootstrap_intervals(y, p, t, names, num_samples=300, seed=7)
    assert ci["num_samples"] == 300
    for key in ("macro_auroc", "macro_f1"):
        assert ci[key]["low"] <= point[key] <= ci[key]["high"]
        assert ci[key]["used"] == 300
    for name in names:
        for key in ("auroc", "f1"):
            assert ci["per_class"][name][key]["low"] <= point["per_class"][name][key]
            assert point["per_class"][name][key] <= ci["per_class"][name][key]["high"]
    assert ci == bootstrap_intervals(y, p, t, names, num_samples=300, seed=7)
    assert ci != bootstrap_intervals(y, p, t, names, num_samples=300, seed=8)
    json.dumps(ci)
    # More records -> narrower interval.
    y_big, p_big = _labelled_scores(rng, 3000, 2)
    ci_big = bootstrap_intervals(y_big, p_big, t, names, num_samples=300, seed=7)
    width = ci["macro_auroc"]["high"] - ci["macro_auroc"]["low"]
    width_big = ci_big["macro_auroc"]["high"] - ci_big["macro_auroc"]["low"]
    assert width_big < 0.5 * width


def test_bootstrap_class_missing_positives_in_some_resamples():
    rng = np.random.default_rng(6)
    n = 40
    y = np.zeros((n, 2), int)
    y[:, 0] = rng.integers(0, 2, n)
    y[3, 1] = 1  # one positive: about (1 - 1/n)^n = 36 % of resamples lack it
    p = rng.random((n, 2))
    ci = bootstrap_intervals(y, p, np.array([0.5, 0.5]), ["A", "rare"], num_samples=200)
    used = ci["per_class"]["rare"]["auroc"]["used"]
    assert 80 < used < 180
    assert ci["macro_auroc"]["used"] == used
    assert ci["per_class"]["A"]["auroc"]["used"] == 200
    assert 0.0 <= ci["per_class"]["rare"]["auroc"]["low"] <= 1.0


# ------------------------------------------------------------------------------------------
# Segmentation: sample-wise
# ------------------------------------------------------------------------------------------


def test_samplewise_hand_case_pooled_f1_and_per_lead_dice():
    #                  0  1  2  3  4  5  6  7  8  9
    true0 = np.array([0, 1, 1, 1, 0, 2, 2, 0, 3, 3])
    pred0 = np.array([1, 1, 1, 0, 0, 2, 2, 2, 3, 0])
    ann0 = np.array([0, 1, 1, 1, 1, 1, 1, 1, 1, 1], bool)  # sample 0 does not count
    true1 = np.array([0, 1, 1, 1, 1, 1, 1, 1, 1, 0])
    pred1 = true1.copy()
    ann1 = np.ones(10, bool)
    true = np.stack([true0, true1], axis=1)[None]  # (1, 10, 2)
    pred = np.stack([pred0, pred1], axis=1)[None]
    ann = np.stack([ann0, ann1], axis=1)[None]
    out = samplewise_scores(true, pred, ann)
    # P: lead 0 TP 2 FN 1; lead 1 TP 8. Pooled F1 = 20/21; Dice mean(4/5, 1) = 0.9.
    assert (out["P"]["tp"], out["P"]["fp"], out["P"]["fn"]) == (10, 0, 1)
    assert out["P"]["f1"] == pytest.approx(20 / 21)
    assert out["P"]["dice"] == pytest.approx(0.9)
    assert out["P"]["dice_pairs"] == 2
    # QRS: lead 0 TP 2 FP 1 -> 4/5; lead 1 empty in both -> skipped.
    assert out["QRS"]["f1"] == pytest.approx(0.8)
    assert out["QRS"]["dice"] == pytest.approx(0.8)
    assert (out["QRS"]["dice_pairs"], out["QRS"]["dice_skipped"]) == (1, 1)
    # T: TP 1 FN 1 -> 2/3.
    assert out["T"]["f1"] == pytest.approx(2 / 3)
    assert out["macro_f1"] == pytest.approx((20 / 21 + 0.8 + 2 / 3) / 3)
    assert out["macro_dice"] == pytest.approx((0.9 + 0.8 + 2 / 3) / 3)


def test_samplewise_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(N, T, L\)"):
        samplewise_scores(np.zeros((1, 10, 2)), np.zeros((1, 10, 1)), np.ones((1, 10, 2), bool))


# ------------------------------------------------------------------------------------------
# Segmentation: boundary matching
# ------------------------------------------------------------------------------------------


def _n_matched(true_pos, pred_pos, tol) -> int:
    ti, pj = match_boundaries(np.array(true_pos), np.array(pred_pos), tol)
    assert len(set(ti.tolist())) == ti.size and len(set(pj.tolist())) == pj.size
    return int(ti.size)


def test_match_one_prediction_between_two_true_counts_once():
    ti, pj = match_boundaries(np.array([100, 120]), np.array([108]), 15)
    assert (ti.tolist(), pj.tolist()) == ([0], [0])  # the nearer true boundary; 1 TP, 1 FN
    ti, pj = match_boundaries(np.array([100]), np.array([95, 103]), 15)
    assert (ti.tolist(), pj.tolist()) == ([0], [1])  # 1 TP (the nearer), 1 FP


def test_match_prefers_more_pairs_over_nearest():
    # Nearest-first greedy would pair 3 with 5 and leave two unmatched; two pairs exist.
    ti, pj = match_boundaries(np.array([0, 5]), np.array([3, 10]), 5)
    assert (ti.tolist(), pj.tolist()) == ([0, 1], [0, 1])


def test_match_tolerance_is_inclusive():
    assert _n_matched([50], [60], 10) == 1
    assert _n_matched([50], [61], 10) == 0
    assert _n_matched([50], [40], 10) == 1
    assert _n_matched([50], [39], 10) == 0
    assert _n_matched([], [3], 10) == 0


def _brute_matching(tr, pr, tol) -> tuple[int, int]:
    """Exhaustive search: (largest number of pairs, least total |error| among those)."""
    best = (0, 0)

    def walk(i: int, used: frozenset, pairs: int, err: int) -> None:
        nonlocal best
        if i == len(tr):
            if pairs > best[0] or (pairs == best[0] and err < best[1]):
                best = (pairs, err)
            return
        walk(i + 1, used, pairs, err)
        for j, q in enumerate(pr):
            if j not in used and abs(q - tr[i]) <= tol:
                walk(i + 1, used | {j}, pairs + 1, err + abs(q - tr[i]))

    walk(0, frozenset(), 0, 0)
    return best


def test_match_is_a_maximum_matching_with_least_error():
    rng = np.random.default_rng(8)
    for _ in range(150):
        tr = rng.choice(60, size=int(rng.integers(0, 6)), replace=False)
        pr = rng.choice(60, size=int(rng.integers(0, 6)), replace=False)
        tol = int(rng.integers(0, 12))
        ti, pj = match_boundaries(tr, pr, tol)
        assert np.all(np.abs(pr[pj] - tr[ti]) <= tol)
        assert (ti.size, int(np.abs(pr[pj] - tr[ti]).sum())) == _brute_matching(tr, pr, tol)


# ------------------------------------------------------------------------------------------
# Segmentation: boundary scores
# ------------------------------------------------------------------------------------------

FS = 500.0
BEAT = 400  # samples between beats
# Wave intervals relative to the beat start (inclusive): P, QRS, T.
LAYOUT = ((1, 0, 50), (2, 80, 130), (3, 200, 300))


def _beats_mask(length: int, starts) -> np.ndarray:
    m = np.zeros(length, np.int8)
    for b in starts:
        for code, on, off in LAYOUT:
            m[b + on : b + off + 1] = code
    return m


def test_boundary_scores_shifted_copy():
    length = 4000
    starts = range(100, 3400, BEAT)  # 9 beats, all away from the record edges
    one = _beats_mask(length, starts)
    true = np.stack([one, one], axis=1)[None].repeat(2, axis=0)  # (2, 4000, 2)
    pred = np.roll(true, 5, axis=1)  # +5 samples = +10 ms
    ann = np.ones_like(true, bool)
    out = boundary_scores(true, pred, ann, FS)
    for kind in metrics.BOUNDARY_KINDS:
        row = out[kind]
        assert (row["tp"], row["fp"], row["fn"]) == (9 * 4, 0, 0)
        assert row["sensitivity"] == 1.0 and row["ppv"] == 1.0 and row["f1"] == 1.0
        assert row["mean_error_ms"] == pytest.approx(10.0, abs=1e-9)
        assert row["sd_error_ms"] == pytest.approx(0.0, abs=1e-9)
    assert out["macro_f1"] == 1.0 and out["QRS"]["f1"] == 1.0


def test_boundary_scores_spurious_wave_is_one_fp_each_side():
    length = 2000
    true = _beats_mask(length, [100, 500, 900])
    pred = true.copy()
    pred[440:471] = 1  # an extra P wave 60 samples before the next true P onset
    ann = np.ones((1, length, 1), bool)
    out = boundary_scores(true[None, :, None], pred[None, :, None], ann, FS)
    for kind in ("P_onset", "P_offset"):
        assert (out[kind]["tp"], out[kind]["fp"], out[kind]["fn"]) == (3, 1, 0)
        assert out[kind]["mean_error_ms"] == 0.0
    assert out["P_onset"]["ppv"] == 0.75 and out["P_onset"]["sensitivity"] == 1.0
    assert out["QRS_onset"]["fp"] == 0 and out["T_offset"]["fp"] == 0


def test_boundary_scores_exclude_the_span_edges():
    length = 1200
    true = _beats_mask(length, [100, 500])
    pred = true.copy()
    pred[:40] = 3  # a T wave in the unannotated edge: ignored
    ann = np.zeros(length, bool)
    first, last = 100, 500 + 300  # LUDB: first onset to last offset
    ann[first : last + 1] = True
    out = boundary_scores(true[None, :, None], pred[None, :, None], ann[None, :, None], FS)
    # The first P onset and the last T offset sit on the span edge: not counted.
    assert (out["P_onset"]["tp"], out["P_onset"]["fn"], out["P_onset"]["fp"]) == (1, 0, 0)
    assert (out["T_offset"]["tp"], out["T_offset"]["fn"], out["T_offset"]["fp"]) == (1, 0, 0)
    assert out["P_offset"]["tp"] == 2 and out["T_onset"]["tp"] == 2
    # A predicted P starting before the span is cut at the span start: its onset is not a
    # boundary, so it is no FP; its offset is a real one and matches.
    pred2 = true.copy()
    pred2[90:100] = 1
    out = boundary_scores(true[None, :, None], pred2[None, :, None], ann[None, :, None], FS)
    assert out["P_onset"]["fp"] == 0 and out["P_offset"]["tp"] == 2
    # A wave of the truth cut by the span start (QRS from 0 to 120, span from 50): only its
    # offset counts, and a prediction with an earlier onset is not penalised.
    t3 = np.zeros(length, np.int8)
    t3[0:121] = 2
    p3 = np.zeros(length, np.int8)
    p3[30:121] = 2
    a3 = np.zeros(length, bool)
    a3[50:600] = True
    out = boundary_scores(t3[None, :, None], p3[None, :, None], a3[None, :, None], FS)
    assert out["QRS_onset"]["tp"] + out["QRS_onset"]["fp"] + out["QRS_onset"]["fn"] == 0
    assert math.isnan(out["QRS_onset"]["f1"])
    assert out["QRS_offset"]["tp"] == 1


def test_segmentation_metrics_is_json_serialisable():
    length = 1500
    true = _beats_mask(length, [100, 500, 900])
    pred = np.roll(true, 3)
    out = segmentation_metrics(
        true[None, :, None], pred[None, :, None], np.ones((1, length, 1), bool), FS
    )
    text = json.dumps(out)
    assert "NaN" not in text

    def walk(x):
        if isinstance(x, dict):
            for v in x.values():
                walk(v)
        else:
            assert type(x) in (int, float), type(x)

    walk(out)
    assert out["boundaries"]["QRS_onset"]["mean_error_ms"] == pytest.approx(6.0)
