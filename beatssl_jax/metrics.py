"""Downstream metrics of METHOD.md section 7: PTB-XL classification and LUDB delineation.

Classification (multi-label, C classes; Wagner et al. 2020, Strodthoff et al. 2021):
  y: (N, C) {0, 1} labels, p: (N, C) scores. Per class AUROC (Mann-Whitney form) and F1 at
  a threshold chosen on validation (`best_thresholds`); macro means over classes; percentile
  bootstrap intervals over records (`bootstrap_intervals`).

Segmentation (LUDB; Kalyakulina et al. 2020): masks (N, T, L) of codes 0 background,
  1 P, 2 QRS, 3 T (`ecg.delineation`), with an `annotated` (N, T, L) bool mask: LUDB leaves
  the record edges unannotated, so only annotated samples count. Sample-wise F1 and Dice
  per wave (`samplewise_scores`) and boundary detection with one-to-one matching within a
  tolerance (`boundary_scores`).

Conventions for undefined values: a ratio whose denominator is zero is NaN (AUROC with one
class only, F1 with no true and no predicted positive, a Dice with both sets empty, a mean
error with no matched pair). A macro mean is NaN when any of its terms is NaN. Results are
python floats and ints, so `json.dumps` writes them (NaN as `NaN`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.optimize
import scipy.stats

from beatssl_jax.ecg.delineation import WAVE_CODES, WAVE_NAMES, mask_to_intervals

# --------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------


def _binary_pair(y_true: np.ndarray, score: np.ndarray, where: str) -> tuple[np.ndarray, ...]:
    y = np.asarray(y_true)
    s = np.asarray(score, dtype=np.float64)
    if y.ndim != 1 or s.shape != y.shape:
        raise ValueError(
            f"{where}: expected y_true (N,) and score (N,), got {y.shape} and {s.shape}"
        )
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError(f"{where}: y_true must hold 0/1 labels, found {np.unique(y)[:5]}")
    if not np.isfinite(s).all():
        raise ValueError(f"{where}: score holds {int(np.sum(~np.isfinite(s)))} non-finite values")
    return y.astype(bool), s


def auroc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve of one class: y_true (N,) {0, 1}, score (N,) float.

    Mann-Whitney form: (sum of the positives' ranks - P(P+1)/2) / (P * Q), with average
    ranks for tied scores, i.e. Prob(score_pos > score_neg) + 0.5 Prob(tie). NaN when there
    is no positive or no negative.
    """
    y, s = _binary_pair(y_true, score, "auroc")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = scipy.stats.rankdata(s)  # average ranks, 1-based
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """2 TP / (2 TP + FP + FN), NaN where TP + FP + FN == 0."""
    tp, fp, fn = (np.asarray(a, dtype=np.float64) for a in (tp, fp, fn))
    den = 2.0 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 2.0 * tp / np.where(den > 0, den, 1.0), np.nan)


def f1_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """F1 = 2 TP / (2 TP + FP + FN) of one class: y_true (N,) {0, 1}, y_pred (N,) bool.

    NaN when there is no positive and no predicted positive (TP + FP + FN == 0): the score
    is undefined there, as AUROC is without both classes, and is skipped like it.
    """
    y = np.asarray(y_true)
    yp = np.asarray(y_pred)
    if y.ndim != 1 or yp.shape != y.shape:
        raise ValueError(f"f1_score: expected y_true (N,), y_pred (N,), got {y.shape}, {yp.shape}")
    y = y.astype(bool)
    yp = yp.astype(bool)
    tp = np.sum(y & yp)
    return float(_f1_from_counts(tp, np.sum(~y & yp), np.sum(y & ~yp)))


