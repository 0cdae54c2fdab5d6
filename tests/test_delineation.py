"""Wave masks <-> wave intervals, mask clean-up and peak picking (beatssl_jax.ecg.delineation)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from beatssl_jax.ecg.delineation import (
    WAVE_CODES,
    WAVE_NAMES,
    CleanupConfig,
    WaveInterval,
    clean_mask,
    intervals_to_mask,
    mask_to_intervals,
    peak_of,
)


def _random_run_mask(rng: np.random.Generator, length: int) -> np.ndarray:
    """A mask built from runs of random codes and lengths, adjacent runs possibly equal."""
    codes = rng.integers(0, 4, size=length)
    lengths = rng.integers(1, 8, size=length)
    return np.repeat(codes, lengths)[:length].astype(np.int8)


def test_names_and_codes():
    assert WAVE_NAMES == ("P", "QRS", "T")
    assert WAVE_CODES == {"P": 1, "QRS": 2, "T": 3}
    assert WaveInterval("QRS", 3, 5).code == 2


def test_mask_to_intervals_hand_case():
    #                0  1  2  3  4  5  6  7  8  9
    mask = np.array([0, 1, 1, 0, 2, 2, 2, 3, 3, 0])
    assert mask_to_intervals(mask) == [
        WaveInterval("P", 1, 2),
        WaveInterval("QRS", 4, 6),
        WaveInterval("T", 7, 8),
    ]
    assert mask_to_intervals(np.zeros(5, int)) == []
    assert mask_to_intervals(np.full(4, 3)) == [WaveInterval("T", 0, 3)]


def test_roundtrip_random_masks():
    rng = np.random.default_rng(0)
    for _ in range(50):
        m = _random_run_mask(rng, int(rng.integers(1, 200)))
        intervals = mask_to_intervals(m)
        np.testing.assert_array_equal(intervals_to_mask(intervals, m.size), m)
        # Independent check of maximality: consecutive intervals of one kind never touch.
        for a, b in itertools.pairwise(intervals):
            assert a.offset < b.onset
            assert not (a.kind == b.kind and a.offset + 1 == b.onset)
        # Every nonzero sample is covered once.
        assert sum(iv.offset - iv.onset + 1 for iv in intervals) == int(np.sum(m != 0))


def test_valid_cuts_runs_at_the_edge():
    mask = np.array([2, 2, 2, 0, 1, 1, 0, 3, 3, 3])
    valid = np.zeros(10, bool)
    valid[1:9] = True
    assert mask_to_intervals(mask, valid=valid) == [
        WaveInterval("QRS", 1, 2),
        WaveInterval("P", 4, 5),
        WaveInterval("T", 7, 8),
    ]
    # A hole in the valid region splits a run.
    valid = np.ones(10, bool)
    valid[8] = False
    assert mask_to_intervals(np.full(10, 1), valid=valid) == [
        WaveInterval("P", 0, 7),
        WaveInterval("P", 9, 9),
    ]


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="codes must lie"):
        mask_to_intervals(np.array([0, 4]))
    with pytest.raises(ValueError, match="valid has shape"):
        mask_to_intervals(np.zeros(4, int), valid=np.ones(3, bool))
    with pytest.raises(ValueError, match="kind"):
        WaveInterval("U", 0, 1)
    with pytest.raises(ValueError, match="beyond"):
        intervals_to_mask([WaveInterval("P", 2, 5)], 5)
    with pytest.raises(ValueError, match="expected 3 values"):
        CleanupConfig(min_duration_ms=(1.0, 2.0))


def test_clean_mask_fills_short_same_wave_gaps():
    fs = 1000.0  # 1 sample = 1 ms
    config = CleanupConfig(min_duration_ms=(0.0, 0.0, 0.0), max_gap_ms=3.0)
    # Gap of 2 samples between two QRS runs: filled. Gap of 3 samples (not < 3 ms): kept.
    m = np.array([2, 2, 0, 0, 2, 2, 0, 0, 0, 2])
    np.testing.assert_array_equal(clean_mask(m, fs, config), [2, 2, 2, 2, 2, 2, 0, 0, 0, 2])
    # Short gap between different waves, or at the edge: untouched.
    m = np.array([0, 1, 1, 0, 2, 2, 0])
    np.testing.assert_array_equal(clean_mask(m, fs, config), m)


def test_clean_mask_removes_short_runs_after_filling():
    fs = 500.0  # 1 sample = 2 ms
    config = CleanupConfig(min_duration_ms=(6.0, 6.0, 10.0), max_gap_ms=3.0)
    #               P: 2 samples = 4 ms < 6 -> removed; QRS 3 samples = 6 ms -> kept
    #               T: three runs of 2 with 1-sample gaps = 8 samples = 16 ms -> kept
    m = np.array([1, 1, 0, 2, 2, 2, 0, 3, 3, 0, 3, 3, 0, 3, 3])
    # The third T run also sits 1 sample (2 ms < 3 ms) after the second: all three merge.
    expected = [0, 0, 0, 2, 2, 2, 0, 3, 3, 3, 3, 3, 3, 3, 3]
    out = clean_mask(m, fs, config)
    assert out.dtype == np.int8
    np.testing.assert_array_equal(out, expected)
    # With a 2-sample gap (4 ms, not < 3 ms) the runs stay apart and each is too short.
    m = np.array([3, 3, 0, 0, 3, 3, 3, 3, 3])
    np.testing.assert_array_equal(clean_mask(m, fs, config), [0, 0, 0, 0, 3, 3, 3, 3, 3])


def test_clean_mask_per_column():
    fs = 1000.0
    config = CleanupConfig(min_duration_ms=(2.0, 2.0, 2.0), max_gap_ms=2.0)
    a = np.array([1, 0, 1, 1, 0, 0, 2, 0])
    b = np.array([3, 3, 3, 0, 2, 0, 0, 0])
    out = clean_mask(np.stack([a, b], axis=1), fs, config)
    assert out.shape == (8, 2)
    np.testing.assert_array_equal(out[:, 0], [1, 1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(out[:, 1], [3, 3, 3, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(out[:, 0], clean_mask(a, fs, config))


def test_clean_mask_default_config_leaves_no_short_wave():
    assert hash(CleanupConfig()) == hash(CleanupConfig())
    fs = 500.0
    minimum = dict(zip(WAVE_NAMES, CleanupConfig().min_duration_ms, strict=True))
    rng = np.random.default_rng(1)
    for _ in range(20):
        m = _random_run_mask(rng, 300)
        out = clean_mask(m, fs)
        for iv in mask_to_intervals(out):
            assert (iv.offset - iv.onset + 1) * 1000.0 / fs >= minimum[iv.kind]
        # Only samples that were a wave, or a gap, change; a removed run becomes background.
        changed = out != m
        assert np.all((out[changed] == 0) | (m[changed] == 0))


def test_peak_of():
    x = np.array([0.0, 0.1, 0.25, 0.1, -0.9, 0.0, 5.0])
    assert peak_of(x, WaveInterval("QRS", 1, 5)) == 4  # median 0.1, largest |x - 0.1| at 4
    assert peak_of(x, WaveInterval("T", 0, 3)) == 2
    with pytest.raises(ValueError, match="beyond"):
        peak_of(x, WaveInterval("P", 5, 9))
