"""P, QRS and T waves of users' ECG records with a saved segmentation model.

    python -m beatssl_jax.delineate --workdir=W --input=PATH --output=OUT

W is a finished segmentation run (`beatssl_jax.segment`: config.json, metrics.json and the
model checkpoint). PATH is a WFDB record (with or without `.hea`; `.dat` or CinC `.mat`
signals) or a folder searched recursively. Each record is read with any lead spelling and
any sampling rate (`downstream.read_user_record`) and preprocessed like the model's dataset
(`downstream.prepare_user_signal` with the dataset's `SignalConfig`, at its rate fs).

Prediction. A record of at most `chunk_seconds + 2 * context_seconds` is segmented whole,
zero-padded at the end to a multiple of the encoder's stride. A longer record is cut into
consecutive core windows of `chunk_seconds` (30 s by default); each is segmented with
`context_seconds` (2 s) of the signal on either side where the record has it, and only its
core's labels are kept, so no label comes from a window edge that lacks context. The per-lead
masks (the run's decision rule: its background logit offset chosen on validation) are
cleaned (`ecg.delineation.clean_mask` with the run's cleanup settings) and mapped
to the record's own rate: a wave [onset, offset] at fs covers record samples
round(onset * r) .. round((offset + 1) * r) - 1 with r = fs_record / fs, so waves that touch
at fs still touch, and do not overlap, at the record's rate (a wave shorter than one record
sample is dropped).

Written into OUT (a record found in a sub-folder of PATH goes into the same sub-folder of
OUT):
  <record>_waves.npz   mask (T_record, 12) int8 codes (0 background, 1 P, 2 QRS, 3 T) at the
                       record's rate, leads (12,) names, fs the record's rate;
  <record>.<lead>      one WFDB annotation file per lead in LUDB's convention (lead names
                       lower-case: i ii iii avr avl avf v1 ... v6): for every wave the
                       triplet `(` onset, peak (`p` P, `N` QRS, `t` T; the sample of largest
                       deviation from the wave's median on that lead of the record's own
                       signal, `delineation.peak_of`), `)` offset; read back with
                       `wfdb.rdann(OUT/<record>, '<lead>')` (no header needed). A lead
                       without any predicted wave gets no file (WFDB cannot write an empty
                       annotation);
  <record>_waves.csv   one row per wave: record, lead, wave, onset_ms, offset_ms,
                       onset_sample, offset_sample (inclusive, at the record's rate; ms from
                       the record's first sample).

A record that cannot be used raises RecordError naming it: by default the run stops with
that message; with --skip_bad_records it is reported, counted and left out.
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

from beatssl_jax import downstream, segment, sharding
from beatssl_jax.ecg.delineation import (
    CleanupConfig,
    WaveInterval,
    clean_mask,
    intervals_to_mask,
    mask_to_intervals,
    peak_of,
)
from beatssl_jax.ecg.leads import LEADS
from beatssl_jax.models.decoder import DecoderConfig
from beatssl_jax.models.encoder import EncoderConfig

PEAK_SYMBOLS = {"P": "p", "QRS": "N", "T": "t"}  # LUDB's peak symbols
CSV_COLUMNS = (
    "record",
    "lead",
    "wave",
    "onset_ms",
    "offset_ms",
    "onset_sample",
    "offset_sample",
)


def annotation_extension(lead: str) -> str:
    """The WFDB annotation extension of a lead in LUDB's convention: 'aVR' -> 'avr'."""
    return lead.lower()


@dataclasses.dataclass
class RecordResult:
    """One record's delineation: its name, rate, length, wave counts and files."""

    record: str
    fs: float
    num_samples: int
    waves: dict[str, int]  # wave name -> count over all leads
    files: list[Path]


@dataclasses.dataclass
class Result:
    """What `delineate` did: the records delineated and those skipped (name -> reason)."""

    records: list[RecordResult]
    skipped: dict[str, str]
    output: Path


