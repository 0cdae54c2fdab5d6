"""Training batches: a TFDS data source read through grain, as global arrays on the mesh.

Data flow (builders -> this module -> train step):

    tfds.data_source(name, split, data_dir)   random access to the built records
      -> grain.MapDataset                     shuffle, drop the epoch's remainder,
                                              PrepareExample, batch, this process's rows,
                                              repeat
      -> BatchIterator                        threads / worker processes, prefetch,
                                              checkpointable state
      -> sharding.global_batch                global jax.Arrays split over the 'data' axis

Global batches. Step k of epoch e is the global batch made of positions
[k * G, (k + 1) * G) of epoch e's permutation of the N records (G the global batch size).
The permutation is a function of (seed, epoch) alone: grain's index shuffle, which
`repeat` reseeds every epoch. With P processes each process reads only its own
b = G / P rows of every global batch, process p rows [p * b, (p + 1) * b). So within an
epoch the processes read disjoint records, their union is the epoch's records, and the
global batches do not depend on P: a run resumed on a different number of processes sees
the same global batches (only their split over processes changes). Shuffling is
deterministic given (seed, process index); `shuffle=False` keeps the source order.

End of an epoch. An epoch has floor(N / G) steps; the N mod G records left over after the
last full global batch are dropped for that epoch (drop remainder), so every batch has the
static shape the jitted train step needs. Since every epoch is shuffled differently, a
different few records are left out each epoch. Batches never mix two epochs. A source with
fewer than G records is an error.

Fields and dtypes (`PrepareExample`). Only the selected fields reach the batch, cast to the
dtypes the train step wants (by default ecg float32, integer fields int32). Padding keeps the
meaning it has in the dataset (`beatssl_jax.ecg.targets`):
  r_peaks        (K,) int32, -1 after the record's `num_beats` beats; `r_peaks >= 0` is the
                 beat mask.
  beat_class     (K,) int32, -1 padded likewise.
  features       (F,) float32 record feature vector phi, scaled into [0, 1] with the
                 dataset's `FeatureStats` (`scale_features`: NaN becomes the scaled median).
  beat_features  (K, Fb) float32: NaN (padded rows, and features a real beat could not be
                 measured for) becomes 0, and `beat_features_mask` (K, Fb) bool is True
                 exactly where the stored value was finite. When the dataset stores beat
                 feature statistics, finite values are scaled into [0, 1] first.
The statistics come from the dataset's metadata (`tfds.builder(...).info.metadata`, keys
`FEATURE_STATS_KEY` and `BEAT_FEATURE_STATS_KEY`), fitted once when the dataset was built.

Checkpointing. `BatchIterator.get_state()` is JSON bytes holding the number of global
batches consumed and what defines the sequence (seed, global batch size, number of records,
shuffle, epochs). `set_state` rebuilds the grain pipeline at that step: the dataset is a
`MapDataset` whose element k is the process's part of global batch k, a pure function of k,
so the restored iterator yields exactly the batches the uninterrupted one would have, with
any number of worker processes or threads. The bytes work with grain's Orbax handler
(`grain.checkpoint.CheckpointSave` / `CheckpointRestore`), which stores one file per
process.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import grain
import jax
import numpy as np
from jax.sharding import Mesh

from beatssl_jax import sharding
from beatssl_jax.ecg.features import FeatureStats, scale_features

FEATURES = "features"
BEAT_FEATURES = "beat_features"
BEAT_FEATURES_MASK = "beat_features_mask"
DEFAULT_FIELDS: tuple[str, ...] = (
    "ecg",
    "r_peaks",
    "num_beats",
    FEATURES,
    BEAT_FEATURES,
    "beat_class",
)
DEFAULT_DTYPES: Mapping[str, str] = {
    "ecg": "float32",
    "r_peaks": "int32",
    "num_beats": "int32",
    FEATURES: "float32",
    BEAT_FEATURES: "float32",
    "beat_class": "int32",
}
FEATURE_STATS_KEY = "feature_stats"
BEAT_FEATURE_STATS_KEY = "beat_feature_stats"
STATE_VERSION = 1


def feature_stats_from_metadata(metadata: Mapping[str, Any] | None, key: str) -> FeatureStats:
    """The `FeatureStats` stored under `key` in a dataset's metadata; KeyError if absent."""
    if not metadata or key not in metadata:
        have = sorted(metadata) if metadata else []
        raise KeyError(f"dataset metadata has no '{key}' entry (it has {have})")
    return FeatureStats.from_dict(metadata[key])


