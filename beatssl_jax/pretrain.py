"""Pretraining program: `python -m beatssl_jax.main --config=configs/pretrain.py`.

Implemented so far: the two stages of Beat-SSL that do not train —
  1. the offline target stage over the embedded synthetic set: R peaks, the record feature
     vectors phi with their dataset scaling, per-beat features and beat classes
     (`ecg.targets`), checked against the generator's ground truth;
  2. the online 3KG views: two views per record, made on device under jit.
The encoder, the Beat-SSL losses, the train step and checkpoints are not implemented yet;
`run` ends by saying so, and writes what it measured to `workdir/signal_core.json`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
from absl import logging

from beatssl_jax.ecg.augment import ThreeKGConfig, three_kg_views
from beatssl_jax.ecg.features import fit_feature_stats, scale_features
from beatssl_jax.ecg.peaks import detect_r_peaks, match_peaks
from beatssl_jax.ecg.synthetic import SyntheticConfig, generate_dataset
from beatssl_jax.ecg.targets import class_counts, compute_targets

NOT_YET = (
    "pretraining itself (encoder, Beat-SSL losses, train step, checkpoints) is not "
    "implemented yet: this run covered the target-precompute and 3KG-view stages only"
)


def _say(message: str) -> None:
    logging.info(message)
    print(message, flush=True)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Run the implemented stages on `config.dataset` and write workdir/signal_core.json."""
    if config.dataset != "synthetic_ecg":
        raise NotImplementedError(
            f"dataset {config.dataset!r}: only the embedded 'synthetic_ecg' is available until "
            "the TFDS builders land"
        )
    out_dir = Path(workdir)
    out_dir.mkdir(parents=True, exist_ok=True)
    generator = SyntheticConfig(**config.synthetic.generator.to_dict())
    if generator.fs != config.fs or round(generator.duration_s * generator.fs) != (
        config.num_samples
    ):
        raise ValueError(
            f"config.fs={config.fs} and config.num_samples={config.num_samples} disagree with "
            f"the synthetic generator ({generator.fs} Hz x {generator.duration_s} s)"
        )

    start = time.perf_counter()
    records = list(generate_dataset(config.synthetic.num_records, config.seed, generator))
    generate_s = time.perf_counter() - start
    _say(f"generated {len(records)} synthetic records in {generate_s:.1f} s")

    start = time.perf_counter()
    detected = [detect_r_peaks(r.ecg, r.fs) for r in records]
    targets = [
        compute_targets(r.ecg, r.fs, config.max_beats_per_record, peaks)
        for r, peaks in zip(records, detected, strict=True)
    ]
    targets_s = time.perf_counter() - start
    _say(
        f"precomputed R peaks, features and beat classes: {len(records) / targets_s:.1f} records/s"
    )

    # R peaks against the generator's exact positions (10 ms tolerance).
    tolerance = round(0.010 * config.fs)
    counts = np.array(
        [match_peaks(p, r.r_peaks, tolerance) for p, r in zip(detected, records, strict=True)]
    ).sum(axis=0)
    tp, fp, fn = (int(c) for c in counts)
    peaks_summary = {
        "tolerance_ms": 10.0,
        "true_positives": tp,
        "false_positives": fp,
        "false_negatives": fn,
        "sensitivity": tp / max(tp + fn, 1),
        "ppv": tp / max(tp + fp, 1),
    }
    _say(
        f"R peaks vs. ground truth within 10 ms: sensitivity {peaks_summary['sensitivity']:.4f}, "
        f"PPV {peaks_summary['ppv']:.4f} ({tp} TP, {fp} FP, {fn} FN)"
    )

    phi = np.stack([t.features for t in targets])
    stats = fit_feature_stats(phi)
    scaled = np.stack([scale_features(f, stats) for f in phi])
    hr_error = np.abs(phi[:, 0] - np.array([r.heart_rate_bpm for r in records]))
    beat_classes = class_counts(np.concatenate([t.beat_class for t in targets]))
    _say(
        f"features: {phi.shape[1]} per record, {np.isnan(phi).mean():.1%} undefined; "
        f"heart-rate error median {np.nanmedian(hr_error):.2f} bpm; beat classes {beat_classes}"
    )

    # Two 3KG views of one batch, on device.
    augment = ThreeKGConfig.from_config(config.augment)
    batch = min(config.batch_size, len(records))
    x = jax.device_put(np.stack([r.ecg for r in records[:batch]]))
    make_views = jax.jit(three_kg_views, static_argnums=2)
    key = jax.random.key(config.seed)
    start = time.perf_counter()
    jax.block_until_ready(make_views(key, x, augment))
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    view_keys = jax.random.split(key, 2)
    (view_a, mask_a), (view_b, _) = (make_views(k, x, augment) for k in view_keys)
    jax.block_until_ready(view_b)
    views_s = time.perf_counter() - start
    _say(
        f"3KG views: 2 x {tuple(view_a.shape)} in {views_s * 1e3:.1f} ms after "
        f"{compile_s:.2f} s compile; masked fraction {float(mask_a.mean()):.3f}"
    )

    summary = {
        "dataset": config.dataset,
        "num_records": len(records),
        "records_per_sec_targets": len(records) / targets_s,
        "r_peaks": peaks_summary,
        "feature_names_undefined_fraction": float(np.isnan(phi).mean()),
        "heart_rate_abs_error_bpm_median": float(np.nanmedian(hr_error)),
        "scaled_features_range": [float(scaled.min()), float(scaled.max())],
        "beat_classes": beat_classes,
        "views_shape": list(view_a.shape),
        "views_ms": views_s * 1e3,
        "status": NOT_YET,
    }
    (out_dir / "signal_core.json").write_text(json.dumps(summary, indent=2))
    _say(f"wrote {out_dir / 'signal_core.json'}")
    _say(f"NOTE: {NOT_YET}.")
    return summary