def _check_multilabel(y: np.ndarray, p: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y)
    p = np.asarray(p, dtype=np.float64)
    if y.ndim != 2 or p.shape != y.shape:
        raise ValueError(f"{where}: expected y (N, C) and p (N, C), got {y.shape} and {p.shape}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError(f"{where}: y must hold 0/1 labels, found {np.unique(y)[:5]}")
    if not np.isfinite(p).all():
        raise ValueError(f"{where}: p holds {int(np.sum(~np.isfinite(p)))} non-finite values")
    return y.astype(bool), p


def best_thresholds(y_val: np.ndarray, p_val: np.ndarray) -> np.ndarray:
    """Per-class decision thresholds maximising F1 on validation: (N, C), (N, C) -> (C,).

    A record is predicted positive when p >= threshold. Every cut between two neighbouring
    distinct scores is tried (sort + cumulative sums per class). The threshold returned for
    the best cut is the midpoint between the lowest score predicted positive and the next
    lower distinct score (the lowest score itself when it is the smallest of all). Ties in
    F1 go to the cut with the most predicted positives, i.e. the smallest threshold. A class
    without positives gets +inf (nothing is predicted positive).
    """
    y, p = _check_multilabel(y_val, p_val, "best_thresholds")
    n, c = y.shape
    out = np.full(c, np.inf)
    for k in range(c):
        n_pos = int(y[:, k].sum())
        if n_pos == 0 or n == 0:
            continue
        order = np.argsort(-p[:, k], kind="stable")
        s = p[order, k]  # descending
        tp = np.cumsum(y[order, k])
        # Cut after position i (predicting s[0..i] positive) is allowed only at the last
        # member of a group of equal scores.
        last = np.flatnonzero(np.concatenate([s[1:] != s[:-1], [True]]))
        predicted = last + 1
        f1 = 2.0 * tp[last] / (n_pos + predicted)
        best = np.flatnonzero(f1 == f1.max())[-1]  # most positives among the ties
        i = last[best]
        if i + 1 < n:
            mid = 0.5 * (s[i] + s[i + 1])
            out[k] = mid if mid > s[i + 1] else s[i]
        else:
            out[k] = s[i]
    return out


def roc_curve(y_true: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve of one class for plotting: y_true (N,), score (N,) -> fpr, tpr, thresholds.

    Point k predicts positive when score >= thresholds[k]; thresholds are the distinct
    scores in decreasing order after a leading +inf (the point (0, 0)). Tied scores give a
    diagonal step, so the trapezoid area equals `auroc`. fpr (tpr) is NaN throughout when
    there is no negative (positive).
    """
    y, s = _binary_pair(y_true, score, "roc_curve")
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    y_sorted = y[order]
    last = np.flatnonzero(np.concatenate([s_sorted[1:] != s_sorted[:-1], [True]]))
    tp = np.concatenate([[0], np.cumsum(y_sorted)[last]]).astype(np.float64)
    fp = np.concatenate([[0], np.cumsum(~y_sorted)[last]]).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = tp / tp[-1] if tp[-1] > 0 else np.full_like(tp, np.nan)
        fpr = fp / fp[-1] if fp[-1] > 0 else np.full_like(fp, np.nan)
    thresholds = np.concatenate([[np.inf], s_sorted[last]])
    return fpr, tpr, thresholds


def _macro(values: Sequence[float]) -> float:
    """Mean over classes or waves; NaN when any term is NaN."""
    return float(np.mean(values)) if len(values) else float("nan")


def _check_classes(c: int, thresholds: np.ndarray, class_names: Sequence[str], where: str):
    t = np.asarray(thresholds, dtype=np.float64)
    if t.shape != (c,):
        raise ValueError(f"{where}: thresholds have shape {t.shape}, expected ({c},)")
    if len(class_names) != c:
        raise ValueError(f"{where}: {len(class_names)} class names for {c} classes")
    return t


def classification_metrics(
    y: np.ndarray, p: np.ndarray, thresholds: np.ndarray, class_names: Sequence[str]
) -> dict:
    """Macro AUROC and macro F1 of a multi-label classifier (METHOD.md section 7, PTB-XL).

    y: (N, C) {0, 1}; p: (N, C) scores; thresholds: (C,), a record is positive for class k
    when p[:, k] >= thresholds[k] (from `best_thresholds` on validation); class_names: C
    names. Returns {macro_auroc, macro_f1, per_class: {name: {auroc, f1, threshold,
    positives}}}; macro values are unweighted means over classes (NaN if any class is).
    """
    yb, pf = _check_multilabel(y, p, "classification_metrics")
    t = _check_classes(yb.shape[1], thresholds, class_names, "classification_metrics")
    per_class = {}
    for k, name in enumerate(class_names):
        per_class[str(name)] = {
            "auroc": auroc(yb[:, k], pf[:, k]),
            "f1": f1_score(yb[:, k], pf[:, k] >= t[k]),
            "threshold": float(t[k]),
            "positives": int(yb[:, k].sum()),
        }
    return {
        "macro_auroc": _macro([v["auroc"] for v in per_class.values()]),
        "macro_f1": _macro([v["f1"] for v in per_class.values()]),
        "per_class": per_class,
    }


def _bootstrap_auroc(y: np.ndarray, s: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """AUROC of one class in each resample: y (N,) bool, s (N,), counts (B, N) -> (B,).

    Resample b holds record i counts[b, i] times. With records sorted by score, the
    Mann-Whitney sum is, over positive records, count * (negatives with a lower score +
    half the negatives with an equal score), all from cumulative sums of the counts.
    """
    order = np.argsort(s, kind="stable")
    s_sorted = s[order]
    y_sorted = y[order]
    c = counts[:, order]
    neg_counts = np.where(y_sorted, 0, c)
    cum_neg = np.concatenate([np.zeros((c.shape[0], 1), c.dtype), np.cumsum(neg_counts, 1)], 1)
    # For each sorted position: first and one-past-last position of its group of equal scores.
    new_group = np.concatenate([[True], s_sorted[1:] != s_sorted[:-1]])
    group_start = np.flatnonzero(new_group)
    group_id = np.cumsum(new_group) - 1
    group_end = np.concatenate([group_start[1:], [s.size]])
    pos = np.flatnonzero(y_sorted)
    lo = group_start[group_id[pos]]
    hi = group_end[group_id[pos]]
    below = cum_neg[:, lo]
    equal = cum_neg[:, hi] - below
    u = np.sum(c[:, pos] * (below + 0.5 * equal), axis=1)
    n_pos = c[:, pos].sum(axis=1)
    n_neg = neg_counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def _interval(values: np.ndarray, level: float) -> dict:
    used = int(np.sum(~np.isnan(values)))
    if used == 0:
        return {"low": float("nan"), "high": float("nan"), "used": 0}
    alpha = 100.0 * (1.0 - level) / 2.0
    low, high = np.nanpercentile(values, [alpha, 100.0 - alpha])
    return {"low": float(low), "high": float(high), "used": used}


def bootstrap_intervals(
    y: np.ndarray,
    p: np.ndarray,
    thresholds: np.ndarray,
    class_names: Sequence[str],
    num_samples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Percentile bootstrap intervals of `classification_metrics` over records.

    y: (N, C) {0, 1}; p: (N, C); thresholds: (C,) fixed (not re-chosen per resample).
    Each of `num_samples` resamples draws N records with replacement
    (`np.random.default_rng(seed)`); the interval is the [(1 - level)/2, (1 + level)/2]
    percentile range of each metric. A resample where a class has no positive or no
    negative has NaN AUROC for that class (and NaN F1 when it has no true and no predicted
    positive); that value is left out of that class's percentiles, and the resample's macro
    value (NaN) out of the macro's. Each entry reports `used`, the resamples it rests on.
    Returns {level, num_samples, macro_auroc: {low, high, used}, macro_f1: {...},
    per_class: {name: {auroc: {...}, f1: {...}}}}.
    """
    yb, pf = _check_multilabel(y, p, "bootstrap_intervals")
    n, c = yb.shape
    t = _check_classes(c, thresholds, class_names, "bootstrap_intervals")
    if not 0.0 < level < 1.0:
        raise ValueError(f"bootstrap_intervals: level must lie in (0, 1), got {level}")
    if num_samples < 1 or n == 0:
        raise ValueError(
            f"bootstrap_intervals: need num_samples >= 1 and N >= 1, got {num_samples}, {n}"
        )
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(num_samples, n))
    # counts[b, i]: how often record i is drawn in resample b.
    flat = (idx + n * np.arange(num_samples)[:, None]).ravel()
    counts = np.bincount(flat, minlength=num_samples * n).reshape(num_samples, n)
    counts_f = counts.astype(np.float64)
    aurocs = np.empty((num_samples, c))
    f1s = np.empty((num_samples, c))
    for k in range(c):
        aurocs[:, k] = _bootstrap_auroc(yb[:, k], pf[:, k], counts)
        pred = pf[:, k] >= t[k]
        tp = counts_f @ (yb[:, k] & pred)
        fp = counts_f @ (~yb[:, k] & pred)
        fn = counts_f @ (yb[:, k] & ~pred)
        f1s[:, k] = _f1_from_counts(tp, fp, fn)
    return {
        "level": float(level),
        "num_samples": int(num_samples),
        "macro_auroc": _interval(aurocs.mean(axis=1), level),
        "macro_f1": _interval(f1s.mean(axis=1), level),
        "per_class": {
            str(name): {
                "auroc": _interval(aurocs[:, k], level),
                "f1": _interval(f1s[:, k], level),
            }
            for k, name in enumerate(class_names)
        },
    }


# --------------------------------------------------------------------------------------------
# Segmentation
# --------------------------------------------------------------------------------------------


def _check_masks(true: np.ndarray, pred: np.ndarray, annotated: np.ndarray, where: str):
    t = np.asarray(true)
    q = np.asarray(pred)
    a = np.asarray(annotated)
    if t.ndim != 3 or q.shape != t.shape or a.shape != t.shape:
        raise ValueError(
            f"{where}: expected true, pred, annotated all (N, T, L), got "
            f"{t.shape}, {q.shape}, {a.shape}"
        )
    for name, m in (("true", t), ("pred", q)):
        if m.size and (m.min() < 0 or m.max() > len(WAVE_NAMES)):
            raise ValueError(
                f"{where}: {name} codes must lie in 0..{len(WAVE_NAMES)}, "
                f"found {m.min()}..{m.max()}"
            )
    return t, q, a.astype(bool)


def samplewise_scores(true: np.ndarray, pred: np.ndarray, annotated: np.ndarray) -> dict:
    """Sample-wise F1 and Dice per wave (P, QRS, T), only over annotated samples.

    true, pred: (N, T, L) int codes 0..3; annotated: (N, T, L) bool.
    For wave k, with A = annotated samples where true == k and B = annotated samples where
    pred == k:
      f1:   pooled (micro) over all records and leads: 2 TP / (2 TP + FP + FN), with TP =
            |A ∩ B|, FP = |B \\ A|, FN = |A \\ B| summed over every (record, lead).
      dice: mean over (record, lead) pairs of that pair's 2 |A ∩ B| / (|A| + |B|); pairs
            where A and B are both empty are skipped and counted in `dice_skipped`.
    The two differ: F1 weights each sample equally, Dice each lead equally.
    Returns {P: {f1, dice, tp, fp, fn, dice_pairs, dice_skipped}, QRS: ..., T: ...,
    macro_f1, macro_dice} with macro values the means over the three waves.
    """
    t, q, a = _check_masks(true, pred, annotated, "samplewise_scores")
    out: dict = {}
    for name in WAVE_NAMES:
        code = WAVE_CODES[name]
        in_a = (t == code) & a
        in_b = (q == code) & a
        inter = np.sum(in_a & in_b, axis=1)  # (N, L)
        size_a = np.sum(in_a, axis=1)
        size_b = np.sum(in_b, axis=1)
        tp = int(inter.sum())
        fp = int(size_b.sum()) - tp
        fn = int(size_a.sum()) - tp
        both = size_a + size_b
        used = both > 0
        dice = float(np.mean(2.0 * inter[used] / both[used])) if used.any() else float("nan")
        out[name] = {
            "f1": float(_f1_from_counts(tp, fp, fn)),
            "dice": dice,
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "dice_pairs": int(used.sum()),
            "dice_skipped": int((~used).sum()),
        }
    out["macro_f1"] = _macro([out[w]["f1"] for w in WAVE_NAMES])
    out["macro_dice"] = _macro([out[w]["dice"] for w in WAVE_NAMES])
    return out


def match_boundaries(
    true_pos: np.ndarray, pred_pos: np.ndarray, tolerance: float
) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of predicted to true boundaries within a tolerance.

    true_pos: (n,) int, pred_pos: (m,) int sample positions (any order). A pair (i, j) may
    match when |pred_pos[j] - true_pos[i]| <= tolerance (inclusive). Each true and each
    predicted boundary is used at most once. The matching is optimal: it has the largest
    possible number of pairs (maximum bipartite matching) and, among those, the smallest
    total |error|. It is solved with `scipy.optimize.linear_sum_assignment` on each block of
    points that no gap wider than the tolerance separates, with a cost of |error| for an
    allowed pair and a penalty larger than any sum of errors for a forbidden one.
    Returns (true_idx, pred_idx), (k,) int64 indices of the matched pairs, by true_idx.
    """
    tr = np.asarray(true_pos, dtype=np.int64)
    pr = np.asarray(pred_pos, dtype=np.int64)
    if tr.ndim != 1 or pr.ndim != 1:
        raise ValueError(
            f"match_boundaries: expected (n,) and (m,) positions, got {tr.shape}, {pr.shape}"
        )
    if tolerance < 0:
        raise ValueError(f"match_boundaries: tolerance must be >= 0, got {tolerance}")
    empty = np.zeros(0, dtype=np.int64)
    if tr.size == 0 or pr.size == 0:
        return empty, empty
    points = np.concatenate([tr, pr])
    is_pred = np.concatenate([np.zeros(tr.size, bool), np.ones(pr.size, bool)])
    index = np.concatenate([np.arange(tr.size), np.arange(pr.size)])
    order = np.argsort(points, kind="stable")
    points, is_pred, index = points[order], is_pred[order], index[order]
    block = np.concatenate([[0], np.cumsum(np.diff(points) > tolerance)])
    n_true = np.bincount(block[~is_pred], minlength=block[-1] + 1)
    n_pred = np.bincount(block[is_pred], minlength=block[-1] + 1)
    # A block of one true and one predicted point is a pair within the tolerance already.
    simple = (n_true == 1) & (n_pred == 1)
    in_simple = simple[block]
    matched_true = [index[in_simple & ~is_pred]]  # both in block order, so pairwise aligned
    matched_pred = [index[in_simple & is_pred]]
    for b in np.flatnonzero((n_true > 0) & (n_pred > 0) & ~simple):
        members = block == b
        ti = index[members & ~is_pred]
        pj = index[members & is_pred]
        dist = np.abs(tr[ti][:, None] - pr[pj][None, :]).astype(np.float64)
        allowed = dist <= tolerance
        penalty = float(dist[allowed].sum()) + 1.0
        rows, cols = scipy.optimize.linear_sum_assignment(np.where(allowed, dist, penalty))
        keep = allowed[rows, cols]
        matched_true.append(ti[rows[keep]])
        matched_pred.append(pj[cols[keep]])
    mt = np.concatenate(matched_true)
    mp = np.concatenate(matched_pred)
    by_true = np.argsort(mt, kind="stable")
    return mt[by_true], mp[by_true]


BOUNDARY_KINDS: tuple[str, ...] = tuple(
    f"{wave}_{side}" for wave in WAVE_NAMES for side in ("onset", "offset")
)


def _boundaries(mask: np.ndarray, valid: np.ndarray) -> dict[str, np.ndarray]:
    """Onsets and offsets per wave of one lead, without those cut by the annotated span.

    An onset on the first sample of a run of `valid` samples (or on sample 0), and an
    offset on the last sample of such a run (or on sample T-1), is where the span edge cut
    the wave, not a boundary of it; both are dropped.
    """
    t = valid.size
    out: dict[str, list[int]] = {k: [] for k in BOUNDARY_KINDS}
    for iv in mask_to_intervals(mask, valid=valid):
        if iv.onset > 0 and valid[iv.onset - 1]:
            out[f"{iv.kind}_onset"].append(iv.onset)
        if iv.offset < t - 1 and valid[iv.offset + 1]:
            out[f"{iv.kind}_offset"].append(iv.offset)
    return {k: np.asarray(v, dtype=np.int64) for k, v in out.items()}


def boundary_scores(
    true: np.ndarray,
    pred: np.ndarray,
    annotated: np.ndarray,
    fs: float,
    tolerance_ms: float = 150.0,
) -> dict:
    """Detection of wave onsets and offsets (METHOD.md section 7, LUDB).

    true, pred: (N, T, L) int codes 0..3; annotated: (N, T, L) bool; fs in Hz.
    Per record and lead, the waves are `delineation.mask_to_intervals(mask,
    valid=annotated)`, so predicted waves count only inside the annotated span. Boundaries
    where the span edge cuts a wave are not boundaries and are excluded for both true and
    predicted masks: an onset on the first annotated sample of a span and an offset on its
    last (in LUDB this also drops the first true onset and last true offset of each lead,
    which define the span). For each of the six kinds (P/QRS/T onset/offset), true and
    predicted boundaries are matched one to one (`match_boundaries`) within
    `tolerance_ms` inclusive, per record and lead, and counts are pooled:
      sensitivity = TP / (TP + FN), ppv = TP / (TP + FP), f1 = 2 TP / (2 TP + FP + FN),
      mean_error_ms and sd_error_ms (population SD) of the signed error pred - true of the
      matched pairs.
    Also `macro_f1` (mean over the six kinds) and per wave `{wave: {f1}}`, the mean of its
    onset and offset F1.
    """
    t, q, a = _check_masks(true, pred, annotated, "boundary_scores")
    if fs <= 0:
        raise ValueError(f"boundary_scores: fs must be positive, got {fs}")
    tol = tolerance_ms * fs / 1000.0
    counts = {k: [0, 0, 0] for k in BOUNDARY_KINDS}  # tp, fp, fn
    errors: dict[str, list[np.ndarray]] = {k: [] for k in BOUNDARY_KINDS}
    n, _, num_leads = t.shape
    for r in range(n):
        for lead in range(num_leads):
            valid = a[r, :, lead]
            if not valid.any():
                continue
            bt = _boundaries(t[r, :, lead], valid)
            bp = _boundaries(q[r, :, lead], valid)
            for kind in BOUNDARY_KINDS:
                ti, pj = match_boundaries(bt[kind], bp[kind], tol)
                counts[kind][0] += ti.size
                counts[kind][1] += bp[kind].size - pj.size
                counts[kind][2] += bt[kind].size - ti.size
                if ti.size:
                    errors[kind].append(bp[kind][pj] - bt[kind][ti])
    out: dict = {}
    for kind in BOUNDARY_KINDS:
        tp, fp, fn = counts[kind]
        err = np.concatenate(errors[kind]) * (1000.0 / fs) if errors[kind] else np.zeros(0)
        out[kind] = {
            "sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
            "ppv": tp / (tp + fp) if tp + fp else float("nan"),
            "f1": float(_f1_from_counts(tp, fp, fn)),
            "tp": int(tp),
            "fp": int(fp),
            "fn": int(fn),
            "mean_error_ms": float(err.mean()) if err.size else float("nan"),
            "sd_error_ms": float(err.std()) if err.size else float("nan"),
        }
    out["macro_f1"] = _macro([out[k]["f1"] for k in BOUNDARY_KINDS])
    for wave in WAVE_NAMES:
        out[wave] = {"f1": _macro([out[f"{wave}_onset"]["f1"], out[f"{wave}_offset"]["f1"]])}
    return out


def segmentation_metrics(
    true: np.ndarray,
    pred: np.ndarray,
    annotated: np.ndarray,
    fs: float,
    tolerance_ms: float = 150.0,
) -> dict:
    """Sample-wise and boundary metrics of a delineation, JSON-serialisable.

    true, pred: (N, T, L) int codes 0..3; annotated: (N, T, L) bool; fs in Hz.
    Returns {samplewise: `samplewise_scores`, boundaries: `boundary_scores`, fs,
    tolerance_ms}.
    """
    return {
        "samplewise": samplewise_scores(true, pred, annotated),
        "boundaries": boundary_scores(true, pred, annotated, fs, tolerance_ms),
        "fs": float(fs),
        "tolerance_ms": float(tolerance_ms),
    }
