"""Input pipeline: order of records, process shards, resumption, field preparation, TFDS."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import tensorflow_datasets as tfds

from beatssl_jax import input_pipeline as ip
from beatssl_jax.ecg.features import FeatureStats
from tests.conftest import run_python


def records(n: int) -> list[dict[str, np.ndarray]]:
    """In-memory records whose `id` field says which record a batch row came from."""
    return [{"id": np.int64(i), "ecg": np.full((6, 12), i, np.float32)} for i in range(n)]


def ids(batches) -> list[list[int]]:
    return [b["id"].tolist() for b in batches]


def flat(lists: list[list[int]]) -> list[int]:
    return [x for part in lists for x in part]


def take(iterator, n: int) -> list[list[int]]:
    return [next(iterator)["id"].tolist() for _ in range(n)]


# Order of records --------------------------------------------------------------------------


def test_same_seed_same_batches_other_seed_differs():
    def run(seed):
        return ids(ip.make_iterator(records(40), global_batch_size=8, seed=seed, num_epochs=2))

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_every_epoch_is_a_fresh_permutation_with_the_remainder_dropped():
    # 42 records, global batch 8: 5 steps an epoch, 2 records left out of each epoch.
    batches = ids(ip.make_iterator(records(42), global_batch_size=8, seed=0, num_epochs=3))
    assert len(batches) == 15 and all(len(b) == 8 for b in batches)
    epochs = [flat(batches[5 * e : 5 * e + 5]) for e in range(3)]
    for epoch in epochs:
        assert len(set(epoch)) == 40 and set(epoch) <= set(range(42))  # no repeats in an epoch
    assert epochs[0] != epochs[1] != epochs[2]
    # The records dropped differ between epochs (reshuffled), with overwhelming probability.
    dropped = [frozenset(range(42)) - set(e) for e in epochs]
    assert len(set(dropped)) > 1


def test_shuffle_off_keeps_source_order():
    batches = ids(
        ip.make_iterator(records(10), global_batch_size=4, seed=0, num_epochs=2, shuffle=False)
    )
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7]] * 2


def test_finite_epochs_stop_and_infinite_repeat_continues():
    it = ip.make_iterator(records(16), global_batch_size=8, seed=0, num_epochs=1)
    assert len(ids(it)) == 2
    forever = ip.make_iterator(records(16), global_batch_size=8, seed=0)
    assert len(take(forever, 7)) == 7 and forever.epoch == 3 and forever.step == 7


def test_batch_size_errors_say_what_is_wrong():
    with pytest.raises(ValueError, match="does not divide evenly over 4 processes"):
        ip.make_iterator(
            records(40), global_batch_size=10, seed=0, process_index=0, process_count=4
        )
    with pytest.raises(ValueError, match="fewer than one global batch"):
        ip.make_iterator(records(5), global_batch_size=8, seed=0)
    with pytest.raises(ValueError, match="both process_index and process_count"):
        ip.make_iterator(records(40), global_batch_size=8, seed=0, process_index=0)


# Process shards ----------------------------------------------------------------------------


def test_two_processes_split_every_epoch_and_rebuild_the_one_process_batches():
    n, g, steps = 48, 8, 6
    single = ids(ip.make_iterator(records(n), global_batch_size=g, seed=7, num_epochs=2))
    parts = [
        ids(
            ip.make_iterator(
                records(n),
                global_batch_size=g,
                seed=7,
                num_epochs=2,
                process_index=p,
                process_count=2,
            )
        )
        for p in range(2)
    ]
    assert all(len(b) == 4 for part in parts for b in part)  # G / P rows per process
    for e in range(2):
        epoch = [flat(part[e * steps : (e + 1) * steps]) for part in parts]
        assert set(epoch[0]).isdisjoint(epoch[1])
        assert sorted(epoch[0] + epoch[1]) == list(range(n))
    # Process p holds rows [p * b, (p + 1) * b) of the global batch a single process reads.
    assert [a + b for a, b in zip(*parts, strict=True)] == single


# Resumption --------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [0, 3, 5, 9])
def test_restored_iterator_yields_the_uninterrupted_batches(k):
    n_more = 6  # crosses the epoch boundary at step 5 for most k
    kwargs = dict(global_batch_size=8, seed=11, num_epochs=4)
    reference = ids(ip.make_iterator(records(42), **kwargs))
    it = ip.make_iterator(records(42), **kwargs)
    take(it, k)
    state = it.get_state()
    assert json.loads(state)["step"] == k  # JSON bytes
    restored = ip.make_iterator(records(42), **kwargs)
    take(restored, 2)  # a fresh run that already moved on is put back too
    restored.set_state(state)
    assert take(restored, n_more) == reference[k : k + n_more]
    assert take(it, n_more) == reference[k : k + n_more]


def test_state_restores_on_another_process_count():
    kwargs = dict(global_batch_size=8, seed=2, num_epochs=3)
    it = ip.make_iterator(records(40), **kwargs)
    take(it, 4)
    state = it.get_state()
    reference = take(it, 5)
    halves = []
    for p in range(2):
        half = ip.make_iterator(records(40), process_index=p, process_count=2, **kwargs)
        half.set_state(state)
        halves.append(take(half, 5))
    assert [a + b for a, b in zip(*halves, strict=True)] == reference


def test_state_of_another_sequence_is_refused():
    it = ip.make_iterator(records(40), global_batch_size=8, seed=1)
    state = it.get_state()
    other = ip.make_iterator(records(40), global_batch_size=8, seed=2)
    with pytest.raises(ValueError, match="seed: saved 1, now 2"):
        other.set_state(state)
    smaller = ip.make_iterator(records(32), global_batch_size=8, seed=1)
    with pytest.raises(ValueError, match="num_records"):
        smaller.set_state(state)


def test_worker_processes_give_the_same_batches_and_resume():
    # Runs in a subprocess: grain's workers are spawned and re-import the main module. The
    # state written with two workers is restored without workers: positions are portable.
    script = textwrap.dedent(
        """
        import json
        import numpy as np
        from beatssl_jax import input_pipeline as ip

        def records(n):
            return [{"id": np.int64(i)} for i in range(n)]

        if __name__ == "__main__":
            kw = dict(global_batch_size=4, seed=5, num_epochs=2)
            plain = [b["id"].tolist() for b in ip.make_iterator(records(20), **kw)]
            it = ip.make_iterator(records(20), num_workers=2, **kw)
            first = [next(it)["id"].tolist() for _ in range(3)]
            state = it.get_state()
            it.close()
            again = ip.make_iterator(records(20), num_workers=0, **kw)
            again.set_state(state)
            rest = [b["id"].tolist() for b in again]
            print(json.dumps({"plain": plain, "workers": first + rest}))
        """
    )
    out = run_python(script)
    assert out["workers"] == out["plain"]


# Field preparation -------------------------------------------------------------------------

STATS = FeatureStats(
    names=("a", "b", "c", "d"),
    low=np.array([0.0, 10.0, np.nan, 5.0]),
    high=np.array([2.0, 20.0, np.nan, 5.0]),
    median=np.array([1.0, 12.0, np.nan, 5.0]),
)
BEAT_STATS = FeatureStats(
    names=("rr", "width"),
    low=np.array([0.0, 0.0]),
    high=np.array([4.0, 2.0]),
    median=np.array([2.0, 1.0]),
)


def raw_record() -> dict[str, np.ndarray]:
    return {
        "ecg": np.arange(24, dtype=np.float64).reshape(2, 12),
        "r_peaks": np.array([100, 600, -1], np.int64),
        "num_beats": 2,
        "features": np.array([0.5, np.nan, 7.0, 9.0], np.float32),
        "beat_features": np.array([[1.0, np.nan], [6.0, 0.5], [np.nan, np.nan]], np.float32),
        "beat_class": np.array([0, 2, -1], np.int8),
        "pattern": b"NORM",
    }


def test_prepare_example_scales_fills_and_casts_by_hand():
    out = ip.PrepareExample(feature_stats=STATS).map(raw_record())
    assert set(out) == {*ip.DEFAULT_FIELDS, ip.BEAT_FEATURES_MASK}  # `pattern` not selected
    # a: (0.5 - 0) / 2; b: NaN -> median 12 -> 0.2; c: no statistics -> 0.5; d: constant -> 0.5.
    np.testing.assert_allclose(out["features"], [0.25, 0.2, 0.5, 0.5])
    np.testing.assert_array_equal(out["beat_features"], [[1.0, 0.0], [6.0, 0.5], [0.0, 0.0]])
    np.testing.assert_array_equal(
        out["beat_features_mask"], [[True, False], [True, True], [False, False]]
    )
    np.testing.assert_array_equal(out["r_peaks"], [100, 600, -1])
    np.testing.assert_array_equal(out["beat_class"], [0, 2, -1])
    assert out["num_beats"] == 2
    assert {k: v.dtype.name for k, v in out.items()} == {
        "ecg": "float32",
        "r_peaks": "int32",
        "num_beats": "int32",
        "features": "float32",
        "beat_features": "float32",
        "beat_features_mask": "bool",
        "beat_class": "int32",
    }


def test_beat_features_scaled_when_statistics_are_given():
    out = ip.PrepareExample(fields=("beat_features",), beat_feature_stats=BEAT_STATS).map(
        raw_record()
    )
    # rr: 1 / 4, 6 / 4 clipped to 1; width: 0.5 / 2; NaN stays 0 (not the median) and masked.
    np.testing.assert_allclose(out["beat_features"], [[0.25, 0.0], [1.0, 0.25], [0.0, 0.0]])


def test_prepare_example_from_metadata_and_missing_entries():
    metadata = {ip.FEATURE_STATS_KEY: STATS.to_dict()}
    out = ip.PrepareExample.from_metadata(metadata, fields=("features",)).map(raw_record())
    np.testing.assert_allclose(out["features"], [0.25, 0.2, 0.5, 0.5])
    with pytest.raises(KeyError, match="no 'feature_stats' entry"):
        ip.PrepareExample.from_metadata({}, fields=("features",))
    with pytest.raises(KeyError, match=r"lacks field\(s\) \['label'\]"):
        ip.PrepareExample(fields=("ecg", "label")).map(raw_record())


# TFDS ----------------------------------------------------------------------------------------


class InputPipelineTestRecords(tfds.core.GeneratorBasedBuilder):
    """A small array_record dataset with the common fields' layout and feature statistics."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self) -> tfds.core.DatasetInfo:
        tensor = tfds.features.Tensor
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "ecg": tensor(shape=(20, 12), dtype=np.float32),
                    "r_peaks": tensor(shape=(3,), dtype=np.int32),
                    "num_beats": tfds.features.Scalar(dtype=np.int32),
                    "features": tensor(shape=(4,), dtype=np.float32),
                    "beat_features": tensor(shape=(3, 2), dtype=np.float32),
                    "beat_class": tensor(shape=(3,), dtype=np.int32),
                    "index": tfds.features.Scalar(dtype=np.int64),
                    "pattern": tfds.features.Text(),
                }
            ),
            metadata=tfds.core.MetadataDict({ip.FEATURE_STATS_KEY: STATS.to_dict()}),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples(20)}

    def _generate_examples(self, n):
        for i in range(n):
            raw = raw_record()
            raw["features"] = np.array([0.1 * i, np.nan, 1.0, 5.0], np.float32)
            yield (
                i,
                {
                    **raw,
                    "ecg": np.full((20, 12), i, np.float32),
                    "r_peaks": raw["r_peaks"].astype(np.int32),
                    "beat_class": raw["beat_class"].astype(np.int32),
                    "index": i,
                    "pattern": "NORM",
                },
            )