@dataclasses.dataclass(frozen=True)
class PrepareExample(grain.transforms.Map):
    """One record -> the fields the train step reads, scaled, NaN-free and cast.

    See the module docstring for the fields' padding and masks. `feature_stats` None leaves
    `features` unscaled (NaN included); `beat_feature_stats` None leaves finite beat
    features unscaled (NaN still becomes 0 with its mask). `dtypes` maps a field to the
    numpy dtype it is cast to; fields it does not name keep theirs.
    """

    fields: tuple[str, ...] = DEFAULT_FIELDS
    dtypes: Mapping[str, str] = dataclasses.field(default_factory=lambda: dict(DEFAULT_DTYPES))
    feature_stats: FeatureStats | None = None
    beat_feature_stats: FeatureStats | None = None

    @classmethod
    def from_metadata(
        cls, metadata: Mapping[str, Any] | None, fields: Sequence[str] = DEFAULT_FIELDS, **kwargs
    ) -> PrepareExample:
        """Statistics read from dataset metadata: record feature statistics are required
        when `features` is selected, beat feature statistics are used when present."""
        fields = tuple(fields)
        stats = (
            feature_stats_from_metadata(metadata, FEATURE_STATS_KEY) if FEATURES in fields else None
        )
        beat_stats = None
        if BEAT_FEATURES in fields and metadata and BEAT_FEATURE_STATS_KEY in metadata:
            beat_stats = feature_stats_from_metadata(metadata, BEAT_FEATURE_STATS_KEY)
        return cls(fields=fields, feature_stats=stats, beat_feature_stats=beat_stats, **kwargs)

    def map(self, element: Mapping[str, Any]) -> dict[str, np.ndarray]:
        missing = [f for f in self.fields if f not in element]
        if missing:
            raise KeyError(f"record lacks field(s) {missing}; it has {sorted(element)}")
        out: dict[str, np.ndarray] = {}
        for name in self.fields:
            x = np.asarray(element[name])
            if name == FEATURES and self.feature_stats is not None:
                x = scale_features(x, self.feature_stats)
            elif name == BEAT_FEATURES:
                x, out[BEAT_FEATURES_MASK] = fill_beat_features(x, self.beat_feature_stats)
            dtype = self.dtypes.get(name)
            out[name] = x if dtype is None else x.astype(dtype, copy=False)
        return out


