"""Superdiagnostic classes of users' ECG records with a saved linear probe.

    python -m beatssl_jax.classify --workdir=W --input=PATH --output=preds.csv

W is a finished linear-probe run (`beatssl_jax.linear_probe`: config.json, metrics.json
and the predictor checkpoint). PATH is a WFDB record (with or without `.hea`; `.dat` or
CinC `.mat` signals) or a folder searched recursively. Each record is read with any lead
spelling and any sampling rate (`downstream.read_user_record`) and preprocessed like the
probe's dataset (`downstream.prepare_user_signal` with the dataset's `SignalConfig`).

Windows. The probe saw records of `num_samples` samples (10 s at 500 Hz). A record of
that length or shorter is one window, zero-padded at the end as the dataset builders pad.
A longer record is cut into consecutive windows of `num_samples` from its start; a
remainder of at least half a window becomes a last, zero-padded window and a shorter
remainder is left out (a mostly-padding window would dilute the average). The record's
class probabilities are the mean over its windows, and a class is predicted when that mean
reaches the class's threshold chosen on the validation split.

The CSV has one row per record: record, duration_s, fs, windows, prob_<class>...,
pred_<class>... . A record that cannot be used raises RecordError naming it; by default
the run stops with that message, with --skip_bad_records it is reported, counted and left
out of the CSV.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from beatssl_jax import downstream, linear_probe, sharding
from beatssl_jax.models.encoder import Encoder, EncoderConfig

MIN_LAST_WINDOW = 0.5  # a remainder shorter than this fraction of a window is left out


@dataclasses.dataclass
class Prediction:
    """One record's result: probabilities (C,) averaged over its windows, predictions (C,)."""

    record: str
    duration_s: float
    fs: float
    windows: int
    probabilities: np.ndarray
    predicted: np.ndarray


@dataclasses.dataclass
class Result:
    """What `classify` did: the predictions and the records it skipped (name -> reason)."""

    class_names: list[str]
    predictions: list[Prediction]
    skipped: dict[str, str]
    output: Path | None


def windows(x: np.ndarray, num_samples: int, min_last: float = MIN_LAST_WINDOW) -> np.ndarray:
    """Consecutive windows (W, num_samples, L) of a signal x (T, L), see the module docstring:
    T <= num_samples gives one zero-padded window; otherwise floor(T / num_samples) full
    windows plus the zero-padded remainder when it is >= min_last * num_samples."""
    t = x.shape[0]
    if t == 0:
        raise ValueError("windows: empty signal")
    if t <= num_samples:
        return downstream.pad_to_multiple(x, num_samples)[None]
    full, rest = divmod(t, num_samples)
    keep = full * num_samples + (rest if rest >= min_last * num_samples else 0)
    return downstream.pad_to_multiple(x[:keep], num_samples).reshape(-1, num_samples, x.shape[1])


def _probability_fn(info: dict[str, Any]) -> Any:
    cfg = EncoderConfig(**info["encoder"])
    model = Encoder(cfg)
    pooling = str(info["pooling"])

    def fn(state: Any, batch: dict[str, jnp.ndarray]) -> jnp.ndarray:
        e, _ = model.apply({"params": state["encoder"]}, batch["ecg"])  # (B, T', C)
        f = (linear_probe.pool_features(e, pooling) - state["feature_mean"]) / state["feature_std"]
        logits = f @ state["head"]["kernel"] + state["head"]["bias"]  # (B, C)
        return jax.nn.sigmoid(logits)

    return jax.jit(fn)


