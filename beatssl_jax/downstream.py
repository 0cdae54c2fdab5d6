"""What the downstream programs (linear probe, segmentation, their prediction CLIs) share.

- The encoder: `load_encoder` gives the encoder's config and parameters, either restored
  read-only from a pretraining run's latest checkpoint (`checkpointing.restore_subtree` of
  `params/encoder`) or freshly initialised (`pretrained="none"`, the random-init baseline),
  through one code path. A checkpoint whose architecture differs from the config raises
  `EncoderMismatchError`, naming the run, both presets and the parameters that differ.
- Datasets: `prepare_dataset` builds a dataset on first use (as pretraining does);
  `read_split` holds the chosen fields of a split in memory as stacked numpy arrays (LUDB,
  the PTB-XL probe's features), `batches` walks any split in fixed-size batches whose last
  one is padded, so evaluation covers every record with one compiled shape.
- Batched application: `apply_batched` runs a jitted function over padded batches sharded
  over the local devices' `data` mesh axis and returns the real rows only.
- Users' records: `find_user_records` and `read_user_record` read a WFDB record (`.dat` or
  CinC `.mat`), any sampling rate, any lead spelling, and `prepare_user_signal` applies the
  preprocessing of the datasets (`data_builders.common.SignalConfig`: resample, band-pass,
  normalisation) without cropping, so a model sees a user's record as it saw its training
  data.

The downstream programs run in one process over its local devices.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from beatssl_jax import checkpointing, sharding
from beatssl_jax.ecg.errors import RecordError
from beatssl_jax.ecg.preprocess import (
    NORMALISED_UNITS,
    PreprocessConfig,
    bandpass,
    normalize_record,
    resample,
)
from beatssl_jax.models.encoder import Encoder, EncoderConfig, encoder_preset

NONE = "none"
CHECKPOINT_DIR = "checkpoints"  # pretrain.CHECKPOINT_DIR
ENCODER_PATH = "params/encoder"
CONFIG_FILE = "config.json"


class EncoderMismatchError(ValueError):
    """A pretraining checkpoint's encoder does not have the configured architecture."""


# ---------------------------------------------------------------------------------------------
# The encoder.


def read_run_config(workdir: str | os.PathLike[str]) -> ml_collections.ConfigDict | None:
    """The `config.json` a run wrote into its workdir, or None when there is none."""
    path = Path(workdir) / CONFIG_FILE
    if not path.exists():
        return None
    return ml_collections.ConfigDict(json.loads(path.read_text()))


def checkpoint_dir(workdir: str | os.PathLike[str]) -> Path:
    """The checkpoint folder of a run: `workdir/checkpoints`, or `workdir` itself if it holds
    the numbered step folders."""
    path = Path(workdir)
    if (path / CHECKPOINT_DIR).is_dir():
        return path / CHECKPOINT_DIR
    return path


def resolve_preset(config: ml_collections.ConfigDict) -> str:
    """The encoder preset to build: `config.model.preset`, or when it is empty the preset of
    the pretraining run `config.pretrained` (the tiny preset for `none`)."""
    preset = str(config.model.get("preset", "") or "")
    if preset:
        return preset
    if is_none(config.pretrained):
        return "tiny"
    run = read_run_config(config.pretrained)
    if run is not None and "model" in run and run.model.get("preset"):
        return str(run.model.preset)
    return "tiny"


def encoder_config(config: ml_collections.ConfigDict) -> EncoderConfig:
    """The `EncoderConfig` of a downstream config (`resolve_preset`, `config.model.dtype`)."""
    base = encoder_preset(resolve_preset(config))
    return EncoderConfig(**{**base.__dict__, "dtype": str(config.model.get("dtype", "float32"))})


def init_encoder(cfg: EncoderConfig, num_samples: int, seed: int) -> Any:
    """Fresh encoder parameters for (1, num_samples, 12) inputs, from `seed`."""
    x = jnp.zeros((1, num_samples, 12), jnp.float32)
    # One compiled init instead of op-by-op dispatch (seconds on CPU for the larger presets).
    init = jax.jit(lambda key: Encoder(cfg).init(key, x)["params"])
    return jax.device_get(init(jax.random.key(seed)))


