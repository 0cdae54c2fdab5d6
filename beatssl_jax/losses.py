"""Beat-SSL targets and contrastive losses: pure functions of arrays (METHOD.md section 5).

Views. A batch of N records gives 2N views, indexed 0..2N-1: view i and view i + N come from
the same record (the first half is every record's first view, the second half its second).
Beats follow the same layout: z_b (2N, K, D) is flattened view-major to 2NK rows, beat k of
view i at row i * K + k, so the same beat in the other view sits NK rows away.

Similarities. s_ij = z_i . z_j / tau with z L2-normalised; self-pairs are always excluded.
Excluded pairs (self-pairs, invalid beats) get the finite logit `EXCLUDED_LOGIT` before the
log-softmax, and their targets are zeroed, so no inf * 0 ever makes a NaN; invalid rows of z
are zeroed before the matmul, so garbage (even NaN) in padded rows reaches neither the loss
nor its gradient.

Targets W (M x M for M items per view, expanded to 2M x 2M by `expand_to_views`): zero
diagonal, W[a, a + M] = W[a + M, a] = 1 (the two views of one item), and for every other pair
the similarity of the two items' feature vectors; both views of an item share its row, since
targets come from the original record, not from the views.
  hard    [paper: NT-Xent / SupCon]: positives only.
  soft_1  [ours, best reading of the paper]: clip(cos(phi_a, phi_b), 0, 1) ** gamma, gamma
          the paper's "Exp." (1 or 50). Scaled features lie in [0, 1], so the cosine does
          too; the clip only guards unscaled inputs.
  soft_2  [ours, from SoftCLT, Lee et al., ICLR 2024]: 2 * alpha * sigmoid(-t * D_ab), D the
          Euclidean distance of the feature vectors min-max normalised over the batch: over
          all pairs of items that take part (self-pairs included, so the minimum is 0 and
          D = d / max d). alpha = 0.5 gives targets in (0, 0.5]; t sets how fast they fall
          with distance (t = 5: the farthest pair gets 2 * alpha * sigmoid(-5) = 0.0067).
Feature vectors may carry a mask (beat features: True where measured). Cosines and distances
then use, for each pair, the features both vectors have; a pair with none in common gets
target 0.

Losses.
  NT-Xent:          L = -1/(2N) sum_i log( exp(s_i,p(i)) / sum_{j!=i} exp(s_ij) ).
  soft InfoNCE:     L = -1/(2N) sum_i sum_{j!=i} W_ij log softmax_{k!=i}(s_ik)[j],
                    optionally with every row of W divided by its sum first.
  SupCon (hard beat targets, Khosla et al. 2020, "L_out"): the soft InfoNCE with W the
                    positive indicator, row-normalised: each anchor averages -log p over its
                    positives.
With a validity mask (beats: padding, windows the 3KG mask mostly hid), invalid items are
neither anchors nor candidates, and the mean runs over the anchors that are valid and have
some target mass on a valid candidate; with none, the loss is 0.

With W the hard targets (one 1 per row), the soft InfoNCE equals NT-Xent exactly, with or
without row normalisation (each row already sums to 1).

Global batch. Every function takes the full global batch of embeddings; under jit on a
sharded batch the compiler gathers what it needs, so the loss on any number of devices is
the single-device loss on the same global batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from beatssl_jax.ecg.beats import BEAT_CLASSES

EXCLUDED_LOGIT = -1e9  # logit of an excluded pair: exp underflows to 0, times 0 stays 0
RHYTHM_TARGETS = ("hard", "soft_1", "soft_2")
BEAT_TARGETS = ("none", "hard", "soft_1", "soft_2")


# ---------------------------------------------------------------------------------------------
# Similarities and targets.


def l2_normalize(z: jnp.ndarray, eps: float = 1e-12) -> jnp.ndarray:
    """z / ||z|| along the last axis (a zero vector stays zero), in float32."""
    z = z.astype(jnp.float32)
    return z * jax.lax.rsqrt(jnp.maximum(jnp.sum(z * z, axis=-1, keepdims=True), eps))


def similarity_logits(z: jnp.ndarray, tau: float) -> jnp.ndarray:
    """s (M, M) = z_i . z_j / tau of L2-normalised rows of z (M, D)."""
    zn = l2_normalize(z)
    return zn @ zn.T / tau


def positive_mask(num_items: int) -> jnp.ndarray:
    """(2M, 2M) bool, True at (a, a + M) and (a + M, a): the two views of one item."""
    idx = jnp.arange(2 * num_items)
    return idx[None, :] == (idx[:, None] + num_items) % (2 * num_items)


def expand_to_views(similarity: jnp.ndarray) -> jnp.ndarray:
    """Item targets (M, M) -> view targets W (2M, 2M): both views share their item's row,
    zero diagonal, 1 between the two views of one item."""
    m = similarity.shape[0]
    w = jnp.tile(similarity.astype(jnp.float32), (2, 2))
    w = jnp.where(positive_mask(m), 1.0, w)
    return jnp.where(jnp.eye(2 * m, dtype=bool), 0.0, w)


def hard_targets(num_records: int) -> jnp.ndarray:
    """W (2N, 2N) of NT-Xent: 1 between the two views of a record, 0 elsewhere."""
    return expand_to_views(jnp.zeros((num_records, num_records), jnp.float32))


def _pair_statistics(
    x: jnp.ndarray, mask: jnp.ndarray | None
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """For rows of x (M, F) restricted per pair to their common features: the dot products
    (M, M), the squared norms a_ab = sum_common x_a^2 (M, M), and the counts of common
    features (M, M)."""
    x = x.astype(jnp.float32)
    m = jnp.ones_like(x) if mask is None else mask.astype(jnp.float32)
    xm = x * m
    dot = xm @ xm.T
    sq = (xm * xm) @ m.T  # sq[a, b] = sum_f m_af m_bf x_af^2
    count = m @ m.T
    return dot, sq, count


def cosine_similarity(x: jnp.ndarray, mask: jnp.ndarray | None = None) -> jnp.ndarray:
    """Cosine similarity (M, M) of rows of x (M, F) over each pair's common features.

    A pair with no common feature, or a zero vector on them, gets 0.
    """
    dot, sq, count = _pair_statistics(x, mask)
    norms = sq * sq.T
    cos = dot * jax.lax.rsqrt(jnp.maximum(norms, 1e-30))
    return jnp.where((count > 0) & (norms > 0), cos, 0.0)


def euclidean_distance(
    x: jnp.ndarray, mask: jnp.ndarray | None = None
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Euclidean distance (M, M) of rows of x (M, F) over each pair's common features, and
    whether the pair has any (M, M) bool. With a mask the distance is rescaled to the full
    dimension F (sqrt(F / common) times the distance over the common features)."""
    dot, sq, count = _pair_statistics(x, mask)
    squared = jnp.maximum(sq + sq.T - 2.0 * dot, 0.0)
    comparable = count > 0
    squared = squared * x.shape[-1] / jnp.maximum(count, 1.0)
    # The self-distance is exactly 0; the expansion above leaves rounding error there.
    squared = jnp.where(comparable & ~jnp.eye(x.shape[0], dtype=bool), squared, 0.0)
    return jnp.sqrt(squared), comparable