def test_tfds_data_source_through_the_pipeline(tmp_path):
    builder = InputPipelineTestRecords(data_dir=str(tmp_path), file_format="array_record")
    builder.download_and_prepare()
    fields = (*ip.DEFAULT_FIELDS, "index")
    source, metadata = ip.load_source("input_pipeline_test_records", "train", str(tmp_path), fields)
    assert len(source) == 20
    transform = ip.PrepareExample.from_metadata(metadata, fields=fields)
    kwargs = dict(global_batch_size=4, seed=0, num_epochs=1, transform=transform)
    batches = list(ip.make_iterator(source, **kwargs))
    assert len(batches) == 5
    assert sorted(np.concatenate([b["index"] for b in batches]).tolist()) == list(range(20))
    for b in batches:
        assert b["ecg"].shape == (4, 20, 12) and b["ecg"].dtype == np.float32
        np.testing.assert_array_equal(b["ecg"][:, 0, 0], b["index"])  # rows stay whole
        np.testing.assert_allclose(b["features"][:, 0], np.clip(0.05 * b["index"], 0, 1))
        assert not np.isnan(b["beat_features"]).any()
    again = [b["index"].tolist() for b in ip.make_iterator(source, **kwargs)]
    assert again == [b["index"].tolist() for b in batches]
    with pytest.raises(KeyError, match=r"no feature\(s\) \['label'\]"):
        ip.load_source("input_pipeline_test_records", "train", str(tmp_path), ("ecg", "label"))


