"""Units, resampling, filtering and normalisation, against analytic signals."""

import numpy as np
import pytest

from beatssl_jax.ecg import preprocess
from beatssl_jax.ecg.errors import RecordError


def _sine(freq, fs, seconds=10.0, amplitude=1.0, phase=0.0):
    t = np.arange(int(seconds * fs)) / fs
    return amplitude * np.sin(2 * np.pi * freq * t + phase)


@pytest.mark.parametrize(
    ("unit", "factor"), [("mV", 1.0), ("mv", 1.0), ("uV", 1e-3), ("µV", 1e-3), ("V", 1e3)]
)
def test_to_millivolts(unit, factor):
    x = np.full((4, 12), 2.0, np.float32)
    y, units = preprocess.to_millivolts(x, unit)
    assert units == "mV"
    np.testing.assert_allclose(y, 2.0 * factor)


def test_per_lead_units_and_nu():
    x = np.ones((3, 2), np.float32)
    y, units = preprocess.to_millivolts(x, ["mV", "uV"])
    np.testing.assert_allclose(y[0], [1.0, 1e-3])
    y, units = preprocess.to_millivolts(x, ["NU", "nu"])
    assert units == "NU" and np.array_equal(y, x)


def test_unit_errors_name_the_record():
    with pytest.raises(RecordError, match=r"rec9: unknown signal units 'mmHg'"):
        preprocess.to_millivolts(np.ones((3, 1)), "mmHg", record="rec9")
    with pytest.raises(RecordError, match="mixes normalised"):
        preprocess.to_millivolts(np.ones((3, 2)), ["NU", "mV"], record="rec9")


@pytest.mark.parametrize(("fs_in", "fs_out"), [(500, 100), (100, 500), (257, 500), (1000, 500)])
def test_resample_keeps_frequency_and_amplitude(fs_in, fs_out):
    x = _sine(5.0, fs_in)[:, None].repeat(2, axis=1)
    y = preprocess.resample(x, fs_in, fs_out)
    assert y.shape[0] == preprocess.resampled_length(x.shape[0], fs_in, fs_out)
    expected = _sine(5.0, fs_out, seconds=y.shape[0] / fs_out)
    core = slice(fs_out, -fs_out)  # ignore the filter's edge transients
    np.testing.assert_allclose(y[core, 0], expected[core], atol=0.02)


def test_bandpass_passes_band_and_rejects_drift_and_mains():
    fs = 500
    inband = _sine(10.0, fs)
    x = (inband + _sine(0.05, fs, amplitude=3.0) + _sine(60.0, fs, amplitude=0.5))[:, None]
    y = preprocess.bandpass(x, fs, 0.5, 40.0, 4)[:, 0]
    core = slice(2 * fs, -2 * fs)
    np.testing.assert_allclose(y[core], inband[core], atol=0.05)


def test_bandpass_is_zero_phase():
    fs = 500
    t = np.arange(5000)
    pulse = np.exp(-0.5 * ((t - 2500) / 8.0) ** 2)[:, None]
    y = preprocess.bandpass(pulse, fs, 0.5, 40.0)
    assert int(np.argmax(y[:, 0])) == 2500


def test_bandpass_argument_errors():
    with pytest.raises(ValueError, match="high cut-off"):
        preprocess.bandpass(np.zeros((100, 1)), 50, 0.5, 40.0)
    with pytest.raises(ValueError, match="low cut-off"):
        preprocess.bandpass(np.zeros((100, 1)), 500, 50.0, 40.0)


def test_normalize_uses_one_scale_for_all_leads():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 12)) * np.arange(1, 13)
    y, scale = preprocess.normalize_record(x, "std")
    np.testing.assert_allclose(y * scale, x, rtol=1e-5, atol=1e-5)
    # Ratios between leads survive (per-lead z-scoring would destroy them).
    np.testing.assert_allclose(y[:, 11] / y[:, 0], x[:, 11] / x[:, 0], rtol=1e-4)
    centred = x - x.mean(axis=0)
    assert scale == pytest.approx(np.sqrt(np.mean(centred**2)))


def test_mad_scale_of_gaussian_noise_matches_its_sigma():
    x = np.random.default_rng(1).normal(scale=2.0, size=(20000, 12))
    assert preprocess.record_scale(x, "mad") == pytest.approx(2.0, rel=0.03)
    assert preprocess.record_scale(x, "none") == 1.0


def test_normalize_flat_record_is_an_error():
    with pytest.raises(RecordError, match="flat: cannot normalise"):
        preprocess.normalize_record(np.zeros((10, 12)), "std", record="flat")


def test_preprocess_pipeline_rate_and_nan_check():
    x = np.stack([_sine(5.0, 250) for _ in range(12)], axis=1).astype(np.float32)
    y = preprocess.preprocess(x, 250, preprocess.PreprocessConfig(fs=500, normalization="std"))
    assert y.shape == (5000, 12) and y.dtype == np.float32
    assert np.std(y) == pytest.approx(1.0, rel=1e-3)
    x[7, 3] = np.nan
    with pytest.raises(RecordError, match="bad: signal contains NaN"):
        preprocess.preprocess(x, 250, record="bad")


def test_bandpass_cap_high_keeps_a_fixed_cutoff_valid_at_low_rates():
    fs = 50
    x = (_sine(5.0, fs) + _sine(24.0, fs, amplitude=0.5))[:, None]
    with pytest.raises(ValueError, match="high cut-off"):
        preprocess.bandpass(x, fs, 0.5, 40.0)
    y = preprocess.bandpass(x, fs, 0.5, 40.0, cap_high=True)[:, 0]
    # The cut-off became 0.45 * 50 = 22.5 Hz: 5 Hz passes, 24 Hz is attenuated.
    core = slice(2 * fs, -2 * fs)
    residual = y[core] - _sine(5.0, fs)[core]
    assert np.std(residual) < 0.5 * 0.5 / np.sqrt(2)
    np.testing.assert_allclose(preprocess.bandpass(x, 500, 0.5, 40.0, cap_high=True),
                               preprocess.bandpass(x, 500, 0.5, 40.0))  # fmt: skip