def classify(
    workdir: str | os.PathLike[str],
    input_path: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    skip_bad_records: bool = False,
    batch_size: int = 0,
    verbose: bool = True,
) -> Result:
    """Class probabilities of every record at `input_path` with the probe in `workdir`,
    written to the CSV `output` (if given). batch_size 0: the probe run's batch size."""
    state, info = linear_probe.load_predictor(workdir)
    class_names = [str(c) for c in info["class_names"]]
    num_samples = int(info["num_samples"])
    signal = downstream.signal_config_from_info(info)
    headers = downstream.find_user_records(input_path)

    names: list[str] = []
    meta: list[tuple[float, float]] = []
    chunks: list[np.ndarray] = []
    skipped: dict[str, str] = {}
    for header, record, w in downstream.prepared_records(
        headers,
        signal,
        skip_bad_records=skip_bad_records,
        skipped=skipped,
        verbose=verbose,
        transform=lambda x: windows(x, num_samples),
    ):
        names.append(str(header.with_suffix("")))
        meta.append((record.signal.shape[0] / float(record.fs), float(record.fs)))
        chunks.append(w.astype(np.float32))

    predictions: list[Prediction] = []
    if chunks:
        all_windows = np.concatenate(chunks)  # (sum W, num_samples, 12)
        mesh = sharding.make_mesh(jax.local_devices())
        requested = int(batch_size or info.get("batch_size", 8))
        bs = downstream.eval_batch_size(min(requested, all_windows.shape[0]), mesh)
        dev_state = jax.device_put(state, sharding.replicated_sharding(mesh))
        probs = downstream.apply_batched(
            _probability_fn(info),
            downstream.array_batches({"ecg": all_windows}, bs),
            mesh,
            dev_state,
        )  # (sum W, C)
        thresholds = np.asarray(state["thresholds"], np.float64)
        start = 0
        for name, (duration, fs), w in zip(names, meta, chunks, strict=True):
            p = np.asarray(probs[start : start + w.shape[0]], np.float64).mean(axis=0)
            start += w.shape[0]
            predictions.append(Prediction(name, duration, fs, w.shape[0], p, p >= thresholds))

    out_path = None
    if output is not None:
        out_path = Path(output)
        write_csv(out_path, predictions, class_names)
    result = Result(class_names, predictions, skipped, out_path)
    if verbose:
        print(summary(result, info), flush=True)
    return result


def write_csv(path: Path, predictions: Sequence[Prediction], class_names: Sequence[str]) -> None:
    """One row per record: record, duration_s, fs, windows, prob_<class>, pred_<class>."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(
            ["record", "duration_s", "fs", "windows"]
            + [f"prob_{c}" for c in class_names]
            + [f"pred_{c}" for c in class_names]
        )
        for p in predictions:
            out.writerow(
                [p.record, f"{p.duration_s:.3f}", f"{p.fs:g}", p.windows]
                + [f"{v:.6f}" for v in p.probabilities]
                + [int(v) for v in p.predicted]
            )


def summary(result: Result, info: dict[str, Any]) -> str:
    """A few lines: records classified and skipped, predicted counts per class, the CSV."""
    n = len(result.predictions)
    counts = (
        np.sum([p.predicted for p in result.predictions], axis=0)
        if n
        else np.zeros(len(result.class_names), int)
    )
    lines = [
        f"classified {n} record(s) with the {100 * float(info['fraction']):g} % probe "
        f"(encoder {info['preset']}); skipped {len(result.skipped)} bad record(s)"
        + (" (--skip_bad_records)" if result.skipped else ""),
        "predicted positive: "
        + ", ".join(f"{c} {int(k)}" for c, k in zip(result.class_names, counts, strict=True)),
    ]
    for name, reason in result.skipped.items():
        lines.append(f"  skipped {name}: {reason}")
    if result.output is not None:
        lines.append(f"predictions in {result.output}")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    from absl import app

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    flags = _FLAGS
    downstream.run_cli(
        lambda: classify(
            flags.workdir,
            flags.input,
            flags.output,
            skip_bad_records=flags.skip_bad_records,
            batch_size=flags.batch_size,
        )
    )


def _define_flags() -> Any:
    from absl import flags

    flags.DEFINE_string("workdir", None, "A finished linear_probe run's workdir.")
    flags.DEFINE_string("input", None, "A WFDB record (.hea optional) or a folder of records.")
    flags.DEFINE_string("output", "predictions.csv", "Where the CSV is written.")
    flags.DEFINE_bool("skip_bad_records", False, "Report and skip unusable records.")
    flags.DEFINE_integer("batch_size", 0, "Windows per batch; 0: the probe run's batch size.")
    flags.mark_flags_as_required(["workdir", "input"])
    return flags.FLAGS


if __name__ == "__main__":
    from absl import app

    _FLAGS = _define_flags()
    app.run(main)