def fill_beat_features(
    beat_features: np.ndarray, stats: FeatureStats | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(values, mask) of NaN-padded beat features (K, Fb).

    mask is True where the stored value is finite; values are those finite values (scaled
    with `stats` when given) and 0 elsewhere, float32.
    """
    x = np.asarray(beat_features, dtype=np.float32)
    mask = np.isfinite(x)
    if stats is not None:
        x = scale_features(np.where(mask, x, np.nan), stats)
    return np.where(mask, x, np.float32(0.0)).astype(np.float32), mask


def load_source(
    name: str, split: str, data_dir: str | None = None, fields: Sequence[str] | None = None
) -> tuple[Sequence[dict[str, Any]], Mapping[str, Any]]:
    """Random-access records of a built TFDS dataset (`tfds.data_source`) and its metadata.

    With `fields`, the dataset's other features are left undecoded (TFDS `SkipDecoding`:
    they stay encoded bytes, which `PrepareExample` drops), which saves reading time, e.g.
    the zlib-compressed wave masks of a segmentation dataset during pretraining. The
    dataset's builder must be registered (its module imported) and the dataset built as
    array_record; nothing is downloaded or built here.
    """
    import tensorflow_datasets as tfds  # heavy import, only for TFDS-backed runs

    data_dir = data_dir or None
    info = tfds.builder(name, data_dir=data_dir).info
    decoders = None
    if fields is not None:
        missing = sorted(set(fields) - set(info.features))
        if missing:
            raise KeyError(f"{name}: no feature(s) {missing}; it has {sorted(info.features)}")
        decoders = {k: tfds.decode.SkipDecoding() for k in info.features if k not in fields}
    source = tfds.data_source(
        name, split=split, data_dir=data_dir, download=False, decoders=decoders or None
    )
    return source, info.metadata or {}


def resolve_processes(
    process_index: int | None = None, process_count: int | None = None
) -> tuple[int, int]:
    """(process_index, process_count): both given, or both from JAX."""
    if (process_index is None) != (process_count is None):
        raise ValueError("give both process_index and process_count, or neither")
    if process_index is None:
        return jax.process_index(), jax.process_count()
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} is outside [0, {process_count})")
    return process_index, process_count


def per_process_batch_size(global_batch_size: int, process_count: int) -> int:
    """Rows of each global batch that one process reads: G / P, which must be a whole number."""
    if global_batch_size <= 0:
        raise ValueError(f"global batch size must be positive, got {global_batch_size}")
    if global_batch_size % process_count:
        raise ValueError(
            f"global batch size {global_batch_size} does not divide evenly over "
            f"{process_count} processes; choose a multiple of {process_count}"
        )
    return global_batch_size // process_count


def steps_per_epoch(num_records: int, global_batch_size: int) -> int:
    """Full global batches in one epoch (the remainder is dropped); error if none."""
    steps = num_records // global_batch_size
    if steps == 0:
        raise ValueError(
            f"the source has {num_records} records, fewer than one global batch of "
            f"{global_batch_size}"
        )
    return steps


def shuffle_seed(seed: int) -> int:
    """The 32-bit seed of grain's shuffle, derived from the run's seed.

    grain seeds epoch e with (shuffle seed + e), so passing run seeds straight through
    would make seed s's second epoch seed s + 1's first; a hashed seed keeps the
    permutations of nearby run seeds unrelated.
    """
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    return int(np.random.SeedSequence(seed).generate_state(1, np.uint32)[0])


def local_batches(
    source: Sequence[Any],
    *,
    global_batch_size: int,
    seed: int,
    num_epochs: int | None = None,
    transform: grain.transforms.Map | None = None,
    shuffle: bool = True,
    process_index: int | None = None,
    process_count: int | None = None,
) -> grain.MapDataset:
    """The grain `MapDataset` whose element k is this process's rows of global batch k.

    Element k is a dict of numpy arrays of b = G / P rows; there are
    `num_epochs x steps_per_epoch` elements, or infinitely many when `num_epochs` is None.
    See the module docstring for the order of records and the end of an epoch.
    """
    process_index, process_count = resolve_processes(process_index, process_count)
    local = per_process_batch_size(global_batch_size, process_count)
    steps = steps_per_epoch(len(source), global_batch_size)
    if num_epochs is not None and num_epochs <= 0:
        raise ValueError(f"num_epochs must be positive or None (repeat forever), got {num_epochs}")
    ds = grain.MapDataset.source(source)
    if shuffle:
        ds = ds.shuffle(seed=shuffle_seed(seed))  # reseeded every epoch by `repeat`
    ds = ds[: steps * global_batch_size]  # drop the epoch's remainder
    if transform is not None:
        ds = ds.map(transform)
    # steps x P batches of b rows; global batch k is local batches k * P ... k * P + P - 1.
    ds = ds.batch(local, drop_remainder=True)
    ds = ds[process_index::process_count]
    return ds.repeat(num_epochs)


class BatchIterator:
    """Iterator over training batches with a checkpointable position.

    Yields this process's batch as a dict of numpy arrays (b rows) when `mesh` is None,
    else global `jax.Array`s of G rows split over the mesh's 'data' axis. Use
    `make_iterator` to build one.
    """

    def __init__(
        self,
        dataset: grain.MapDataset,
        *,
        identity: Mapping[str, Any],
        steps_per_epoch: int,
        mesh: Mesh | None = None,
        read_options: grain.ReadOptions | None = None,
        num_workers: int = 0,
        worker_buffer_size: int = 1,
    ):
        self._dataset = dataset
        self._identity = dict(identity)
        self._steps_per_epoch = steps_per_epoch
        self._mesh = mesh
        self._read_options = read_options
        self._num_workers = num_workers
        self._worker_buffer_size = worker_buffer_size
        self._step = 0
        self._iterator: grain.DatasetIterator | None = None

    @property
    def step(self) -> int:
        """Global batches consumed so far (the index of the next one)."""
        return self._step

    @property
    def epoch(self) -> int:
        """Epoch of the next batch."""
        return self._step // self._steps_per_epoch

    @property
    def steps_per_epoch(self) -> int:
        return self._steps_per_epoch

    def _start(self) -> grain.DatasetIterator:
        if self._iterator is None:
            ds = self._dataset[self._step :] if self._step else self._dataset
            ids = ds.to_iter_dataset(self._read_options)
            if self._num_workers > 0:
                _ensure_flags_parsed()
                ids = ids.mp_prefetch(
                    grain.MultiprocessingOptions(
                        num_workers=self._num_workers,
                        per_worker_buffer_size=self._worker_buffer_size,
                    )
                )
            self._iterator = iter(ids)
        return self._iterator

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> dict[str, Any]:
        batch = next(self._start())
        self._step += 1
        if self._mesh is None:
            return batch
        return sharding.global_batch(batch, self._mesh)

    def start_prefetch(self) -> None:
        """Start reading ahead now rather than at the first `next` (grain's handler calls it)."""
        self._start().start_prefetch()

    def close(self) -> None:
        """Stop worker processes and threads; the next `next` starts them again."""
        if self._iterator is not None:
            self._iterator.close()
            self._iterator = None

    def get_state(self) -> bytes:
        """JSON bytes: the step and what defines the batch sequence."""
        return json.dumps({"version": STATE_VERSION, "step": self._step, **self._identity}).encode()

    def set_state(self, state: bytes | str | Mapping[str, Any]) -> None:
        """Resume at the step recorded by `get_state` of an iterator over the same sequence.

        Raises ValueError when the state was written for a different sequence (seed, global
        batch size, number of records, shuffle or epochs); the number of processes and of
        workers may differ.
        """
        if isinstance(state, bytes | str):
            state = json.loads(state)
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"iterator state version {state.get('version')}, expected {STATE_VERSION}"
            )
        differ = {k: (state.get(k), v) for k, v in self._identity.items() if state.get(k) != v}
        if differ:
            detail = ", ".join(f"{k}: saved {s!r}, now {n!r}" for k, (s, n) in differ.items())
            raise ValueError(f"iterator state belongs to a different batch sequence ({detail})")
        step = int(state["step"])
        if step < 0:
            raise ValueError(f"iterator state has a negative step {step}")
        self.close()
        self._step = step