@pytest.mark.slow
def test_synthetic_ecg_tiny_through_the_pipeline(tmp_path):
    synthetic = pytest.importorskip("data_builders.synthetic_ecg")
    del synthetic  # imported to register the builder
    tfds.builder("synthetic_ecg/tiny", data_dir=str(tmp_path)).download_and_prepare()
    source, metadata = ip.load_source(
        "synthetic_ecg/tiny", "train", str(tmp_path), ip.DEFAULT_FIELDS
    )
    transform = ip.PrepareExample.from_metadata(metadata)
    it = ip.make_iterator(source, global_batch_size=8, seed=0, num_epochs=1, transform=transform)
    batches = list(it)
    assert len(batches) == len(source) // 8
    for b in batches:
        assert b["ecg"].shape == (8, 5000, 12) and b["ecg"].dtype == np.float32
        assert b["features"].min() >= 0.0 and b["features"].max() <= 1.0
        assert not np.isnan(b["beat_features"]).any()
        real = b["r_peaks"] >= 0
        np.testing.assert_array_equal(real.sum(axis=1), b["num_beats"])
        np.testing.assert_array_equal(b["beat_class"] >= 0, real)
        assert not b["beat_features_mask"][~real].any()  # padded beats are fully masked


# Global arrays -------------------------------------------------------------------------------


