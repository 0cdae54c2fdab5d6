"""The offline target stage of Beat-SSL: everything a record needs before training.

Beat-SSL precomputes, once per record (METHOD.md sections 1 and 4): the R peaks, the record
feature vector phi (soft rhythm targets), per-beat feature vectors (soft beat targets) and
one class per beat (hard beat targets). Per-beat arrays are laid out in a fixed capacity
and padded, so that batches have static shapes under jit.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from beatssl_jax.ecg.beats import BEAT_CLASSES, beat_features, classify_beats, pad_beats
from beatssl_jax.ecg.features import record_features
from beatssl_jax.ecg.peaks import detect_r_peaks

PAD_INDEX = -1  # r_peaks and beat_class padding


@dataclasses.dataclass(frozen=True)
class RecordTargets:
    """Targets of one record; per-beat arrays have `capacity` rows, the first `num_beats` real.

    r_peaks:        (capacity,) int32 sample indices, -1 padded.
    num_beats:      number of real rows (beats detected, capped at capacity).
    features:       (F,) float32 record feature vector phi, unscaled, NaN where undefined.
    beat_features:  (capacity, Fb) float32, NaN padded.
    beat_class:     (capacity,) int8 codes into BEAT_CLASSES (N, S, V, Q), -1 padded.
    total_beats:    beats detected before the capacity cap.
    """

    r_peaks: np.ndarray
    num_beats: int
    features: np.ndarray
    beat_features: np.ndarray
    beat_class: np.ndarray
    total_beats: int


def select_beats(r_peaks: np.ndarray, capacity: int) -> np.ndarray:
    """Indices of at most `capacity` beats spread evenly over the record (all if fewer).

    Taking the first K beats would bias beat contrast towards the start of every record.
    """
    n = len(r_peaks)
    if n <= capacity:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, capacity)).astype(np.int64))


def compute_targets(
    ecg: np.ndarray, fs: float, capacity: int, r_peaks: np.ndarray | None = None
) -> RecordTargets:
    """R peaks (detected unless given), phi, beat features and classes of a (T, 12) record."""
    peaks = detect_r_peaks(ecg, fs) if r_peaks is None else np.asarray(r_peaks, np.int64)
    phi = record_features(ecg, fs, peaks)
    per_beat = beat_features(ecg, fs, peaks)
    classes = classify_beats(per_beat)
    keep = select_beats(peaks, capacity)
    r_padded, count = pad_beats(peaks[keep].astype(np.int32), capacity, PAD_INDEX)
    feats_padded, _ = pad_beats(per_beat[keep], capacity, np.nan)
    class_padded, _ = pad_beats(classes[keep], capacity, PAD_INDEX)
    return RecordTargets(
        r_peaks=r_padded,
        num_beats=count,
        features=phi,
        beat_features=feats_padded,
        beat_class=class_padded,
        total_beats=len(peaks),
    )


def class_counts(beat_class: np.ndarray) -> dict[str, int]:
    """Counts per class name of a (possibly padded) beat-class array."""
    codes = np.asarray(beat_class).ravel()
    return {name: int(np.sum(codes == k)) for k, name in enumerate(BEAT_CLASSES)}