def is_none(pretrained: Any) -> bool:
    """Whether `pretrained` asks for a random-init encoder (`none` or empty)."""
    return pretrained is None or str(pretrained).strip().lower() in ("", NONE)


def load_encoder(
    config: ml_collections.ConfigDict, num_samples: int
) -> tuple[EncoderConfig, Any, dict[str, Any]]:
    """(encoder config, encoder parameters, provenance) for a downstream config.

    `config.pretrained` is a pretraining workdir (its latest checkpoint is read, never
    written) or `none` (parameters initialised from `config.seed`: the random-init
    baseline). Either way the parameters have the structure `Encoder(cfg).init` gives, so
    the rest of a program does not depend on where they came from.
    """
    cfg = encoder_config(config)
    fresh = init_encoder(cfg, num_samples, int(config.seed))
    if is_none(config.pretrained):
        return cfg, fresh, {"pretrained": NONE, "preset": resolve_preset(config)}
    workdir = Path(str(config.pretrained)).expanduser()
    directory = checkpoint_dir(workdir)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"pretrained run {workdir}: no such directory (give a pretraining --workdir, or "
            f"--config.pretrained={NONE} for a random-init encoder)"
        )
    target = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), fresh)
    try:
        params = checkpointing.restore_subtree(directory, ENCODER_PATH, target)
    except checkpointing.CheckpointMismatchError as err:
        run = read_run_config(workdir)
        trained = run.model.get("preset") if run is not None and "model" in run else "unknown"
        raise EncoderMismatchError(
            f"pretrained run {workdir}: its encoder (preset {trained!r}) does not match this "
            f"config's encoder (preset {resolve_preset(config)!r}); set --config.model.preset "
            f"to the pretraining run's preset, or leave it empty to take it from the run. "
            f"Differences: {err}"
        ) from err
    params = jax.tree.map(np.asarray, params)
    step = _latest_step(directory)
    return cfg, params, {"pretrained": str(workdir), "step": step, "preset": resolve_preset(config)}


