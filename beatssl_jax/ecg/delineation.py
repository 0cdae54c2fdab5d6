"""Wave masks and wave intervals: the two forms of an ECG delineation, and the step between.

A wave mask gives one code per sample: 0 background, 1 P wave, 2 QRS complex, 3 T wave
(the codes of `synthetic.WAVE_CLASSES` and of the LUDB segmentation targets). A wave
interval is one wave as LUDB annotates it (Kalyakulina et al. 2020; METHOD.md section 7):
`(` onset, a peak symbol (`p` P, `N` QRS, `t` T) and `)` offset, all inclusive sample
indices. `peak_of` picks the peak position when a predicted interval is written back as an
annotation.

`clean_mask` is the post-processing of a predicted mask: short background gaps inside one
wave are filled, then runs too short to be a wave are removed. Its knobs live in
`CleanupConfig`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

WAVE_NAMES: tuple[str, ...] = ("P", "QRS", "T")  # codes 1, 2, 3; 0 is background
WAVE_CODES: dict[str, int] = {name: k + 1 for k, name in enumerate(WAVE_NAMES)}
NUM_CODES = len(WAVE_NAMES) + 1


@dataclasses.dataclass(frozen=True)
class WaveInterval:
    """One wave: `kind` in WAVE_NAMES, `onset` and `offset` inclusive sample indices."""

    kind: str
    onset: int
    offset: int

    def __post_init__(self) -> None:
        if self.kind not in WAVE_CODES:
            raise ValueError(f"WaveInterval: kind {self.kind!r} is not one of {WAVE_NAMES}")
        if not 0 <= self.onset <= self.offset:
            raise ValueError(
                f"WaveInterval {self.kind}: need 0 <= onset <= offset, "
                f"got onset {self.onset}, offset {self.offset}"
            )

    @property
    def code(self) -> int:
        """Mask code of this wave (1 P, 2 QRS, 3 T)."""
        return WAVE_CODES[self.kind]


def _check_mask_1d(mask: np.ndarray, name: str) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim != 1:
        raise ValueError(f"{name}: expected a (T,) wave mask, got shape {m.shape}")
    if m.size and (m.min() < 0 or m.max() >= NUM_CODES):
        raise ValueError(
            f"{name}: codes must lie in 0..{NUM_CODES - 1}, found {m.min()}..{m.max()}"
        )
    return m.astype(np.int64, copy=False)


def _runs(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run-length encoding of m: (T,) int -> starts (R,), lengths (R,), values (R,)."""
    if m.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    starts = np.flatnonzero(np.concatenate([[True], m[1:] != m[:-1]]))
    lengths = np.diff(np.concatenate([starts, [m.size]]))
    return starts, lengths, m[starts]


def mask_to_intervals(mask: np.ndarray, valid: np.ndarray | None = None) -> list[WaveInterval]:
    """The waves of a mask: maximal runs of one nonzero code, in time order.

    mask:  (T,) int codes 0..3.
    valid: (T,) bool or None. Samples outside `valid` are treated as background, so a run
           that crosses the edge of the valid region is kept, cut to its valid part.
    """
    m = _check_mask_1d(mask, "mask_to_intervals mask")
    if valid is not None:
        v = np.asarray(valid, dtype=bool)
        if v.shape != m.shape:
            raise ValueError(
                f"mask_to_intervals: valid has shape {v.shape}, mask has shape {m.shape}"
            )
        m = np.where(v, m, 0)
    starts, lengths, values = _runs(m)
    keep = values != 0
    return [
        WaveInterval(WAVE_NAMES[int(c) - 1], int(s), int(s + n - 1))
        for s, n, c in zip(starts[keep], lengths[keep], values[keep], strict=True)
    ]


def intervals_to_mask(intervals: Iterable[WaveInterval], length: int) -> np.ndarray:
    """(T,) int8 mask with each interval's samples set to its code; later intervals win."""
    mask = np.zeros(int(length), dtype=np.int8)
    for iv in intervals:
        if iv.offset >= length:
            raise ValueError(
                f"intervals_to_mask: {iv.kind} interval [{iv.onset}, {iv.offset}] "
                f"ends beyond a mask of length {length}"
            )
        mask[iv.onset : iv.offset + 1] = iv.code
    return mask