def soft1_similarity(x: jnp.ndarray, gamma: float, mask: jnp.ndarray | None = None) -> jnp.ndarray:
    """soft_1 item targets (M, M): clip(cos(x_a, x_b), 0, 1) ** gamma."""
    return jnp.power(jnp.clip(cosine_similarity(x, mask), 0.0, 1.0), gamma)


def soft2_similarity(
    x: jnp.ndarray,
    alpha: float,
    t: float,
    mask: jnp.ndarray | None = None,
    valid: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """soft_2 item targets (M, M): 2 * alpha * sigmoid(-t * D), D min-max normalised over
    the comparable pairs of valid items (M,) (self-pairs included); 0 for other pairs."""
    d, comparable = euclidean_distance(x, mask)
    if valid is not None:
        comparable = comparable & valid[:, None] & valid[None, :]
    d_min = jnp.min(jnp.where(comparable, d, jnp.inf))
    d_max = jnp.max(jnp.where(comparable, d, -jnp.inf))
    span = d_max - d_min
    d_norm = jnp.where(span > 0, (d - d_min) / jnp.where(span > 0, span, 1.0), 0.0)
    w = 2.0 * alpha * jax.nn.sigmoid(-t * d_norm)
    return jnp.where(comparable, w, 0.0)


def soft1_targets(phi: jnp.ndarray, gamma: float, mask: jnp.ndarray | None = None) -> jnp.ndarray:
    """W (2N, 2N) of soft_1 from record features phi (N, F)."""
    return expand_to_views(soft1_similarity(phi, gamma, mask))


def soft2_targets(
    phi: jnp.ndarray, alpha: float, t: float, mask: jnp.ndarray | None = None
) -> jnp.ndarray:
    """W (2N, 2N) of soft_2 from record features phi (N, F)."""
    return expand_to_views(soft2_similarity(phi, alpha, t, mask))


def beat_hard_targets(
    beat_class: jnp.ndarray | None,
    num_records: int,
    num_beats: int,
    same_class_positives: bool = True,
    ignore_classes: tuple[int, ...] = (),
) -> jnp.ndarray:
    """Positives (2NK, 2NK) float of the hard beat loss (SupCon).

    The same beat in the other view, and with `same_class_positives`, every other beat of
    the same record and class (in either view); `beat_class` (N, K) int, -1 padded; classes
    in `ignore_classes` (e.g. Q, unclassifiable) never make same-class positives.
    """
    m = num_records * num_beats
    same = jnp.zeros((m, m), bool)
    if same_class_positives:
        if beat_class is None:
            raise ValueError("beat_hard_targets: same_class_positives needs beat_class (N, K)")
        cls = beat_class.reshape(m)
        record = jnp.arange(m) // num_beats
        usable = cls >= 0
        for c in ignore_classes:
            usable = usable & (cls != c)
        same = (record[:, None] == record[None, :]) & (cls[:, None] == cls[None, :])
        same = same & usable[:, None] & usable[None, :]
    return expand_to_views(same.astype(jnp.float32))


# ---------------------------------------------------------------------------------------------
# Losses.


def nt_xent(z: jnp.ndarray, tau: float) -> jnp.ndarray:
    """NT-Xent of 2N views z (2N, D), view i paired with view (i + N) mod 2N."""
    m = z.shape[0]
    if m % 2:
        raise ValueError(f"nt_xent: expected 2N views, got {m} rows")
    s = similarity_logits(z, tau)
    s = jnp.where(jnp.eye(m, dtype=bool), EXCLUDED_LOGIT, s)
    positive = s[jnp.arange(m), (jnp.arange(m) + m // 2) % m]
    return jnp.mean(jax.nn.logsumexp(s, axis=1) - positive)


def soft_infonce_terms(
    z: jnp.ndarray,
    targets: jnp.ndarray,
    tau: float,
    valid: jnp.ndarray | None = None,
    row_normalize: bool = False,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Per-anchor soft InfoNCE (M,) and which anchors count (M,) bool.

    z (M, D), targets W (M, M) (its diagonal is ignored), valid (M,) bool or None.
    """
    m = z.shape[0]
    valid = jnp.ones((m,), bool) if valid is None else valid.astype(bool)
    z = jnp.where(valid[:, None], z.astype(jnp.float32), 0.0)
    candidate = valid[None, :] & ~jnp.eye(m, dtype=bool)  # (M, M) j is a candidate for i
    logits = jnp.where(candidate, similarity_logits(z, tau), EXCLUDED_LOGIT)
    log_p = logits - jax.nn.logsumexp(logits, axis=1, keepdims=True)
    w = jnp.where(candidate, jax.lax.stop_gradient(targets).astype(jnp.float32), 0.0)
    mass = jnp.sum(w, axis=1)
    if row_normalize:
        w = w / jnp.where(mass > 0, mass, 1.0)[:, None]
    per_anchor = -jnp.sum(w * log_p, axis=1)
    counts = valid & (mass > 0)
    return jnp.where(counts, per_anchor, 0.0), counts


def soft_infonce(
    z: jnp.ndarray,
    targets: jnp.ndarray,
    tau: float,
    valid: jnp.ndarray | None = None,
    row_normalize: bool = False,
) -> jnp.ndarray:
    """Soft-target InfoNCE, the mean over counting anchors (0 if none); see module docstring."""
    per_anchor, counts = soft_infonce_terms(z, targets, tau, valid, row_normalize)
    return jnp.sum(per_anchor) / jnp.maximum(jnp.sum(counts), 1)


def supcon(
    z: jnp.ndarray, positives: jnp.ndarray, tau: float, valid: jnp.ndarray | None = None
) -> jnp.ndarray:
    """SupCon (L_out) of z (M, D) with positives (M, M) (bool or 0/1), over valid items."""
    return soft_infonce(z, positives.astype(jnp.float32), tau, valid, row_normalize=True)


# ---------------------------------------------------------------------------------------------
# Configuration and the Beat-SSL total.


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """The Beat-SSL objective L = L_rhythm + lambda_beat * L_beat (METHOD.md section 5).

    rhythm: "hard" (NT-Xent), "soft_1" or "soft_2" (soft InfoNCE on record features phi).
    beat: "none", "hard" (SupCon), "soft_1" or "soft_2" (soft InfoNCE on beat features).
    tau, beat_tau: temperatures of the two levels.
    gamma, beat_gamma: soft_1 exponents (the paper's "Exp.") of the two levels.
    alpha, t: soft_2 parameters, shared by both levels.
    row_normalize, beat_row_normalize: divide each row of a soft W by its sum.
    lambda_beat: weight of the beat loss.
    same_class_positives: hard beat targets also pair same-class beats of one record.
    ignore_beat_classes: class names (of `BEAT_CLASSES`) that never make same-class
      positives; Q is "unclassifiable", not a shared morphology.
    """

    rhythm: str = "hard"
    beat: str = "none"
    tau: float = 0.1
    beat_tau: float = 0.1
    gamma: float = 1.0
    beat_gamma: float = 1.0
    alpha: float = 0.5
    t: float = 5.0
    row_normalize: bool = False
    beat_row_normalize: bool = False
    lambda_beat: float = 1.0
    same_class_positives: bool = True
    ignore_beat_classes: tuple[str, ...] = ("Q",)

    def __post_init__(self):
        object.__setattr__(self, "ignore_beat_classes", tuple(self.ignore_beat_classes))
        if self.rhythm not in RHYTHM_TARGETS:
            raise ValueError(
                f"LossConfig: rhythm must be one of {RHYTHM_TARGETS}, got {self.rhythm!r}"
            )
        if self.beat not in BEAT_TARGETS:
            raise ValueError(f"LossConfig: beat must be one of {BEAT_TARGETS}, got {self.beat!r}")
        for name in ("tau", "beat_tau", "gamma", "beat_gamma", "alpha", "t"):
            if not getattr(self, name) > 0:
                raise ValueError(f"LossConfig: {name} must be positive, got {getattr(self, name)}")
        unknown = set(self.ignore_beat_classes) - set(BEAT_CLASSES)
        if unknown:
            raise ValueError(
                f"LossConfig: ignore_beat_classes {sorted(unknown)} are not beat classes "
                f"{BEAT_CLASSES}"
            )

    @property
    def ignore_class_codes(self) -> tuple[int, ...]:
        return tuple(BEAT_CLASSES.index(c) for c in self.ignore_beat_classes)

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | Any) -> LossConfig:
        """A preset by name (`config.preset`, default "hard") with any fields overridden."""
        get = config.get if hasattr(config, "get") else lambda k, d: getattr(config, k, d)
        base = loss_preset(get("preset", "hard"))
        names = [f.name for f in dataclasses.fields(cls)]
        return dataclasses.replace(base, **{n: get(n, getattr(base, n)) for n in names})


# The rows of the paper's Table 1 (METHOD.md section 8), "rhythm[+beat]" with "^50" on every
# soft_1 level the row's Exp. of 50 applies to. The exponent belongs to soft_1 targets only:
# in "hard+soft1^50" it is the beat exponent, in "soft1^50+hard" the rhythm exponent, in
# "soft1^50+soft1^50" both; rows with a hard or soft_2 level have nothing to raise there.
ABLATION_PRESETS: dict[str, LossConfig] = {
    "hard": LossConfig(rhythm="hard"),
    "hard+hard": LossConfig(rhythm="hard", beat="hard"),
    "hard+soft1": LossConfig(rhythm="hard", beat="soft_1"),
    "hard+soft1^50": LossConfig(rhythm="hard", beat="soft_1", beat_gamma=50.0),
    "hard+soft2": LossConfig(rhythm="hard", beat="soft_2"),
    "soft1": LossConfig(rhythm="soft_1"),
    "soft1^50": LossConfig(rhythm="soft_1", gamma=50.0),
    "soft1+hard": LossConfig(rhythm="soft_1", beat="hard"),
    "soft1^50+hard": LossConfig(rhythm="soft_1", gamma=50.0, beat="hard"),  # the paper's best
    "soft1+soft1": LossConfig(rhythm="soft_1", beat="soft_1"),
    "soft1^50+soft1^50": LossConfig(rhythm="soft_1", gamma=50.0, beat="soft_1", beat_gamma=50.0),
    "soft2": LossConfig(rhythm="soft_2"),
    "soft2+hard": LossConfig(rhythm="soft_2", beat="hard"),
    "soft2+soft2": LossConfig(rhythm="soft_2", beat="soft_2"),
}
BEST_PRESET = "soft1^50+hard"


def loss_preset(name: str, **overrides: Any) -> LossConfig:
    """The `LossConfig` of an ablation row (`ABLATION_PRESETS`), with fields overridden."""
    if name not in ABLATION_PRESETS:
        raise ValueError(f"unknown loss preset {name!r}; known: {list(ABLATION_PRESETS)}")
    return dataclasses.replace(ABLATION_PRESETS[name], **overrides)


def rhythm_targets(
    config: LossConfig, num_records: int, features: jnp.ndarray | None
) -> jnp.ndarray:
    """W (2N, 2N) of the rhythm level; soft targets need record features phi (N, F)."""
    if config.rhythm == "hard":
        return hard_targets(num_records)
    if features is None:
        raise ValueError(f"rhythm targets {config.rhythm!r} need record features (N, F)")
    if features.shape[0] != num_records:
        raise ValueError(
            f"rhythm targets: features have {features.shape[0]} rows, expected {num_records}"
        )
    if config.rhythm == "soft_1":
        return soft1_targets(features, config.gamma)
    return soft2_targets(features, config.alpha, config.t)


def rhythm_loss(
    z_rhythm: jnp.ndarray, config: LossConfig, features: jnp.ndarray | None = None
) -> jnp.ndarray:
    """L_rhythm of z_r (2N, D); soft targets from record features phi (N, F) in [0, 1]."""
    if z_rhythm.shape[0] % 2:
        raise ValueError(f"rhythm_loss: expected 2N views, got {z_rhythm.shape[0]} rows")
    if config.rhythm == "hard":
        return nt_xent(z_rhythm, config.tau)
    w = rhythm_targets(config, z_rhythm.shape[0] // 2, features)
    return soft_infonce(z_rhythm, w, config.tau, row_normalize=config.row_normalize)


def beat_targets(
    config: LossConfig,
    num_records: int,
    num_beats: int,
    beat_valid: jnp.ndarray,
    beat_class: jnp.ndarray | None = None,
    beat_features: jnp.ndarray | None = None,
    beat_features_mask: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """W (2NK, 2NK) of the beat level, rows view-major (see the module docstring).

    beat_valid (2N, K) bool; beat_class (N, K) for hard targets; beat_features (N, K, Fb)
    with beat_features_mask (N, K, Fb) for soft targets. The soft_2 min-max runs over the
    beats valid in at least one view.
    """
    m = num_records * num_beats
    if config.beat == "hard":
        return beat_hard_targets(
            beat_class,
            num_records,
            num_beats,
            config.same_class_positives,
            config.ignore_class_codes,
        )
    if beat_features is None:
        raise ValueError(f"beat targets {config.beat!r} need beat features (N, K, Fb)")
    x = beat_features.reshape(m, -1)
    mask = None if beat_features_mask is None else beat_features_mask.reshape(m, -1)
    if config.beat == "soft_1":
        return expand_to_views(soft1_similarity(x, config.beat_gamma, mask))
    present = (beat_valid[:num_records] | beat_valid[num_records:]).reshape(m)
    return expand_to_views(soft2_similarity(x, config.alpha, config.t, mask, present))


def beat_loss(
    z_beat: jnp.ndarray,
    beat_valid: jnp.ndarray,
    config: LossConfig,
    beat_class: jnp.ndarray | None = None,
    beat_features: jnp.ndarray | None = None,
    beat_features_mask: jnp.ndarray | None = None,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(L_beat, number of anchors that count) of z_b (2N, K, D) over all beats of the batch.

    beat_valid (2N, K): real beats visible enough in their view (`models.beat_validity`).
    """
    views, num_beats, _ = z_beat.shape
    if views % 2 or beat_valid.shape != (views, num_beats):
        raise ValueError(
            f"beat_loss: expected z_beat (2N, K, D) and beat_valid (2N, K), got "
            f"{z_beat.shape} and {beat_valid.shape}"
        )
    n = views // 2
    w = beat_targets(
        config, n, num_beats, beat_valid, beat_class, beat_features, beat_features_mask
    )
    z = z_beat.reshape(views * num_beats, -1)
    valid = beat_valid.reshape(-1)
    if config.beat == "hard":
        per_anchor, counts = soft_infonce_terms(z, w, config.beat_tau, valid, row_normalize=True)
    else:
        per_anchor, counts = soft_infonce_terms(
            z, w, config.beat_tau, valid, row_normalize=config.beat_row_normalize
        )
    num = jnp.sum(counts)
    return jnp.sum(per_anchor) / jnp.maximum(num, 1), num


def total_loss(
    config: LossConfig,
    z_rhythm: jnp.ndarray,
    z_beat: jnp.ndarray | None = None,
    beat_valid: jnp.ndarray | None = None,
    *,
    features: jnp.ndarray | None = None,
    beat_class: jnp.ndarray | None = None,
    beat_features: jnp.ndarray | None = None,
    beat_features_mask: jnp.ndarray | None = None,
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """L = L_rhythm + lambda_beat * L_beat and its parts.

    z_rhythm (2N, D), z_beat (2N, K, D), beat_valid (2N, K) bool; per-record targets
    (features (N, F), beat_class (N, K), beat_features and its mask (N, K, Fb)) come once
    per record, not per view. Returns (loss, metrics) with metrics rhythm_loss, beat_loss
    and beat_anchors (0 when config.beat is "none").
    """
    l_rhythm = rhythm_loss(z_rhythm, config, features)
    if config.beat == "none":
        l_beat, anchors = jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32)
    else:
        if z_beat is None or beat_valid is None:
            raise ValueError(f"beat loss {config.beat!r} needs z_beat and beat_valid")
        l_beat, anchors = beat_loss(
            z_beat, beat_valid, config, beat_class, beat_features, beat_features_mask
        )
    loss = l_rhythm + config.lambda_beat * l_beat
    return loss, {"rhythm_loss": l_rhythm, "beat_loss": l_beat, "beat_anchors": anchors}
