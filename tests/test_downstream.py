"""The shared downstream pieces: encoder loading, padded batches, users' records."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from beatssl_jax import checkpointing, downstream
from beatssl_jax.ecg.errors import RecordError
from beatssl_jax.ecg.leads import LEADS
from beatssl_jax.ecg.synthetic import generate_record
from beatssl_jax.models.encoder import Encoder, encoder_preset
from data_builders.common import SignalConfig, common_fields
from tests.conftest import write_wfdb_record

T = 1024


def _config(pretrained: str = "none", preset: str = "", seed: int = 0):
    return ml_collections.ConfigDict(
        {"pretrained": pretrained, "seed": seed, "model": {"preset": preset, "dtype": "float32"}}
    )


def _fake_pretraining_run(workdir, preset: str = "tiny", seed: int = 7):
    """A workdir laid out like a pretraining run: config.json and a checkpoint whose state
    holds the encoder under params/encoder beside other parameters."""
    cfg = encoder_preset(preset)
    enc = Encoder(cfg).init(jax.random.key(seed), jnp.zeros((1, T, 12)))["params"]
    state = {
        "step": np.int32(40),
        "params": {"encoder": enc, "rhythm_projector": {"w": np.ones((3, 2), np.float32)}},
    }
    with checkpointing.Checkpointer(workdir / "checkpoints", async_save=False) as ckpt:
        ckpt.save(40, state, force=True)
    (workdir / "config.json").write_text(json.dumps({"model": {"preset": preset}}))
    return enc


def _tree_equal(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(
        np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb, strict=True)
    )


def test_random_init_depends_on_seed_only():
    _, a, info = downstream.load_encoder(_config(seed=0), T)
    _, b, _ = downstream.load_encoder(_config(seed=0), T)
    _, c, _ = downstream.load_encoder(_config(seed=1), T)
    assert info == {"pretrained": "none", "preset": "tiny"}
    assert _tree_equal(a, b)
    assert not _tree_equal(a, c)


def test_restores_the_checkpoint_encoder_read_only(tmp_path):
    run = tmp_path / "pretrain"
    run.mkdir()
    saved = _fake_pretraining_run(run)
    before = sorted((p.relative_to(run), p.stat().st_mtime_ns) for p in run.rglob("*"))
    cfg, params, info = downstream.load_encoder(_config(str(run)), T)
    after = sorted((p.relative_to(run), p.stat().st_mtime_ns) for p in run.rglob("*"))
    assert before == after  # nothing written, nothing touched
    assert _tree_equal(params, saved)
    assert not _tree_equal(params, downstream.load_encoder(_config(seed=7 + 1), T)[1])
    assert info["step"] == 40 and info["preset"] == "tiny" and cfg == encoder_preset("tiny")
    # The preset comes from the run's config.json when the config leaves it empty.
    assert downstream.resolve_preset(_config(str(run))) == "tiny"


def test_architecture_mismatch_names_both_presets(tmp_path):
    run = tmp_path / "pretrain"
    run.mkdir()
    _fake_pretraining_run(run, preset="tiny")
    with pytest.raises(downstream.EncoderMismatchError) as err:
        downstream.load_encoder(_config(str(run), preset="small"), T)
    message = str(err.value)
    assert "'tiny'" in message and "'small'" in message and str(run) in message


def test_missing_run_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        downstream.load_encoder(_config(str(tmp_path / "nope")), T)


def test_batches_cover_every_record_once_with_a_padded_tail():
    source = [{"x": np.full((3,), i, np.float32), "y": np.int32(i)} for i in range(10)]
    seen, shapes = [], set()
    for batch, real in downstream.batches(source, ("x", "y"), 4, threads=2):
        shapes.add(batch["x"].shape)
        seen.extend(batch["y"][:real].tolist())
        assert np.all(batch["x"][real:] == 0)
    assert seen == list(range(10))
    assert shapes == {(4, 3)}


def test_apply_batched_drops_padding_and_matches_direct_application():
    mesh = jax.make_mesh((1,), ("data",))
    x = np.random.default_rng(0).normal(size=(11, 5)).astype(np.float32)
    fn = jax.jit(lambda w, b: {"s": b["x"] @ w, "n": jnp.sum(b["x"], axis=1)})
    w = np.arange(10, dtype=np.float32).reshape(5, 2)
    out = downstream.apply_batched(fn, downstream.array_batches({"x": x}, 4), mesh, w)
    np.testing.assert_allclose(out["s"], x @ w, rtol=1e-5)
    np.testing.assert_allclose(out["n"], x.sum(axis=1), rtol=1e-5)
    assert downstream.eval_batch_size(5, mesh) == 5


def test_user_record_is_prepared_like_the_dataset_field(tmp_path):
    """A 250 Hz record with other lead spellings, read and prepared, equals the `ecg` field
    a dataset builder makes from the same samples (its own path: common_fields)."""
    rec = generate_record(3)
    x = rec.ecg[::2]  # 250 Hz, 10 s
    spelled = ["i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6"]
    write_wfdb_record(tmp_path, "odd", x, 250, spelled)
    (header,) = downstream.find_user_records(tmp_path / "odd")
    record = downstream.read_user_record(header)
    assert record.source_leads and record.fs == 250
    mine = downstream.prepare_user_signal(record, SignalConfig())
    theirs = common_fields(record.signal, record.fs, SignalConfig(), record="odd")["ecg"]
    assert mine.shape == (5000, 12) == theirs.shape
    np.testing.assert_allclose(mine, theirs, atol=1e-5)


def test_find_user_records_accepts_files_folders_and_reports_absence(tmp_path):
    rec = generate_record(4)
    for name in ("a", "b"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        write_wfdb_record(tmp_path / "sub", name, rec.ecg[:1000], 500, LEADS)
    found = downstream.find_user_records(tmp_path)
    assert [p.name for p in found] == ["a.hea", "b.hea"]
    assert downstream.find_user_records(tmp_path / "sub" / "a.hea") == [tmp_path / "sub" / "a.hea"]
    assert downstream.find_user_records(tmp_path / "sub" / "b.dat") == [tmp_path / "sub" / "b.hea"]
    with pytest.raises(FileNotFoundError, match="no WFDB record"):
        downstream.find_user_records(tmp_path / "sub" / "c")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no WFDB header"):
        downstream.find_user_records(empty)


def test_non_finite_user_signal_names_the_record(tmp_path):
    rec = generate_record(5)
    record = downstream.read_user_record(_header(tmp_path, rec.ecg[:2000]))
    bad = record.__class__(**{**record.__dict__, "signal": np.where(
        np.arange(2000)[:, None] == 10, np.nan, record.signal
    ).astype(np.float32)})  # fmt: skip
    with pytest.raises(RecordError, match="good"):
        downstream.prepare_user_signal(bad, SignalConfig())


def _header(directory, signal):
    write_wfdb_record(directory, "good", signal, 500, LEADS)
    return directory / "good.hea"


def test_record_sample_mapping_and_padding():
    idx = downstream.to_record_samples(np.array([0, 1, 2, 4999]), 500.0, 250.0, 2500)
    np.testing.assert_array_equal(idx, [0, 0, 1, 2499])
    x = np.ones((5000, 12), np.float32)
    padded = downstream.pad_to_multiple(x, 16)
    assert padded.shape == (5008, 12) and np.all(padded[5000:] == 0)
    assert downstream.pad_to_multiple(padded, 16) is padded


def test_check_workdir_refuses_other_programs_and_the_pretraining_run(tmp_path):
    other = tmp_path / "pretrain"
    other.mkdir()
    (other / downstream.CONFIG_FILE).write_text(json.dumps({"program": "pretrain"}))
    with pytest.raises(ValueError, match="holds a 'pretrain' run"):
        downstream.check_workdir(other, "none", "segment", "it starts from")
    with pytest.raises(ValueError, match="is the pretraining run it probes"):
        downstream.check_workdir(other, str(other), "pretrain", "it probes")
    fresh = tmp_path / "fresh"
    downstream.check_workdir(fresh, str(other), "segment", "it starts from")  # no error
    own = tmp_path / "own"
    own.mkdir()
    (own / downstream.CONFIG_FILE).write_text(json.dumps({"program": "segment"}))
    downstream.check_workdir(own, "none", "segment", "it starts from")  # a rerun is fine
