"""classify: users' WFDB records through a saved linear probe into a CSV."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal

from beatssl_jax import classify, linear_probe
from beatssl_jax.ecg.errors import RecordError
from beatssl_jax.ecg.leads import LEADS
from beatssl_jax.ecg.synthetic import SyntheticConfig, generate_record
from beatssl_jax.models.encoder import Encoder, encoder_preset
from configs.linear_probe import get_config
from data_builders.common import SignalConfig
from tests.conftest import PROJECT_ROOT, python_env, shared_data, write_wfdb_record

CLASSES = ["CD", "HYP", "MI", "NORM", "STTC"]
THRESHOLDS = np.array([0.2, 0.4, 0.5, 0.6, 0.8], np.float32)
# Lead names as users' files spell them (`leads.normalize_lead_name` maps them to LEADS).
USER_LEADS = ["i", "II", "iii", "avr", "AVL", "aVF", "Lead_V1", "v2", "V3", "V4", "V5", "V6"]


def _probe_run(workdir, num_samples: int = 5000, seed: int = 0):
    """A finished probe run in the layout linear_probe writes: a tiny random encoder and a
    random head on it, with known thresholds."""
    workdir.mkdir(parents=True)
    config = get_config()
    (workdir / "config.json").write_text(config.to_json_best_effort())
    cfg = encoder_preset("tiny")
    enc = Encoder(cfg).init(jax.random.key(seed), jnp.zeros((1, num_samples, 12)))["params"]
    d = cfg.widths[-1]
    rng = np.random.default_rng(seed)
    state = {
        "encoder": enc,
        "head": {
            "kernel": rng.normal(0, 1, (d, 5)).astype(np.float32),
            "bias": np.zeros(5, np.float32),
        },
        "feature_mean": np.zeros(d, np.float32),
        "feature_std": np.full(d, 0.05, np.float32),
        "thresholds": THRESHOLDS,
    }
    info = {
        "step": linear_probe.PREDICTOR_STEP,
        "fraction": 1.0,
        "encoder": dataclasses.asdict(cfg),
        "preset": "tiny",
        "pooling": "mean",
        "feature_dim": d,
        "class_names": CLASSES,
        "num_samples": num_samples,
        "fs": 500.0,
        "signal": SignalConfig(num_samples=num_samples).to_dict(),
        "batch_size": 4,
    }
    linear_probe.save_predictor(workdir, state, info)
    (workdir / "metrics.json").write_text(json.dumps({"predictor": info}))
    return workdir


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    return _probe_run(tmp_path_factory.mktemp("probe") / "run")


def _write(directory, name, signal, fs, names=USER_LEADS):
    return write_wfdb_record(directory, name, signal, fs, names)


def _synthetic(seed: int, fs: int, duration_s: float) -> np.ndarray:
    """A synthetic record generated at 500 Hz, resampled to `fs` (scipy's polyphase filter)."""
    x = generate_record(seed, SyntheticConfig(fs=500.0, duration_s=duration_s)).ecg
    g = math.gcd(int(fs), 500)
    return scipy.signal.resample_poly(x, int(fs) // g, 500 // g, axis=0)


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------


def test_windows_policy():
    x = np.arange(25, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)  # (25, 2)
    one = classify.windows(x[:7], 10)
    assert one.shape == (1, 10, 2) and np.all(one[0, 7:] == 0) and np.all(one[0, :7] == x[:7])
    assert classify.windows(x[:10], 10).shape == (1, 10, 2)
    # 25 = 2 full windows + 5 (half a window: kept, zero-padded).
    w = classify.windows(x, 10)
    assert w.shape == (3, 10, 2)
    np.testing.assert_array_equal(w[1], x[10:20])
    np.testing.assert_array_equal(w[2, :5], x[20:25])
    assert np.all(w[2, 5:] == 0)
    # 24 = 2 full windows + 4 (under half: left out).
    assert classify.windows(x[:24], 10).shape == (2, 10, 2)


def test_classify_folder_of_user_records(probe, tmp_path):
    data = tmp_path / "records"
    _write(data, "r10s_250", _synthetic(1, 250, 10.0), 250)
    _write(data / "sub", "r20s_250", _synthetic(2, 250, 20.0), 250)
    _write(data, "r10s_500", _synthetic(1, 500, 10.0), 500)
    _write(data, "r4s_360", _synthetic(3, 360, 4.0), 360)
    out = tmp_path / "preds.csv"
    result = classify.classify(probe, data, out, verbose=False)
    rows = {r["record"].rsplit("/", 1)[-1]: r for r in _read_csv(out)}
    assert set(rows) == {"r10s_250", "r20s_250", "r10s_500", "r4s_360"}
    assert list(_read_csv(out)[0]) == (
        ["record", "duration_s", "fs", "windows"]
        + [f"prob_{c}" for c in CLASSES]
        + [f"pred_{c}" for c in CLASSES]
    )
    assert rows["r20s_250"]["windows"] == "2" and float(rows["r20s_250"]["duration_s"]) == 20.0
    assert rows["r10s_250"]["windows"] == "1" and rows["r10s_250"]["fs"] == "250"
    assert rows["r4s_360"]["windows"] == "1" and float(rows["r4s_360"]["duration_s"]) == 4.0
    for row in rows.values():
        probs = np.array([float(row[f"prob_{c}"]) for c in CLASSES])
        assert np.all((probs >= 0) & (probs <= 1))
        preds = np.array([int(row[f"pred_{c}"]) for c in CLASSES])
        np.testing.assert_array_equal(preds, (probs >= THRESHOLDS).astype(int))
    # One recording at 250 Hz and at 500 Hz is one record to the model after resampling.
    p250 = next(p for p in result.predictions if p.record.endswith("r10s_250")).probabilities
    p500 = next(p for p in result.predictions if p.record.endswith("r10s_500")).probabilities
    np.testing.assert_allclose(p250, p500, atol=0.05)
    assert result.skipped == {}


def test_single_record_with_or_without_extension(probe, tmp_path):
    path = _write(tmp_path, "one", _synthetic(4, 500, 10.0), 500)
    a = classify.classify(probe, path, verbose=False).predictions
    b = classify.classify(probe, str(path) + ".hea", verbose=False).predictions
    assert len(a) == len(b) == 1
    np.testing.assert_allclose(a[0].probabilities, b[0].probabilities, rtol=1e-6)


def _bad_records(directory):
    nan = _synthetic(5, 500, 10.0)
    nan[1000:1100, 3] = np.nan
    _write(directory, "has_nan", nan, 500)
    _write(directory, "six_leads", _synthetic(6, 500, 10.0)[:, :6], 500, names=LEADS[:6])
    _write(directory, "good", _synthetic(7, 500, 10.0), 500)


def test_bad_records_stop_or_are_skipped(probe, tmp_path, capsys):
    data = tmp_path / "records"
    _bad_records(data)
    with pytest.raises(RecordError) as err:
        classify.classify(probe, data / "has_nan", verbose=False)
    assert "has_nan" in str(err.value) and "NaN" in str(err.value)
    with pytest.raises(RecordError) as err:
        classify.classify(probe, data / "six_leads", verbose=False)
    assert "six_leads" in str(err.value)
    with pytest.raises(RecordError):
        classify.classify(probe, data, tmp_path / "x.csv", verbose=False)
    assert not (tmp_path / "x.csv").exists()

    out = tmp_path / "preds.csv"
    result = classify.classify(probe, data, out, skip_bad_records=True)
    assert [r["record"].rsplit("/", 1)[-1] for r in _read_csv(out)] == ["good"]
    assert len(result.skipped) == 2
    assert {k.rsplit("/", 1)[-1] for k in result.skipped} == {"has_nan", "six_leads"}
    printed = capsys.readouterr().out
    assert "skipped 2 bad record(s)" in printed


def test_not_a_probe_run(tmp_path):
    with pytest.raises(linear_probe.NotAProbeRunError, match=r"no config\.json"):
        classify.classify(tmp_path, tmp_path, verbose=False)
    (tmp_path / "config.json").write_text(json.dumps({"program": "pretrain"}))
    with pytest.raises(linear_probe.NotAProbeRunError, match="'pretrain' run"):
        classify.classify(tmp_path, tmp_path, verbose=False)
    (tmp_path / "config.json").write_text(json.dumps({"program": "linear_probe"}))
    with pytest.raises(linear_probe.NotAProbeRunError, match="did not finish"):
        classify.classify(tmp_path, tmp_path, verbose=False)


def test_command_line(probe, tmp_path):
    data = tmp_path / "records"
    _bad_records(data)
    _write(data, "long", _synthetic(8, 250, 20.0), 250)
    out = tmp_path / "preds.csv"
    cmd = [sys.executable, "-m", "beatssl_jax.classify", f"--workdir={probe}", f"--input={data}"]
    env = python_env(JAX_PLATFORMS="cpu")
    stop = subprocess.run(
        [*cmd, f"--output={out}"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert stop.returncode == 1
    assert "has_nan" in stop.stderr and "--skip_bad_records" in stop.stderr
    assert not out.exists()
    done = subprocess.run(
        [*cmd, f"--output={out}", "--skip_bad_records"], cwd=PROJECT_ROOT, env=env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {r["record"].rsplit("/", 1)[-1]: r for r in _read_csv(out)}
    assert set(rows) == {"good", "long"} and rows["long"]["windows"] == "2"
    assert "skipped 2 bad record(s) (--skip_bad_records)" in done.stdout


def test_real_records(probe, tmp_path):
    ptbxl = shared_data("ptbxl")
    corpus = shared_data("ecg_corpus")
    ptb_record = sorted((ptbxl / "records500").rglob("*_hr.hea"))[0]
    mat_record = sorted(corpus.rglob("*.mat"))[0]
    out = tmp_path / "preds.csv"
    for path in (ptb_record, mat_record.with_suffix("")):
        result = classify.classify(probe, path, out, verbose=False)
        assert len(result.predictions) == 1
        p = result.predictions[0]
        assert p.windows >= 1 and p.fs > 0 and p.duration_s > 0
        assert np.all((p.probabilities >= 0) & (p.probabilities <= 1))
        assert len(_read_csv(out)) == 1