def _ensure_flags_parsed() -> None:
    """grain 0.2.18's worker processes read an absl flag, which raises in programs that never
    parse flags (pytest, notebooks; grain issue #1355); mark them parsed, keeping defaults.
    Programs run by `absl.app` have parsed them already."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def make_iterator(
    source: Sequence[Any],
    *,
    global_batch_size: int,
    seed: int,
    num_epochs: int | None = None,
    transform: grain.transforms.Map | None = None,
    shuffle: bool = True,
    mesh: Mesh | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
    num_workers: int = 0,
    read_threads: int = 1,
    prefetch_batches: int = 2,
    worker_buffer_size: int = 1,
) -> BatchIterator:
    """A `BatchIterator` over `source` (a `tfds.data_source` result or any sequence of dicts).

    global_batch_size   G, rows of a global batch over all processes (the config's
                        batch size); each process reads G / P.
    seed                the shuffle seed (any non-negative integer).
    num_epochs          epochs before StopIteration; None repeats forever.
    transform           per-record grain Map, e.g. `PrepareExample`, applied before
                        batching.
    mesh                yield global `jax.Array`s on this mesh (G must split over its
                        'data' axis and the processes must be JAX's own); None yields
                        process-local numpy batches.
    process_index, process_count
                        this process's place among P; default JAX's. Give them explicitly
                        only without a mesh (tests, offline tools).
    num_workers         grain worker processes (0: read in this process). Transforms and
                        the source must pickle.
    read_threads        threads reading batches concurrently in each process.
    prefetch_batches    batches read ahead per process (0: none).
    worker_buffer_size  batches each worker process keeps ready.
    """
    if mesh is not None:
        if process_count is not None and process_count != jax.process_count():
            raise ValueError(
                f"process_count {process_count} given with a mesh, but JAX runs "
                f"{jax.process_count()} processes"
            )
        sharding.check_batch_divisible(global_batch_size, mesh)
        process_index = process_count = None
    dataset = local_batches(
        source,
        global_batch_size=global_batch_size,
        seed=seed,
        num_epochs=num_epochs,
        transform=transform,
        shuffle=shuffle,
        process_index=process_index,
        process_count=process_count,
    )
    if num_workers < 0:
        raise ValueError(f"num_workers must be non-negative, got {num_workers}")
    identity = {
        "seed": int(seed),
        "global_batch_size": int(global_batch_size),
        "num_records": len(source),
        "shuffle": bool(shuffle),
        "num_epochs": num_epochs,
    }
    return BatchIterator(
        dataset,
        identity=identity,
        steps_per_epoch=steps_per_epoch(len(source), global_batch_size),
        mesh=mesh,
        read_options=grain.ReadOptions(
            num_threads=read_threads, prefetch_buffer_size=max(prefetch_batches, 0)
        ),
        num_workers=num_workers,
        worker_buffer_size=worker_buffer_size,
    )
