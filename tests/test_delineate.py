"""The delineation CLI: windows, rate mapping, files in LUDB's convention, real records.

The `slow` tests train a short segmentation model on the synthetic `tiny` set once (module
fixture) and delineate WFDB records written with `wfdb.wrsamp` from the synthetic generator,
whose exact wave masks are the truth, and a real LUDB record when ../shared/data has one.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import wfdb

from beatssl_jax import delineate, segment, sharding
from beatssl_jax.ecg.delineation import WaveInterval, intervals_to_mask
from beatssl_jax.ecg.errors import RecordError
from beatssl_jax.ecg.leads import LEADS
from beatssl_jax.ecg.preprocess import resample
from beatssl_jax.ecg.synthetic import generate_record
from beatssl_jax.metrics import segmentation_metrics
from configs import segment as segment_config
from tests.conftest import PROJECT_ROOT, python_env, shared_data, write_wfdb_record

ODD_SPELLINGS = ["lead I", "II", "III", "AVR", "avl", "aVF", "V1", "v2", "V3", "V4", "V5", "V6"]
EXTENSIONS = ["i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6"]


# ---------------------------------------------------------------------------------------------
# Windows and rates (no model).


@pytest.mark.parametrize("t", [1, 4000, 17000, 45001, 90000])
def test_chunk_windows_cover_every_sample_once_with_context(t):
    chunk, context, stride = 15000, 1000, 16
    windows, length = delineate.chunk_windows(t, chunk, context, stride)
    assert length % stride == 0
    covered = np.zeros(t, int)
    for start, core_start, core_end in windows:
        covered[core_start:core_end] += 1
        assert start <= core_start and core_end <= start + length
        # Context on both sides wherever the record has it.
        assert core_start - start >= min(context, core_start)
        assert start + length - core_end >= min(context, t - core_end) or len(windows) == 1
    np.testing.assert_array_equal(covered, 1)
    if t <= chunk + 2 * context:
        assert len(windows) == 1


def test_predict_record_stitches_windows_like_one_pass():
    """With a per-sample 'model' (the sign of the signal), chunked prediction must equal the
    rule applied to the whole record: windows are placed and cropped exactly."""

    def sign_model(params, offset, batch):
        return (batch["ecg"] > 0).astype(jnp.int8) * 2

    predict = jax.jit(sign_model)
    x = np.random.default_rng(0).standard_normal((7013, 12)).astype(np.float32)
    mesh = sharding.make_mesh(jax.local_devices())
    out = delineate.predict_record(
        {}, predict, x, mesh, chunk=1000, context=100, stride=16, batch_size=3
    )
    np.testing.assert_array_equal(out, (x > 0).astype(np.int8) * 2)


def test_to_record_rate_keeps_waves_apart_and_durations():
    waves = [WaveInterval("P", 10, 49), WaveInterval("QRS", 50, 99), WaveInterval("T", 100, 100)]
    same = delineate.to_record_rate(waves, 500.0, 500.0, 1000)
    assert same == waves
    half = delineate.to_record_rate(waves, 500.0, 250.0, 500)
    assert half[0] == WaveInterval("P", 5, 24) and half[1] == WaveInterval("QRS", 25, 49)
    # The one-sample T wave at 500 Hz, [200 ms, 202 ms), rounds to no 250 Hz sample.
    assert len(half) == 2
    up = delineate.to_record_rate(waves, 500.0, 1000.0, 2000)
    mask = intervals_to_mask(up, 2000)
    assert np.sum(mask == 1) == 80 and np.sum(mask == 2) == 100 and np.sum(mask == 3) == 2


def test_annotation_extensions_follow_ludb():
    assert [delineate.annotation_extension(lead) for lead in LEADS] == EXTENSIONS


def test_cli_refuses_a_workdir_that_is_not_a_segment_run(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "beatssl_jax.delineate",
            f"--workdir={tmp_path}",
            f"--input={tmp_path}",
            f"--output={tmp_path / 'out'}",
        ],
        cwd=PROJECT_ROOT,
        env=python_env(JAX_PLATFORMS="cpu"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "no config.json, so not a segment run" in proc.stderr


# ---------------------------------------------------------------------------------------------
# With a trained model.


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("segment")
    config = segment_config.get_config("tiny")
    config.data_dir = str(root / "tfds")
    config.num_build_workers = 1
    config.num_overlay_records = 0
    segment.train_and_evaluate(config, str(root / "run"))
    return root / "run"


def _write_synthetic(directory, name, seed, fs=250.0, repeat=1):
    """A synthetic record resampled to `fs` with odd lead spellings; its truth at `fs`."""
    rec = generate_record(seed)
    x = np.concatenate([rec.ecg] * repeat).astype(np.float64)
    truth = np.concatenate([rec.wave_mask] * repeat)
    x = resample(x, rec.fs, fs, axis=0)
    idx = np.minimum(np.round(np.arange(x.shape[0]) * rec.fs / fs).astype(int), len(truth) - 1)
    write_wfdb_record(directory, name, x, fs, ODD_SPELLINGS)
    return x, truth[idx]


def _check_annotations(out_dir, name, mask, fs):
    """Every lead's file reads back as ( x ) triplets that bracket the mask's waves, one
    triplet per wave; a lead without waves has no file."""
    peak_code = {"p": 1, "N": 2, "t": 3}
    for j, ext in enumerate(EXTENSIONS):
        column = mask[:, j]
        starts = np.flatnonzero((column != 0) & (np.concatenate([[0], column[:-1]]) != column))
        if starts.size == 0:
            assert not (out_dir / f"{name}.{ext}").exists()
            continue
        ann = wfdb.rdann(str(out_dir / name), ext)
        assert ann.fs == fs
        symbols = ann.symbol
        assert len(symbols) == 3 * starts.size
        for k in range(0, len(symbols), 3):
            onset, peak, offset = ann.sample[k : k + 3]
            assert symbols[k] == "(" and symbols[k + 2] == ")"
            code = peak_code[symbols[k + 1]]
            assert onset == starts[k // 3] and onset <= peak <= offset
            assert np.all(column[onset : offset + 1] == code)
            assert offset == len(column) - 1 or column[offset + 1] != code


@pytest.mark.slow
def test_delineate_synthetic_record_at_250_hz(model_dir, tmp_path):
    _, truth = _write_synthetic(tmp_path / "in", "syn1", seed=777)
    out = tmp_path / "out"
    result = delineate.delineate(model_dir, tmp_path / "in" / "syn1.hea", out, verbose=False)
    assert [r.record for r in result.records] == [str(tmp_path / "in" / "syn1")]

    saved = np.load(out / "syn1_waves.npz")
    mask = saved["mask"]
    assert mask.shape == (2500, 12) and mask.dtype == np.int8
    assert list(saved["leads"]) == list(LEADS) and float(saved["fs"]) == 250.0
    _check_annotations(out, "syn1", mask, 250.0)

    # The CSV lists exactly the npz mask's waves (onsets and offsets in ms and samples).
    with (out / "syn1_waves.csv").open() as f:
        rows = list(csv.DictReader(f))
    rebuilt = np.zeros_like(mask)
    names = {"P": 1, "QRS": 2, "T": 3}
    for row in rows:
        on, off = int(row["onset_sample"]), int(row["offset_sample"])
        assert float(row["onset_ms"]) == pytest.approx(on * 4.0, abs=0.05)
        assert float(row["offset_ms"]) == pytest.approx(off * 4.0, abs=0.05)
        rebuilt[on : off + 1, LEADS.index(row["lead"])] = names[row["wave"]]
    np.testing.assert_array_equal(rebuilt, mask)

    # Against the generator's truth: the short run's QRS complexes are found.
    m = segmentation_metrics(truth[None], mask[None], np.ones((1, *mask.shape), bool), 250.0)
    assert m["samplewise"]["QRS"]["f1"] > 0.85
    assert m["boundaries"]["QRS_onset"]["f1"] > 0.85


@pytest.mark.slow
def test_folders_long_records_and_bad_records(model_dir, tmp_path):
    inp = tmp_path / "in"
    x, _ = _write_synthetic(inp / "long", "syn_long", seed=5, fs=500.0, repeat=7)  # 70 s
    _write_synthetic(inp / "short", "syn_short", seed=6, fs=360.0)
    bad = inp / "bad"
    bad.mkdir()
    shutil.copy(inp / "short" / "syn_short.hea", bad / "syn_short.hea")  # no signal file
    with pytest.raises(RecordError, match="syn_short"):
        delineate.delineate(model_dir, inp, tmp_path / "stop", verbose=False)

    out = tmp_path / "out"
    result = delineate.delineate(model_dir, inp, out, skip_bad_records=True, verbose=False)
    assert len(result.records) == 2 and list(result.skipped) == [str(bad / "syn_short")]
    long_mask = np.load(out / "long" / "syn_long_waves.npz")["mask"]
    assert long_mask.shape == (x.shape[0], 12)
    # Every 30 s window of the 70 s record finds its QRS complexes (about 1 per second).
    for start in range(0, x.shape[0], 15000):
        assert np.sum(np.diff((long_mask[start : start + 15000, 1] == 2).astype(int)) == 1) > 5
    assert np.load(out / "short" / "syn_short_waves.npz")["mask"].shape == (3600, 12)
    _check_annotations(out / "long", "syn_long", long_mask, 500.0)


@pytest.mark.slow
def test_delineate_a_real_ludb_record(model_dir, tmp_path):
    ludb = shared_data("ludb")
    records = sorted(ludb.rglob("*.hea"), key=lambda p: (len(p.stem), p.stem))
    if not records:
        pytest.skip(f"real-data test: no LUDB header (.hea) under {ludb}")
    record = records[0].with_suffix("")  # given without .hea, as a user may
    out = tmp_path / "out"
    result = delineate.delineate(model_dir, record, out, verbose=False)
    assert result.records[0].fs == 500.0 and result.records[0].num_samples == 5000
    mask = np.load(out / f"{record.name}_waves.npz")["mask"]
    assert mask.shape == (5000, 12)
    _check_annotations(out, record.name, mask, 500.0)
    # LUDB's own annotation files sit beside the record under the same extensions.
    assert wfdb.rdann(str(record), "ii").symbol[0] in "(pNt)"
