"""Shared machinery of the TFDS builders in `data_builders`: common fields, parallel build.

API summary:
  SignalConfig            how a record becomes the common fields: output rate and length,
                          crop policy, band-pass and normalisation (`PreprocessConfig`), and
                          the beat capacity.
  target_features(num_samples, capacity) -> dict of TFDS feature connectors of the common
                          fields: ecg, r_peaks, num_beats, features, beat_features, beat_class.
  common_fields(signal, fs, config, record, units) -> dict of numpy arrays for those fields.
  align_labels(labels, fs, config, fill)     per-sample labels on the same grid as `ecg`.
  align_positions(samples, fs, length, config) sample positions on that grid.
  pad_positions(samples, capacity)           -1 padded fixed-capacity positions.
  parallel_map(fn, tasks, names, ...)      ordered map over records across processes with a
                          progress bar; failures become RecordError naming the record, or
                          RecordFailure entries when skipping is on.
  EcgBuilderConfig        tfds BuilderConfig carrying a SignalConfig.
  EcgDatasetBuilder       GeneratorBasedBuilder base: array_record files, parallel example
                          generation, feature statistics fitted on the train split and stored
                          in the dataset metadata, a BuildReport of processed/skipped records.
  feature_stats(info)     the FeatureStats stored in a built dataset's metadata.

The order of operations in `common_fields` (METHOD.md sections 2 and 4):
  1. validate the canonical (T, 12) signal (finite samples);
  2. resample to `config.fs` (polyphase, `preprocess.resample`);
  3. zero-phase band-pass over the whole record (`preprocess.bandpass`, cut-off capped
     below Nyquist), so the filter's edge transients fall outside the kept window as far
     as the record allows;
  4. fix the length: a longer record is cropped to `num_samples` (its start, or its centre
     with `crop="center"`); a shorter one is kept whole here and zero-padded in step 7;
  5. targets (`targets.compute_targets`): R peaks, phi, beat features and classes, on the
     kept window before any padding, so padding can never create or move a beat; on the
     physical (un-normalised) signal, so amplitude features stay in mV;
  6. normalisation, one scale per record (`normalization`: none, std or mad) over the kept
     window; records in normalised units (NU) were normalised upstream and are left as
     they are;
  7. zero-padding at the end to `num_samples`.
Examples keep the raw (unscaled) feature vectors; the scaling statistics of the train split
(`features.fit_feature_stats`) are written to the metadata under `FEATURE_STATS_KEY`.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import logging
import multiprocessing
import multiprocessing.pool
import os
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import example_serializer as tfds_example_serializer
from tqdm.auto import tqdm

from beatssl_jax.ecg.beats import BEAT_CLASSES, BEAT_FEATURE_NAMES, NUM_BEAT_FEATURES, pad_beats
from beatssl_jax.ecg.errors import RecordError
from beatssl_jax.ecg.features import FEATURE_NAMES, NUM_FEATURES, FeatureStats, fit_feature_stats
from beatssl_jax.ecg.leads import LEADS, NUM_LEADS
from beatssl_jax.ecg.preprocess import (
    NORMALISED_UNITS,
    PreprocessConfig,
    bandpass,
    normalize_record,
    resample,
    resampled_length,
)
from beatssl_jax.ecg.records import validate_signal
from beatssl_jax.ecg.targets import PAD_INDEX, compute_targets, select_beats

log = logging.getLogger(__name__)

COMMON_FIELDS: tuple[str, ...] = (
    "ecg",
    "r_peaks",
    "num_beats",
    "features",
    "beat_features",
    "beat_class",
)
CROP_POLICIES: tuple[str, ...] = ("start", "center")
FEATURE_STATS_KEY = "feature_stats"
FEATURE_STATS_SPLIT = "train"
DEFAULT_BEAT_CAPACITY = 32  # 10 s at up to ~190 bpm; more beats are spread (select_beats)


@dataclasses.dataclass(frozen=True)
class SignalConfig:
    """How a canonical record becomes the common fields (see the module docstring).

    preprocess:     output rate `fs`, band-pass (`apply_bandpass`, cut-offs, order) and
                    `normalization` ('none', 'std', 'mad'; one scale per record).
    num_samples:    length of every `ecg` (10 s at 500 Hz by default).
    beat_capacity:  rows of the per-beat arrays; extra beats are spread evenly.
    crop:           which `num_samples` of a longer record are kept: 'start' or 'center'.
    """

    preprocess: PreprocessConfig = dataclasses.field(default_factory=PreprocessConfig)
    num_samples: int = 5000
    beat_capacity: int = DEFAULT_BEAT_CAPACITY
    crop: str = "start"

    def __post_init__(self):
        if self.crop not in CROP_POLICIES:
            raise ValueError(f"crop must be one of {CROP_POLICIES}, got {self.crop!r}")
        if self.num_samples <= 0 or self.beat_capacity <= 0:
            raise ValueError(
                f"num_samples and beat_capacity must be positive, got {self.num_samples} "
                f"and {self.beat_capacity}"
            )

    @property
    def fs(self) -> float:
        return float(self.preprocess.fs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def target_features(num_samples: int, capacity: int) -> dict[str, tfds.features.FeatureConnector]:
    """TFDS feature connectors of the common fields every builder writes.

    ecg:            (num_samples, 12) float32, canonical lead order, mV (or NU).
    r_peaks:        (capacity,) int32 sample indices into `ecg`, -1 padded.
    num_beats:      int32, real rows of the per-beat arrays.
    features:       (F,) float32 record feature vector phi, raw (unscaled), NaN undefined.
    beat_features:  (capacity, Fb) float32, NaN padded.
    beat_class:     (capacity,) int32 codes into BEAT_CLASSES (N, S, V, Q), -1 padded.
    """
    tensor = tfds.features.Tensor
    return {
        "ecg": tensor(shape=(num_samples, NUM_LEADS), dtype=np.float32),
        "r_peaks": tensor(shape=(capacity,), dtype=np.int32),
        "num_beats": tfds.features.Scalar(dtype=np.int32),
        "features": tensor(shape=(NUM_FEATURES,), dtype=np.float32),
        "beat_features": tensor(shape=(capacity, NUM_BEAT_FEATURES), dtype=np.float32),
        "beat_class": tensor(shape=(capacity,), dtype=np.int32),
    }


def label_features(num_samples: int) -> dict[str, tfds.features.FeatureConnector]:
    """Connectors of per-sample segmentation labels (zlib-compressed; they are mostly runs).

    wave_mask:  (num_samples, 12) int8, 0 background, 1 P, 2 QRS, 3 T, one column per lead.
    annotated:  (num_samples, 12) bool, the samples each lead's labels cover.
    """
    zlib = tfds.features.Encoding.ZLIB
    return {
        "wave_mask": tfds.features.Tensor(
            shape=(num_samples, NUM_LEADS), dtype=np.int8, encoding=zlib
        ),
        "annotated": tfds.features.Tensor(
            shape=(num_samples, NUM_LEADS), dtype=np.bool_, encoding=zlib
        ),
    }


def crop_offset(length: int, config: SignalConfig) -> int:
    """First kept sample of a resampled record of `length` samples."""
    excess = length - config.num_samples
    if excess <= 0:
        return 0
    return 0 if config.crop == "start" else excess // 2


def _fit_length(x: np.ndarray, config: SignalConfig, fill: Any) -> np.ndarray:
    """Crop (per `config.crop`) or pad at the end with `fill` to `num_samples` along axis 0."""
    offset = crop_offset(x.shape[0], config)
    x = x[offset : offset + config.num_samples]
    missing = config.num_samples - x.shape[0]
    if missing > 0:
        pad = np.full((missing, *x.shape[1:]), fill, dtype=x.dtype)
        x = np.concatenate([x, pad], axis=0)
    return x


def common_fields(
    signal: np.ndarray,
    fs: float,
    config: SignalConfig,
    record: str | None = None,
    units: str = "mV",
) -> dict[str, np.ndarray]:
    """The common fields of one record from its canonical (T, 12) signal sampled at `fs`.

    Follows the steps of the module docstring. Raises RecordError naming `record` for a
    signal that cannot be used (non-finite samples, too short to filter or to find beats).
    """
    x = validate_signal(signal, record)
    pre = config.preprocess
    y = resample(x, fs, config.fs, axis=0)
    if pre.apply_bandpass:
        try:
            y = bandpass(
                y, config.fs, pre.bandpass_low_hz, pre.bandpass_high_hz, pre.bandpass_order,
                cap_high=True,
            )  # fmt: skip
        except ValueError as err:
            raise RecordError(record, f"cannot band-pass {y.shape[0]} samples: {err}") from err
    offset = crop_offset(y.shape[0], config)
    kept = np.ascontiguousarray(y[offset : offset + config.num_samples], dtype=np.float32)
    try:
        targets = compute_targets(kept, config.fs, config.beat_capacity)
    except RecordError as err:
        raise RecordError(record, err.problem) from err
    except ValueError as err:
        raise RecordError(record, f"cannot compute targets: {err}") from err
    if units != NORMALISED_UNITS:
        kept, _ = normalize_record(kept, pre.normalization, record)
    return {
        "ecg": _fit_length(kept, config, 0.0).astype(np.float32),
        "r_peaks": targets.r_peaks.astype(np.int32),
        "num_beats": np.int32(targets.num_beats),
        "features": targets.features.astype(np.float32),
        "beat_features": targets.beat_features.astype(np.float32),
        "beat_class": targets.beat_class.astype(np.int32),
    }


def align_labels(labels: np.ndarray, fs: float, config: SignalConfig, fill: Any = 0) -> np.ndarray:
    """Per-sample labels (T, ...) at `fs` on the grid of `ecg`: nearest sample, crop, pad.

    Output sample j takes the label of input sample round(j * fs / config.fs); the length
    before cropping equals that of the resampled signal, so labels and `ecg` stay aligned.
    Padding takes `fill` (background, not annotated).
    """
    labels = np.asarray(labels)
    length = resampled_length(labels.shape[0], fs, config.fs)
    if length != labels.shape[0] or fs != config.fs:
        src = np.round(np.arange(length) * (fs / config.fs)).astype(np.int64)
        labels = labels[np.minimum(src, labels.shape[0] - 1)]
    return _fit_length(labels, config, fill)


def align_positions(
    samples: np.ndarray, fs: float, length: int, config: SignalConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Sample positions of a record of `length` samples at `fs`, moved onto the `ecg` grid.

    Returns (positions int64 of those inside the kept window, bool mask over the input
    marking which were kept), so labels aligned with the input can be filtered alike.
    """
    scaled = np.round(np.asarray(samples, dtype=np.float64) * (config.fs / fs)).astype(np.int64)
    offset = crop_offset(resampled_length(length, fs, config.fs), config)
    shifted = scaled - offset
    inside = (shifted >= 0) & (shifted < config.num_samples)
    return shifted[inside], inside