def test_global_arrays_on_a_mesh_of_four_devices():
    script = textwrap.dedent(
        """
        import json
        import jax
        import numpy as np
        from beatssl_jax import input_pipeline as ip
        from beatssl_jax import sharding

        recs = [{"id": np.int64(i), "ecg": np.full((6, 12), i, np.float32)} for i in range(40)]
        mesh = sharding.make_mesh()
        kw = dict(global_batch_size=8, seed=3, num_epochs=1)
        local = [b["id"].tolist() for b in ip.make_iterator(recs, **kw)]
        it = ip.make_iterator(recs, mesh=mesh, **kw)
        batch = next(it)
        out = {
            "devices": len(jax.devices()),
            "is_array": all(isinstance(x, jax.Array) for x in batch.values()),
            "shape": list(batch["ecg"].shape),
            "sharded": batch["ecg"].sharding == sharding.batch_sharding(mesh),
            "rows_per_device": sorted(s.data.shape[0] for s in batch["id"].addressable_shards),
            "ids": [np.asarray(batch["id"]).tolist()] + [np.asarray(b["id"]).tolist() for b in it],
            "local": local,
        }
        try:
            ip.make_iterator(recs, global_batch_size=6, seed=0, mesh=mesh)
        except ValueError as e:
            out["error"] = str(e)
        print(json.dumps(out))
        """
    )
    out = run_python(script, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    assert out["devices"] == 4 and out["is_array"] and out["sharded"]
    assert out["shape"] == [8, 6, 12]
    assert out["rows_per_device"] == [2, 2, 2, 2]
    assert out["ids"] == out["local"]
    assert "does not split evenly over the 4 devices" in out["error"]