def chunk_windows(
    num_samples: int, chunk: int, context: int, stride: int
) -> tuple[list[tuple[int, int, int]], int]:
    """How a record of `num_samples` is cut for prediction (see the module docstring).

    Returns ([(window_start, core_start, core_end), ...], window_length): window i covers
    samples [window_start, window_start + window_length) of the record (zero-padded past its
    end) and supplies the labels of [core_start, core_end). window_length is a multiple of
    `stride`. A record of at most chunk + 2 * context samples is one window.
    """
    if num_samples <= 0:
        raise ValueError(f"chunk_windows: empty record ({num_samples} samples)")
    if chunk <= 0 or context < 0:
        raise ValueError(f"chunk_windows: need chunk > 0 and context >= 0, got {chunk}, {context}")
    if num_samples <= chunk + 2 * context:
        return [(0, 0, num_samples)], -(-num_samples // stride) * stride
    length = -(-(chunk + 2 * context) // stride) * stride
    windows = []
    for core_start in range(0, num_samples, chunk):
        core_end = min(core_start + chunk, num_samples)
        start = max(0, core_start - context)
        windows.append((start, core_start, core_end))
    return windows, length


def predict_record(
    params: Any,
    predict: Any,
    x: np.ndarray,
    mesh: jax.sharding.Mesh,
    *,
    chunk: int,
    context: int,
    stride: int,
    batch_size: int,
    background_offset: float = 0.0,
) -> np.ndarray:
    """Raw predicted codes (T, 12) int8 of one preprocessed record x (T, 12), whole or in
    chunks with context (`chunk_windows`); `predict` is `segment.predict_fn`'s, and
    `background_offset` the run's decision rule (`segment` module docstring)."""
    windows, length = chunk_windows(x.shape[0], chunk, context, stride)
    stack = np.zeros((len(windows), length, x.shape[1]), np.float32)
    for i, (start, _, _) in enumerate(windows):
        part = x[start : start + length]
        stack[i, : part.shape[0]] = part
    bs = downstream.eval_batch_size(min(batch_size, len(windows)), mesh)
    offset = jax.device_put(
        jnp.asarray(background_offset, jnp.float32), sharding.replicated_sharding(mesh)
    )
    codes = downstream.apply_batched(
        predict, downstream.array_batches({"ecg": stack}, bs), mesh, params, offset
    )  # (W, length, 12)
    out = np.zeros(x.shape, np.int8)
    for i, (start, core_start, core_end) in enumerate(windows):
        out[core_start:core_end] = codes[i, core_start - start : core_end - start]
    return out


def to_record_rate(
    intervals: Sequence[WaveInterval], fs_model: float, fs_record: float, length: int
) -> list[WaveInterval]:
    """Waves at the model's rate -> waves at the record's rate (see the module docstring)."""
    out = []
    for iv in intervals:
        onset = int(
            downstream.to_record_samples(np.array([iv.onset]), fs_model, fs_record, length)[0]
        )
        end = int(
            downstream.to_record_samples(
                np.array([iv.offset + 1]), fs_model, fs_record, length + 1
            )[0]
        )
        if end > onset:
            out.append(WaveInterval(iv.kind, onset, end - 1))
    return out


def write_annotations(
    out_dir: Path,
    name: str,
    lead: str,
    signal: np.ndarray,
    waves: Sequence[WaveInterval],
    fs: float,
) -> Path | None:
    """`out_dir/<name>.<lead>`: `(` peak `)` per wave (LUDB's convention); None without waves."""
    import wfdb

    if not waves:
        return None
    samples, symbols = [], []
    for iv in waves:
        samples += [iv.onset, peak_of(signal, iv), iv.offset]
        symbols += ["(", PEAK_SYMBOLS[iv.kind], ")"]
    # wfdb.wrann accepts letters-only extensions, but LUDB's leads include v1 ... v6: the
    # file is written under a letters-only extension and renamed (the extension is only the
    # file name; the file's contents do not record it).
    extension = annotation_extension(lead)
    staging = "beatsslstaging"
    wfdb.wrann(
        name,
        staging,
        sample=np.asarray(samples, np.int64),
        symbol=symbols,
        fs=fs,
        write_dir=str(out_dir),
    )
    path = out_dir / f"{name}.{extension}"
    os.replace(out_dir / f"{name}.{staging}", path)
    return path


def write_csv(path: Path, name: str, waves: dict[str, list[WaveInterval]], fs: float) -> None:
    """One row per wave (CSV_COLUMNS), leads in order, waves in time order."""
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(CSV_COLUMNS)
        for lead, ivs in waves.items():
            for iv in ivs:
                out.writerow(
                    [
                        name,
                        lead,
                        iv.kind,
                        f"{1000.0 * iv.onset / fs:.1f}",
                        f"{1000.0 * iv.offset / fs:.1f}",
                        iv.onset,
                        iv.offset,
                    ]
                )


def _output_dir(header: Path, input_path: Path, output: Path) -> Path:
    """OUT, or OUT/<sub-folder> for a record found below an input folder."""
    if input_path.is_dir():
        return output / header.parent.relative_to(input_path)
    return output


def delineate(
    workdir: str | os.PathLike[str],
    input_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    skip_bad_records: bool = False,
    chunk_seconds: float = 30.0,
    context_seconds: float = 2.0,
    batch_size: int = 4,
    verbose: bool = True,
) -> Result:
    """Delineate every record at `input_path` with the model in `workdir`, files into
    `output` (see the module docstring)."""
    params, info = segment.load_model(workdir)
    encoder_cfg = EncoderConfig(**info["encoder"])
    decoder_cfg = DecoderConfig(**info["decoder"])
    cleanup = CleanupConfig(
        min_duration_ms=tuple(info["cleanup"]["min_duration_ms"]),
        max_gap_ms=float(info["cleanup"]["max_gap_ms"]),
    )
    signal = downstream.signal_config_from_info(info)
    fs = float(signal.fs)
    stride = encoder_cfg.total_stride
    chunk = max(stride, round(chunk_seconds * fs))
    context = max(0, round(context_seconds * fs))
    input_path = Path(input_path).expanduser()
    output = Path(output).expanduser()
    headers = downstream.find_user_records(input_path)

    mesh = sharding.make_mesh(jax.local_devices())
    predict = segment.predict_fn(encoder_cfg, decoder_cfg)
    dev_params = jax.device_put(params, sharding.replicated_sharding(mesh))
    results: list[RecordResult] = []
    skipped: dict[str, str] = {}
    for header, record, x in downstream.prepared_records(
        headers, signal, skip_bad_records=skip_bad_records, skipped=skipped, verbose=verbose
    ):
        raw = predict_record(
            dev_params, predict, x, mesh, chunk=chunk, context=context, stride=stride,
            batch_size=batch_size, background_offset=float(info.get("background_offset", 0.0)),
        )  # fmt: skip
        codes = clean_mask(raw, fs, cleanup)  # (T', 12) at fs
        fs_record = float(record.fs)
        signal_r = np.asarray(record.signal, np.float64)  # (T_record, 12)
        length = signal_r.shape[0]
        name = header.with_suffix("").name
        out_dir = _output_dir(header, input_path, output)
        out_dir.mkdir(parents=True, exist_ok=True)
        waves: dict[str, list[WaveInterval]] = {}
        mask = np.zeros((length, len(LEADS)), np.int8)
        files: list[Path] = []
        for j, lead in enumerate(LEADS):
            ivs = to_record_rate(mask_to_intervals(codes[:, j]), fs, fs_record, length)
            waves[lead] = ivs
            mask[:, j] = intervals_to_mask(ivs, length)
            written = write_annotations(out_dir, name, lead, signal_r[:, j], ivs, fs_record)
            if written is not None:
                files.append(written)
        npz = out_dir / f"{name}_waves.npz"
        np.savez_compressed(npz, mask=mask, leads=np.asarray(LEADS), fs=np.float64(fs_record))
        table = out_dir / f"{name}_waves.csv"
        write_csv(table, name, waves, fs_record)
        counts = {
            w: sum(iv.kind == w for ivs in waves.values() for iv in ivs) for w in PEAK_SYMBOLS
        }
        results.append(
            RecordResult(
                str(header.with_suffix("")), fs_record, length, counts, [npz, table, *files]
            )
        )
        if verbose:
            print(
                f"{header.with_suffix('')}: {length / fs_record:.1f} s at {fs_record:g} Hz, "
                + ", ".join(f"{n} {w}" for w, n in counts.items())
                + f" waves over 12 leads -> {out_dir}",
                flush=True,
            )
    result = Result(results, skipped, output)
    if verbose:
        print(
            f"delineated {len(results)} record(s) into {output}; skipped {len(skipped)} bad "
            "record(s)" + (" (--skip_bad_records)" if skipped else ""),
            flush=True,
        )
    return result


def main(argv: Sequence[str]) -> None:
    from absl import app

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    flags = _FLAGS
    downstream.run_cli(
        lambda: delineate(
            flags.workdir,
            flags.input,
            flags.output,
            skip_bad_records=flags.skip_bad_records,
            chunk_seconds=flags.chunk_seconds,
            context_seconds=flags.context_seconds,
        )
    )


def _define_flags() -> Any:
    from absl import flags

    flags.DEFINE_string("workdir", None, "A finished segment run's workdir.")
    flags.DEFINE_string("input", None, "A WFDB record (.hea optional) or a folder of records.")
    flags.DEFINE_string("output", None, "Folder the masks, annotations and CSVs go into.")
    flags.DEFINE_bool("skip_bad_records", False, "Report and skip unusable records.")
    flags.DEFINE_float("chunk_seconds", 30.0, "Core length of the windows of long records.")
    flags.DEFINE_float("context_seconds", 2.0, "Context on each side of a window's core.")
    flags.mark_flags_as_required(["workdir", "input", "output"])
    return flags.FLAGS


if __name__ == "__main__":
    from absl import app

    _FLAGS = _define_flags()
    app.run(main)