def pad_positions(samples: np.ndarray, capacity: int) -> tuple[np.ndarray, int]:
    """(capacity,) int32 positions, -1 padded, and the count; beyond capacity, spread evenly."""
    samples = np.asarray(samples, dtype=np.int64)
    keep = select_beats(samples, capacity)
    padded, count = pad_beats(samples[keep].astype(np.int32), capacity, PAD_INDEX)
    return padded, count


# --- Parallel, ordered map over records. -------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RecordFailure:
    """A record that could not be processed: its name, the problem, the worker's traceback."""

    record: str
    problem: str
    traceback: str = ""


def _guarded(fn: Callable[[Any], Any], task: Any, name: str) -> Any:
    try:
        return fn(task)
    except Exception as err:
        problem = err.problem if isinstance(err, RecordError) else f"{type(err).__name__}: {err}"
        return RecordFailure(name, problem, traceback.format_exc())


def _guarded_star(args: tuple[Callable[[Any], Any], Any, str]) -> Any:
    return _guarded(*args)


def default_num_workers() -> int:
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not available on every platform
        return os.cpu_count() or 1


@contextlib.contextmanager
def worker_pool(
    num_workers: int | None = None, start_method: str = "forkserver"
) -> Iterator[multiprocessing.pool.Pool | None]:
    """A process pool for `parallel_map`, or None when `num_workers` <= 1 (in-process).

    Default start method `forkserver`: workers fork from a server process that has imported
    this module (numpy, scipy, the signal core) once, and no thread of the caller is forked.
    As with any non-fork start method, a script that builds must guard its entry point with
    `if __name__ == "__main__":`.
    """
    workers = default_num_workers() if num_workers is None else int(num_workers)
    if workers <= 1:
        yield None
        return
    context = multiprocessing.get_context(start_method)
    if start_method == "forkserver":
        context.set_forkserver_preload([__name__])
    with context.Pool(workers) as pool:
        yield pool