@dataclasses.dataclass(frozen=True)
class CleanupConfig:
    """Knobs of `clean_mask`.

    min_duration_ms: shortest run kept, per wave (P, QRS, T); shorter runs become background.
    max_gap_ms:      background gaps strictly shorter than this between two runs of the same
                     wave are filled with that wave.
    """

    min_duration_ms: tuple[float, float, float] = (20.0, 20.0, 40.0)
    max_gap_ms: float = 10.0

    def __post_init__(self) -> None:
        if len(self.min_duration_ms) != len(WAVE_NAMES):
            raise ValueError(
                f"CleanupConfig.min_duration_ms: expected {len(WAVE_NAMES)} values "
                f"{WAVE_NAMES}, got {self.min_duration_ms}"
            )
        if min(self.min_duration_ms) < 0 or self.max_gap_ms < 0:
            raise ValueError(
                f"CleanupConfig: durations must be >= 0, got min_duration_ms "
                f"{self.min_duration_ms}, max_gap_ms {self.max_gap_ms}"
            )


def _clean_1d(m: np.ndarray, fs: float, config: CleanupConfig) -> np.ndarray:
    # Step 1: fill background runs with the same wave on both sides and a short duration.
    _, lengths, values = _runs(m)
    ms_per_sample = 1000.0 / fs
    if values.size >= 3:
        inner = np.arange(1, values.size - 1)
        fill = (
            (values[inner] == 0)
            & (values[inner - 1] == values[inner + 1])
            & (values[inner - 1] != 0)
            & (lengths[inner] * ms_per_sample < config.max_gap_ms)
        )
        values = values.copy()
        values[inner[fill]] = values[inner[fill] - 1]
        _, lengths, values = _runs(np.repeat(values, lengths))
    # Step 2: remove waves shorter than their minimum duration.
    min_ms = np.concatenate([[0.0], np.asarray(config.min_duration_ms, dtype=np.float64)])
    short = (values != 0) & (lengths * ms_per_sample < min_ms[values])
    values = np.where(short, 0, values)
    return np.repeat(values, lengths).astype(np.int8)


def clean_mask(mask: np.ndarray, fs: float, config: CleanupConfig = CleanupConfig()) -> np.ndarray:
    """Post-processing of a predicted wave mask: (T,) or (T, L) int -> same shape int8.

    First, a background gap shorter than `config.max_gap_ms` between two runs of the same
    wave is filled with that wave; then every run shorter than its wave's
    `config.min_duration_ms` is set to background. A (T, L) mask is cleaned per column.
    """
    if fs <= 0:
        raise ValueError(f"clean_mask: fs must be positive, got {fs}")
    m = np.asarray(mask)
    if m.ndim == 1:
        return _clean_1d(_check_mask_1d(m, "clean_mask mask"), fs, config)
    if m.ndim == 2:
        cols = [
            _clean_1d(_check_mask_1d(m[:, j], f"clean_mask mask column {j}"), fs, config)
            for j in range(m.shape[1])
        ]
        return np.stack(cols, axis=1) if cols else m.astype(np.int8)
    raise ValueError(f"clean_mask: expected a (T,) or (T, L) mask, got shape {m.shape}")


def peak_of(signal: np.ndarray, interval: WaveInterval) -> int:
    """Peak sample of a wave: the largest absolute deviation from the interval's median.

    signal: (T,) float, one lead. Returns an index in [onset, offset] (the first on ties),
    used as the `p` / `N` / `t` mark when an interval is written as an LUDB annotation.
    """
    x = np.asarray(signal, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"peak_of: expected a (T,) signal, got shape {x.shape}")
    if interval.offset >= x.size:
        raise ValueError(
            f"peak_of: {interval.kind} interval [{interval.onset}, {interval.offset}] "
            f"ends beyond a signal of length {x.size}"
        )
    seg = x[interval.onset : interval.offset + 1]
    return interval.onset + int(np.argmax(np.abs(seg - np.median(seg))))