def _latest_step(directory: Path) -> int | None:
    steps = [int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(steps) if steps else None


# ---------------------------------------------------------------------------------------------
# A downstream run's workdir: its own folder, and the fitted model the CLIs read back.


def check_workdir(workdir: Path, pretrained: Any, program: str, starts_from: str) -> None:
    """Refuse to write a `program` run into another program's workdir, or into the
    pretraining run it `starts_from` (e.g. "it probes")."""
    run = read_run_config(workdir)
    if run is not None and run.get("program") not in (None, program):
        raise ValueError(
            f"workdir {workdir} holds a {run.get('program')!r} run (config.json); give the "
            f"{program} run a workdir of its own"
        )
    if not is_none(pretrained):
        if Path(str(pretrained)).expanduser().resolve() == workdir.resolve():
            raise ValueError(
                f"workdir {workdir} is the pretraining run {starts_from}; give it a workdir "
                "of its own"
            )


def dataset_signal_info(builder: Any, program: str, use: str) -> dict[str, Any]:
    """The builder's `SignalConfig` as a dict: saved with a fitted model so that a user's
    records are prepared like the dataset's (`signal_config_from_info`), for `use`."""
    signal = getattr(builder.builder_config, "signal", None)
    if signal is None:
        raise ValueError(
            f"{builder.info.full_name}: its builder config carries no SignalConfig; the "
            f"{program} run needs it to preprocess records for {use}"
        )
    return signal.to_dict()


def save_fitted(workdir: str | Path, step: int, tree: Any, info: Mapping[str, Any]) -> Path:
    """Write a fitted model (`tree`, as float32) into workdir/checkpoints at `step`,
    replacing one an earlier run of this workdir saved; `info` (what it takes to use it)
    goes beside it as the checkpoint's JSON extra. Returns the step folder."""
    directory = Path(workdir) / CHECKPOINT_DIR
    if directory.exists():
        shutil.rmtree(directory)  # an earlier run of this workdir (checked by the caller)
    plain = jax.tree.map(lambda a: np.asarray(a, np.float32), tree)
    with checkpointing.Checkpointer(directory, async_save=False) as ckpt:
        ckpt.save(int(step), plain, extra=dict(info), force=True)
    return directory / str(int(step))


def load_fitted(
    workdir: str | Path,
    program: str,
    metrics_file: str,
    target: Callable[[Mapping[str, Any]], Any],
    error: type[Exception],
) -> tuple[Any, dict[str, Any]]:
    """(model tree as numpy, description) of a finished `program` run in `workdir`: the
    description is `metrics_file`'s "predictor" entry, the tree is restored into
    `target(description)`. Raises `error` naming the workdir and what is missing."""
    workdir = Path(workdir).expanduser()
    hint = (
        f"run python -m beatssl_jax.main --config=configs/{program}.py --workdir={workdir} "
        "first, or give the workdir of one"
    )
    run = read_run_config(workdir)
    if run is None:
        raise error(f"{workdir}: no config.json, so not a {program} run; {hint}")
    if run.get("program") != program:
        raise error(
            f"{workdir}: config.json is a {run.get('program')!r} run, not a {program} run; {hint}"
        )
    path = workdir / metrics_file
    if not path.exists():
        raise error(f"{workdir}: no {metrics_file}; the {program} run there did not finish; {hint}")
    info = json.loads(path.read_text()).get("predictor")
    if not info:
        raise error(f"{path}: no 'predictor' entry (no model was saved); {hint}")
    step_dir = workdir / CHECKPOINT_DIR / str(info["step"])
    if not step_dir.is_dir():
        raise error(f"{workdir}: the model checkpoint {step_dir} is missing; {hint}")
    with checkpointing.Checkpointer(step_dir.parent, async_save=False) as ckpt:
        restored = ckpt.restore(target(info), step=int(info["step"]))
    return jax.tree.map(np.asarray, restored.state), info


# ---------------------------------------------------------------------------------------------
# Datasets.


def prepare_dataset(config: ml_collections.ConfigDict) -> Any:
    """The TFDS builder of `config.dataset` / `config.dataset_config`, built on first use
    from `config.manual_dir` (see `pretrain.prepare_dataset`)."""
    from beatssl_jax import pretrain

    return pretrain.prepare_dataset(config)


def split_source(builder: Any, split: str, fields: Sequence[str]) -> Sequence[dict[str, Any]]:
    """Random-access records of `split` decoding only `fields` (the others stay bytes)."""
    import tensorflow_datasets as tfds

    features = builder.info.features
    missing = sorted(set(fields) - set(features))
    if missing:
        raise KeyError(
            f"{builder.info.full_name}: no feature(s) {missing}; it has {sorted(features)}"
        )
    decoders = {k: tfds.decode.SkipDecoding() for k in features if k not in fields}
    return builder.as_data_source(split=split, decoders=decoders or None)


def _read_rows(
    source: Sequence[dict[str, Any]], indices: Sequence[int], fields: Sequence[str], threads: int
) -> list[dict[str, np.ndarray]]:
    def one(i: int) -> dict[str, np.ndarray]:
        record = source[int(i)]
        return {f: np.asarray(record[f]) for f in fields}

    if threads <= 1 or len(indices) < 2:
        return [one(i) for i in indices]
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, indices))


def read_split(
    builder: Any, split: str, fields: Sequence[str], *, threads: int = 4
) -> dict[str, np.ndarray]:
    """Every record of `split`, the chosen `fields` stacked along a new first axis."""
    source = split_source(builder, split, fields)
    if len(source) == 0:
        raise ValueError(f"{builder.info.full_name}: split '{split}' has no records")
    rows = _read_rows(source, range(len(source)), fields, threads)
    return {f: np.stack([r[f] for r in rows]) for f in fields}