def parallel_map(
    fn: Callable[[Any], Any],
    tasks: Sequence[Any],
    names: Sequence[str],
    *,
    num_workers: int | None = None,
    pool: multiprocessing.pool.Pool | None = None,
    skip_errors: bool = False,
    desc: str = "records",
    progress: bool = True,
) -> Iterator[tuple[str, Any]]:
    """Yield (name, fn(task)) for every task, in input order, computed across processes.

    `fn` must be picklable (a module-level function or a functools.partial of one, defined
    in an importable module). Runs on `pool` when given (see `worker_pool`), else on a pool
    of `num_workers` processes (default: all cores) opened for this call; with one worker,
    in this process. A task that raises gives a RecordError naming its record (the worker's
    traceback added as a note); with `skip_errors` it gives (name, RecordFailure) instead
    and the map goes on. Order is that of `tasks` whatever the number of workers, so the
    output is identical run to run.
    """
    if len(tasks) != len(names):
        raise ValueError(f"{len(tasks)} tasks but {len(names)} names")
    workers = default_num_workers() if num_workers is None else max(1, int(num_workers))
    args = [(fn, task, name) for task, name in zip(tasks, names, strict=True)]
    bar = tqdm(total=len(tasks), desc=desc, unit="rec", disable=not progress, leave=False)
    try:
        if pool is None and (workers <= 1 or len(tasks) <= 1):
            yield from _checked(map(_guarded_star, args), names, skip_errors, bar)
            return
        chunksize = max(1, min(8, len(tasks) // (4 * workers)))
        with contextlib.ExitStack() as stack:
            if pool is None:
                pool = stack.enter_context(worker_pool(min(workers, len(tasks))))
            results = pool.imap(_guarded_star, args, chunksize=chunksize)
            yield from _checked(results, names, skip_errors, bar)
    finally:
        bar.close()


def _checked(
    results: Iterator[Any], names: Sequence[str], skip_errors: bool, bar: Any
) -> Iterator[tuple[str, Any]]:
    for name, result in zip(names, results, strict=True):
        bar.update(1)
        if isinstance(result, RecordFailure) and not skip_errors:
            error = RecordError(name, result.problem)
            error.add_note(f"in the worker:\n{result.traceback}".rstrip())
            raise error
        yield name, result


# --- Builder base. ----------------------------------------------------------------------


class DeterministicExampleSerializer(tfds_example_serializer.ExampleSerializer):
    """tf.train.Example serialisation with map entries in a fixed order.

    Example features are a protobuf map, and the default serialisation writes map entries
    in an order that changes from process to process; sorted entries make the shards'
    bytes a function of their content.
    """

    def serialize_example(self, example: Any) -> bytes:
        return self.get_tf_example(example).SerializeToString(deterministic=True)


@contextlib.contextmanager
def _deterministic_serialization() -> Iterator[None]:
    """Within the block, TFDS writers serialise with DeterministicExampleSerializer."""
    module = tfds_example_serializer
    original = module.ExampleSerializer
    module.ExampleSerializer = DeterministicExampleSerializer
    try:
        yield
    finally:
        module.ExampleSerializer = original


@dataclasses.dataclass(eq=False)
class EcgBuilderConfig(tfds.core.BuilderConfig):
    """A builder config with the signal settings of `common_fields`."""

    signal: SignalConfig = SignalConfig()


@dataclasses.dataclass
class BuildReport:
    """What a build processed: records written per split, skipped records and why, time."""

    written: dict[str, int] = dataclasses.field(default_factory=dict)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0

    @property
    def num_written(self) -> int:
        return sum(self.written.values())

    def summary(self) -> str:
        total = self.num_written + len(self.skipped)
        rate = total / self.seconds if self.seconds > 0 else float("nan")
        splits = ", ".join(f"{k} {v}" for k, v in self.written.items())
        lines = [
            f"records written: {self.num_written} ({splits}); skipped: {len(self.skipped)}",
            f"time: {self.seconds:.1f} s, {rate:.1f} records/s",
        ]
        lines += [f"  skipped {name}: {why}" for name, why in self.skipped.items()]
        return "\n".join(lines)


class EcgDatasetBuilder(tfds.core.GeneratorBasedBuilder, abc.ABC):
    """Base of the ECG builders: common fields, parallel generation, feature statistics.

    A subclass defines:
      `_extra_features()`  its own feature connectors (beside `target_features`);
      `_split_tasks(dl_manager)` -> {split: [(name, task), ...]}, tasks picklable;
      `_example_fn()`      a picklable callable task -> example dict (the common fields
                           from `common_fields` plus its own), run in worker processes.
    and may override the build hooks, which run in the main process:
      `_start_build()`     reset the subclass's per-build state;
      `_observe_example(split, example)`  see every example written, in order;
      `_extra_metadata()`  -> dict merged into the dataset metadata after the build.
    Keyword arguments (also through `tfds.builder(name, **kwargs)`): `num_workers`
    (default: all cores; <= 1 runs in-process), `skip_bad_records` (count and log records
    that fail instead of stopping the build), `file_format` (default array_record, the
    format `tfds.data_source` and grain read). `HOMEPAGE` names the source; TFDS takes the
    description and citation from `README.md` and `CITATIONS.bib` beside the builder module.
    After a build, `report` holds a BuildReport, and the metadata holds `feature_stats`
    (FeatureStats.to_dict of the train split), its record count, the beat feature and class
    names, the lead order, the signal config and the skipped records with their reasons.
    """

    BUILDER_CONFIGS: Sequence[EcgBuilderConfig] = ()
    HOMEPAGE: str | None = None  # the source's home page

    def __init__(
        self,
        *,
        num_workers: int | None = None,
        skip_bad_records: bool = False,
        file_format: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(file_format=file_format or "array_record", **kwargs)
        self.num_workers = num_workers
        self.skip_bad_records = skip_bad_records
        self.report = BuildReport()
        self._train_features: list[np.ndarray] = []
        self._pool: multiprocessing.pool.Pool | None = None

    @property
    def signal_config(self) -> SignalConfig:
        config = self.builder_config
        return config.signal if isinstance(config, EcgBuilderConfig) else SignalConfig()

    @abc.abstractmethod
    def _extra_features(self) -> dict[str, tfds.features.FeatureConnector]: ...

    @abc.abstractmethod
    def _split_tasks(self, dl_manager: Any) -> Mapping[str, Sequence[tuple[str, Any]]]: ...

    @abc.abstractmethod
    def _example_fn(self) -> Callable[[Any], dict[str, Any]]: ...

    def _start_build(self) -> None:
        """Reset per-build state before any example is generated (hook)."""

    def _observe_example(self, split: str, example: Mapping[str, Any]) -> None:
        """See each example written, in output order, in the main process (hook)."""

    def _extra_metadata(self) -> dict[str, Any]:
        """Builder-specific entries for the dataset metadata, after all splits (hook)."""
        return {}

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.signal_config
        features = {**target_features(cfg.num_samples, cfg.beat_capacity), **self._extra_features()}
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(features),
            homepage=self.HOMEPAGE,
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator[tuple[str, Any]]]:
        return {
            split: self._generate_examples(split=split, tasks=list(tasks))
            for split, tasks in self._split_tasks(dl_manager).items()
        }

    def _generate_examples(
        self, split: str, tasks: Sequence[tuple[str, Any]]
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        names = [name for name, _ in tasks]
        self.report.written.setdefault(split, 0)
        results = parallel_map(
            self._example_fn(),
            [task for _, task in tasks],
            names,
            num_workers=self.num_workers,
            pool=self._pool,
            skip_errors=self.skip_bad_records,
            desc=f"{self.name} {split}",
        )
        for name, example in results:
            if isinstance(example, RecordFailure):
                log.warning("%s: skipped record %s: %s", self.name, name, example.problem)
                self.report.skipped[name] = example.problem
                continue
            if split == FEATURE_STATS_SPLIT:
                self._train_features.append(np.asarray(example["features"], np.float32))
            self._observe_example(split, example)
            self.report.written[split] += 1
            yield name, example

    def _download_and_prepare(self, dl_manager: Any, download_config: Any) -> None:
        start = time.perf_counter()
        self._train_features = []
        self.report = BuildReport()
        self._start_build()
        with worker_pool(self.num_workers) as pool, _deterministic_serialization():
            self._pool = pool
            try:
                super()._download_and_prepare(dl_manager, download_config)
            finally:
                self._pool = None
        matrix = (
            np.stack(self._train_features)
            if self._train_features
            else np.zeros((0, NUM_FEATURES), np.float32)
        )
        stats = fit_feature_stats(matrix, FEATURE_NAMES)
        self.report.seconds = time.perf_counter() - start
        self.info.metadata.update(
            {
                FEATURE_STATS_KEY: stats.to_dict(),
                "feature_stats_split": FEATURE_STATS_SPLIT,
                "feature_stats_records": int(matrix.shape[0]),
                "beat_feature_names": list(BEAT_FEATURE_NAMES),
                "beat_classes": list(BEAT_CLASSES),
                "leads": list(LEADS),
                "signal_config": self.signal_config.to_dict(),
                "skipped_records": dict(sorted(self.report.skipped.items())),
                **self._extra_metadata(),
            }
        )


def feature_stats(info_or_builder: Any) -> FeatureStats:
    """The train-split FeatureStats stored in a built dataset's metadata.

    Accepts a `tfds.core.DatasetInfo` or a builder (e.g. `tfds.builder(name, data_dir=...)`).
    """
    info = getattr(info_or_builder, "info", info_or_builder)
    metadata = info.metadata
    if not metadata or FEATURE_STATS_KEY not in metadata:
        raise KeyError(
            f"{info.full_name}: no {FEATURE_STATS_KEY!r} in the dataset metadata; was it built "
            "by a data_builders builder?"
        )
    return FeatureStats.from_dict(metadata[FEATURE_STATS_KEY])
