"""Reading WFDB records: canonical order, units, and clear errors for bad records."""

import numpy as np
import pytest
import wfdb

from beatssl_jax.ecg import leads, vcg
from beatssl_jax.ecg.errors import RecordError
from beatssl_jax.ecg.records import read_wfdb, validate_signal
from tests.conftest import shared_data


def _write(tmp_path, name, signal, names, units, fs=500):
    wfdb.wrsamp(
        name, fs=fs, units=list(units), sig_name=list(names), p_signal=signal,
        fmt=["16"] * len(names), write_dir=str(tmp_path),
    )  # fmt: skip
    return tmp_path / name


def _dipole_mv(t=1000, seed=0):
    v = np.random.default_rng(seed).normal(scale=0.3, size=(t, 3))
    return v @ vcg.DOWER.T.astype(np.float64)


def test_reads_microvolts_mixed_case_and_shuffled_order(tmp_path):
    x = _dipole_mv()
    perm = np.random.default_rng(1).permutation(12)
    names = [leads.LEADS[p].upper() for p in perm]
    path = _write(tmp_path, "uv_rec", x[:, perm] * 1000.0, names, ["uV"] * 12)
    rec = read_wfdb(path)
    assert rec.fs == 500 and rec.units == "mV" and rec.signal.shape == (1000, 12)
    np.testing.assert_allclose(rec.signal, x, atol=2e-3)  # 16-bit quantisation
    assert rec.source_leads == tuple(names)


def test_eight_lead_record_is_completed(tmp_path):
    x = _dipole_mv()
    keep = [leads.LEAD_INDEX[n] for n in leads.INDEPENDENT_LEADS]
    path = _write(tmp_path, "eight", x[:, keep], leads.INDEPENDENT_LEADS, ["mV"] * 8)
    rec = read_wfdb(path)
    np.testing.assert_allclose(rec.signal, x, atol=1e-2)


def test_wrong_lead_count_names_record_and_missing_leads(tmp_path):
    x = _dipole_mv()[:, 6:]
    path = _write(tmp_path, "chest_only", x, leads.LEADS[6:], ["mV"] * 6)
    with pytest.raises(RecordError, match=r"chest_only: expected the 12 standard leads, found 6"):
        read_wfdb(path)


def test_nan_samples_name_record_and_leads(tmp_path):
    x = _dipole_mv()
    x[100:110, 1] = np.nan
    path = _write(tmp_path, "gappy", x, leads.LEADS, ["mV"] * 12)
    with pytest.raises(RecordError, match=r"gappy: 10 NaN or infinite samples in leads II \(10\)"):
        read_wfdb(path)


def test_unknown_units_name_the_record(tmp_path):
    path = _write(tmp_path, "pressure", _dipole_mv(), leads.LEADS, ["mmHg"] * 12)
    with pytest.raises(RecordError, match=r"pressure: unknown signal units 'mmHg'"):
        read_wfdb(path)


def test_missing_and_truncated_files_name_the_record(tmp_path):
    with pytest.raises(RecordError, match="nowhere"):
        read_wfdb(tmp_path / "nowhere")
    path = _write(tmp_path, "cut", _dipole_mv(), leads.LEADS, ["mV"] * 12)
    dat = tmp_path / "cut.dat"
    dat.write_bytes(dat.read_bytes()[:1001])
    with pytest.raises(RecordError, match="cut"):
        read_wfdb(path)


def test_validate_signal_shape_and_length():
    with pytest.raises(RecordError, match=r"r: expected a \(T, 12\) signal, got shape \(10, 8\)"):
        validate_signal(np.zeros((10, 8)), "r")
    with pytest.raises(RecordError, match="has 10 samples, need >= 100"):
        validate_signal(np.zeros((10, 12)), "r", min_samples=100)


def test_limb_lead_inconsistency_detects_per_lead_rescaling():
    x = _dipole_mv(seed=3)
    consistent = leads.to_canonical(x[:, [0, 1, 6, 7, 8, 9, 10, 11]], leads.INDEPENDENT_LEADS)
    assert leads.limb_lead_inconsistency(consistent) < 1e-9
    assert leads.limb_lead_inconsistency(x) < 5e-3  # Dower rows are rounded to 3 decimals
    zscored = (x - x.mean(0)) / x.std(0)
    assert leads.limb_lead_inconsistency(zscored) > 0.1


def test_real_ludb_header_gains_break_einthoven_and_common_gain_restores_it():
    ludb = shared_data("ludb")
    names = (ludb / "RECORDS").read_text().split()[:10]
    for name in names:
        raw = read_wfdb(ludb / name)
        fixed = read_wfdb(ludb / name, gain_policy="common")
        assert raw.fs == 500 and raw.units == "mV" and raw.signal.shape == (5000, 12)
        # The ADC values share one scale: with one gain the limb leads obey Einthoven to
        # quantisation level, while the header's per-lead gains distort them.
        assert fixed.limb_lead_inconsistency < 0.03, name
        assert raw.limb_lead_inconsistency > 0.08, name
        i, ii, iii = (fixed.signal[:, k] for k in range(3))
        assert np.percentile(np.abs(iii - (ii - i)), 99) < 0.01
        assert 0.05 < np.abs(fixed.signal).max() < 10  # plausibly millivolts


def test_real_ptbxl_nu_record_keeps_normalised_units():
    ptbxl = shared_data("ptbxl")
    hea = sorted((ptbxl / "records500").rglob("*.hea"))[0]
    rec = read_wfdb(hea.with_suffix(""))
    assert rec.signal.shape == (5000, 12)
    assert rec.units in ("NU", "mV")