def pad_rows(arrays: Mapping[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Arrays whose first dimension is padded with zeros up to `size` rows."""
    out = {}
    for name, x in arrays.items():
        missing = size - x.shape[0]
        if missing < 0:
            raise ValueError(f"{name}: {x.shape[0]} rows do not fit in a batch of {size}")
        out[name] = (
            np.concatenate([x, np.zeros((missing, *x.shape[1:]), x.dtype)]) if missing else x
        )
    return out


def batches(
    source: Sequence[dict[str, Any]],
    fields: Sequence[str],
    batch_size: int,
    *,
    threads: int = 4,
) -> Iterator[tuple[dict[str, np.ndarray], int]]:
    """(batch, number of real rows) over every record of `source` in order; the last batch
    is padded with zero rows to `batch_size`, so one compiled shape serves them all."""
    n = len(source)
    for start in range(0, n, batch_size):
        idx = range(start, min(start + batch_size, n))
        rows = _read_rows(source, idx, fields, threads)
        stacked = {f: np.stack([r[f] for r in rows]) for f in fields}
        yield pad_rows(stacked, batch_size), len(idx)


def array_batches(
    arrays: Mapping[str, np.ndarray], batch_size: int
) -> Iterator[tuple[dict[str, np.ndarray], int]]:
    """`batches` over in-memory arrays (stacked records)."""
    n = len(next(iter(arrays.values())))
    for start in range(0, n, batch_size):
        part = {k: v[start : start + batch_size] for k, v in arrays.items()}
        yield pad_rows(part, batch_size), min(batch_size, n - start)


def eval_batch_size(requested: int, mesh: jax.sharding.Mesh) -> int:
    """`requested` rounded up to a multiple of the mesh's device count."""
    devices = mesh.shape[sharding.DATA_AXIS]
    return max(devices, -(-int(requested) // devices) * devices)


def apply_batched(
    fn: Callable[..., Any],
    batch_iter: Iterator[tuple[dict[str, np.ndarray], int]],
    mesh: jax.sharding.Mesh,
    *args: Any,
) -> Any:
    """Concatenated host outputs of `fn(*args, batch)` over padded batches, padding dropped.

    Each batch is placed with its first dimension split over the mesh's `data` axis. `fn`
    returns a pytree of arrays with the batch as their first dimension.
    """
    place = sharding.batch_sharding(mesh)
    outputs = []
    for batch, real in batch_iter:
        out = fn(*args, jax.device_put(batch, place))
        outputs.append(jax.tree.map(lambda y, r=real: np.asarray(y)[:r], out))
    if not outputs:
        raise ValueError("apply_batched: no batches")
    return jax.tree.map(lambda *ys: np.concatenate(ys), *outputs)


# ---------------------------------------------------------------------------------------------
# Users' records.


def find_user_records(path: str | os.PathLike[str]) -> list[Path]:
    """Header paths (`.hea`) of the records at `path`: a record (with or without `.hea`), or
    a folder searched recursively (sorted). Raises FileNotFoundError when there is none."""
    from data_builders.wfdb_reader import find_records

    path = Path(path).expanduser()
    if path.is_dir():
        found = find_records(path)
        if not found:
            raise FileNotFoundError(f"{path}: no WFDB header (.hea) in this folder or below")
        return list(found)
    header = path if path.suffix == ".hea" else path.with_name(path.name + ".hea")
    if path.suffix in (".dat", ".mat"):
        header = path.with_suffix(".hea")
    if not header.exists():
        raise FileNotFoundError(f"{path}: no WFDB record here (looked for {header})")
    return [header]


def read_user_record(header: str | os.PathLike[str]) -> Any:
    """A canonical 12-lead `Record` from a user's header (`data_builders.wfdb_reader`: lead
    spellings, derived limb leads, CinC `.mat` signals, known header faults)."""
    from data_builders.wfdb_reader import read_record

    return read_record(header).record


def prepare_user_signal(record: Any, signal_config: Any) -> np.ndarray:
    """The record's (T', 12) float32 signal preprocessed like the datasets' `ecg` field, at
    `signal_config.fs`, whole (no crop). Raises RecordError naming the record."""
    pre = signal_config.preprocess
    x = np.asarray(record.signal, np.float32)
    if not np.all(np.isfinite(x)):
        raise RecordError(record.name, "signal contains NaN or infinite samples")
    y = resample(x, float(record.fs), float(pre.fs), axis=0)
    if pre.apply_bandpass:
        try:
            y = bandpass(
                y, pre.fs, pre.bandpass_low_hz, pre.bandpass_high_hz, pre.bandpass_order,
                cap_high=True,
            )  # fmt: skip
        except ValueError as err:
            raise RecordError(record.name, f"cannot band-pass {y.shape[0]} samples: {err}") from err
    if record.units != NORMALISED_UNITS:
        y, _ = normalize_record(y, pre.normalization, record.name)
    return np.ascontiguousarray(y, dtype=np.float32)


def signal_config_from_info(info: Mapping[str, Any]) -> Any:
    """The dataset's `SignalConfig` from a saved predictor's description (`info["signal"]`),
    so a user's record is prepared exactly like the records the model was trained on."""
    from data_builders.common import SignalConfig

    d = dict(info["signal"])
    names = {f.name for f in dataclasses.fields(SignalConfig)}
    return SignalConfig(
        preprocess=PreprocessConfig(**d.pop("preprocess")),
        **{k: v for k, v in d.items() if k in names},
    )


def read_prepared_record(header: Path, signal_config: Any) -> tuple[Any, np.ndarray]:
    """(record, preprocessed (T', 12) signal) for a user's header; any failure becomes a
    RecordError naming the record."""
    name = str(header.with_suffix(""))
    try:
        record = read_user_record(header)
        return record, prepare_user_signal(record, signal_config)
    except RecordError as err:
        if name in str(err) or (err.record and err.record in name):
            raise
        raise RecordError(name, str(err)) from err
    except Exception as err:  # unreadable files: say which record and why
        raise RecordError(name, f"cannot read the record ({type(err).__name__}: {err})") from err


def prepared_records(
    headers: Sequence[Path],
    signal_config: Any,
    *,
    skip_bad_records: bool,
    skipped: dict[str, str],
    verbose: bool = True,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Iterator[tuple[Path, Any, np.ndarray]]:
    """(header, record, prepared signal) of each user record, `transform` applied (inside
    the same check). A record that cannot be used raises its RecordError, or with
    `skip_bad_records` is logged and counted into `skipped` (record -> problem)."""
    for header in headers:
        try:
            record, x = read_prepared_record(header, signal_config)
            if transform is not None:
                x = transform(x)
        except RecordError as err:
            if not skip_bad_records:
                raise
            skipped[err.record] = err.problem
            if verbose:
                print(f"skipped {err}", file=sys.stderr, flush=True)
            continue
        yield header, record, x


def run_cli(call: Callable[[], Any]) -> None:
    """Run a prediction CLI: a bad record or a missing path ends it with the message (which
    names the record or path) and exit status 1, not a traceback."""
    try:
        call()
    except (RecordError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        if isinstance(err, RecordError):
            print("(--skip_bad_records skips such records)", file=sys.stderr)
        sys.exit(1)


def to_record_samples(
    samples: np.ndarray, fs_model: float, fs_record: float, length: int
) -> np.ndarray:
    """Sample indices at the model's rate mapped to the record's own rate (clipped)."""
    scaled = np.round(np.asarray(samples, np.float64) * (fs_record / fs_model)).astype(np.int64)
    return np.clip(scaled, 0, length - 1)


def pad_to_multiple(x: np.ndarray, multiple: int) -> np.ndarray:
    """(T, ...) zero-padded at the end to a multiple of `multiple` samples."""
    missing = (-x.shape[0]) % multiple
    if not missing:
        return x
    return np.concatenate([x, np.zeros((missing, *x.shape[1:]), x.dtype)])
