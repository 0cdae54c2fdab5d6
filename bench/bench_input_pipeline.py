"""Throughput of the input pipeline: global batches per second from an array_record dataset.

    python bench/bench_input_pipeline.py [--batch 256] [--batches 30] [--records 1024]
        [--threads 1,2] [--workers 0] [--dataset synthetic_ecg --data_dir DIR --split train]

Without --dataset, a temporary TFDS array_record dataset of `--records` records with the
common fields' layout (ecg 5000 x 12 float32, 32 beats, 20 record and 10 beat features)
and random values is written first. With --dataset, an already built dataset is read (its
builder module must be importable: `data_builders.<name>` is imported when it exists).

For every (read threads, workers) setting: `--warmup` batches are taken, then `--batches`
batches are timed one by one; the figure is the median time per batch and its inverse in
batches/s (min / max over batches beside it), records/s and MB/s of `ecg`. Each setting
is run twice: process-local numpy batches, and global jax.Arrays on a mesh of this
process's devices (`sharding.global_batch`). The host transform (`PrepareExample`, with
the dataset's feature statistics) is included.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import statistics
import tempfile
import time

import jax
import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from beatssl_jax import input_pipeline as ip
from beatssl_jax import sharding
from beatssl_jax.ecg.features import NUM_FEATURES, fit_feature_stats

NUM_SAMPLES, CAPACITY, NUM_BEAT_FEATURES = 5000, 32, 10


class InputPipelineBenchRecords(tfds.core.GeneratorBasedBuilder):
    """Random records with the common fields' layout, for timing only."""

    VERSION = tfds.core.Version("1.0.0")
    # Where TFDS looks for the builder's optional files (citation, README); a script's own
    # module path is not a package directory.
    pkg_dir_path = epath.Path(__file__).parent
    num_records = 1024

    def _info(self) -> tfds.core.DatasetInfo:
        tensor = tfds.features.Tensor
        rng = np.random.default_rng(0)
        stats = fit_feature_stats(rng.normal(size=(64, NUM_FEATURES)))
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "ecg": tensor(shape=(NUM_SAMPLES, 12), dtype=np.float32),
                    "r_peaks": tensor(shape=(CAPACITY,), dtype=np.int32),
                    "num_beats": tfds.features.Scalar(dtype=np.int32),
                    "features": tensor(shape=(NUM_FEATURES,), dtype=np.float32),
                    "beat_features": tensor(shape=(CAPACITY, NUM_BEAT_FEATURES), dtype=np.float32),
                    "beat_class": tensor(shape=(CAPACITY,), dtype=np.int32),
                }
            ),
            metadata=tfds.core.MetadataDict({ip.FEATURE_STATS_KEY: stats.to_dict()}),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        rng = np.random.default_rng(1)
        for i in range(self.num_records):
            beats = int(rng.integers(8, 16))
            r_peaks = np.full(CAPACITY, -1, np.int32)
            r_peaks[:beats] = np.sort(rng.choice(NUM_SAMPLES, beats, replace=False))
            beat_features = np.full((CAPACITY, NUM_BEAT_FEATURES), np.nan, np.float32)
            beat_features[:beats] = rng.normal(size=(beats, NUM_BEAT_FEATURES))
            beat_class = np.full(CAPACITY, -1, np.int32)
            beat_class[:beats] = rng.integers(0, 4, beats)
            yield (
                i,
                {
                    "ecg": (0.3 * rng.standard_normal((NUM_SAMPLES, 12))).astype(np.float32),
                    "r_peaks": r_peaks,
                    "num_beats": beats,
                    "features": rng.normal(size=NUM_FEATURES).astype(np.float32),
                    "beat_features": beat_features,
                    "beat_class": beat_class,
                },
            )


def write_random_dataset(data_dir: str, num_records: int) -> tuple[str, float]:
    InputPipelineBenchRecords.num_records = num_records
    start = time.perf_counter()
    builder = InputPipelineBenchRecords(data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare()
    return "input_pipeline_bench_records", time.perf_counter() - start


def time_batches(it, warmup: int, batches: int, on_mesh: bool) -> list[float]:
    for _ in range(warmup):
        b = next(it)
    times = []
    for _ in range(batches):
        start = time.perf_counter()
        b = next(it)
        if on_mesh:
            jax.block_until_ready(b)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256, help="global batch size")
    parser.add_argument("--batches", type=int, default=30, help="timed batches per setting")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--records", type=int, default=1024, help="records of the random set")
    parser.add_argument("--threads", default="1,2", help="read threads to try, comma-separated")
    parser.add_argument("--workers", default="0", help="worker processes to try")
    parser.add_argument("--prefetch", type=int, default=2, help="batches read ahead")
    parser.add_argument("--dataset", default="", help="a built TFDS dataset, e.g. synthetic_ecg")
    parser.add_argument("--data_dir", default="")
    parser.add_argument("--split", default="train")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.dataset:
            module = f"data_builders.{args.dataset.split('/')[0]}"
            if importlib.util.find_spec(module) is not None:
                importlib.import_module(module)
            name, data_dir = args.dataset, args.data_dir or None
            print(f"dataset {name} ({args.split}) from {data_dir or 'the TFDS default dir'}")
        else:
            name, seconds = write_random_dataset(tmp, args.records)
            data_dir = tmp
            print(f"wrote {args.records} random records (array_record) in {seconds:.1f} s")
        source, metadata = ip.load_source(name, args.split, data_dir, ip.DEFAULT_FIELDS)
        transform = ip.PrepareExample.from_metadata(metadata)
        mesh = sharding.make_mesh()
        mb = args.batch * NUM_SAMPLES * 12 * 4 / 1e6
        print(
            f"{len(source)} records, global batch {args.batch}, {jax.process_count()} process(es), "
            f"{mesh.size} {jax.devices()[0].platform} device(s); ecg {mb:.1f} MB a batch"
        )
        for workers in (int(w) for w in args.workers.split(",")):
            for threads in (int(t) for t in args.threads.split(",")):
                for on_mesh in (False, True):
                    it = ip.make_iterator(
                        source,
                        global_batch_size=args.batch,
                        seed=0,
                        transform=transform,
                        mesh=mesh if on_mesh else None,
                        num_workers=workers,
                        read_threads=threads,
                        prefetch_batches=args.prefetch,
                    )
                    times = time_batches(it, args.warmup, args.batches, on_mesh)
                    it.close()
                    med = statistics.median(times)
                    print(
                        f"workers {workers} threads {threads} "
                        f"{'global jax.Array' if on_mesh else 'local numpy    '}: "
                        f"median {1 / med:6.2f} batches/s ({med * 1e3:6.1f} ms a batch; "
                        f"min {1 / max(times):.2f}, max {1 / min(times):.2f} batches/s), "
                        f"{args.batch / med:7.0f} records/s, {mb / med:6.0f} MB/s"
                    )


if __name__ == "__main__":
    main()
