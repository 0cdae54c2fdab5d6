"""Linear probe: `python -m beatssl_jax.main --config=configs/linear_probe.py[:args]`.

The PTB-XL protocol of METHOD.md section 7 [peer: Wagner et al. 2020, Strodthoff et al.
2021], top to bottom:

    dataset (built on first use, `downstream.prepare_dataset`)
      -> encoder parameters (`downstream.load_encoder`: a pretraining run's latest
         checkpoint, read-only, or random init for `pretrained=none`; one code path after)
      -> frozen features: one jitted pass of the encoder over every record of the train,
         validation and test splits (padded last batch, nothing dropped), e (B, T', C)
         pooled over time to (B, D); records without a label leave the task (counted)
      -> standardisation with the mean and standard deviation of the train features
      -> for each label fraction f: a seeded subset of the labelled train records
         (`label_subset`), a logistic head (one Dense layer, C sigmoid outputs, binary
         cross-entropy + L2 on the kernel) fitted full-batch (`fit_logistic_head`),
         weight decay and per-class thresholds chosen on validation, then test macro
         AUROC and macro F1 with per-class values and percentile bootstrap intervals
      -> workdir/metrics.json, roc_<pct>.png per fraction, a table on stdout
      -> the probe of the largest fraction (100 % by default) saved for prediction
         (`save_predictor`; `beatssl_jax.classify` reads it back with `load_predictor`).

The workdir holds: config.json, metrics.json, roc_<pct>.png and checkpoints/<step>/ with
the predictor's state {encoder, head, feature_mean, feature_std, thresholds}.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from beatssl_jax import downstream, metrics, sharding, writers
from beatssl_jax.models.encoder import Encoder, EncoderConfig

PROGRAM = "linear_probe"
METRICS_FILE = "metrics.json"
PREDICTOR_STEP = 1
POOLINGS = ("mean", "mean_max")
OPTIMIZERS = ("lbfgs", "adam")


def _say(message: str) -> None:
    """Log, and print on process 0 (the progress a user watches)."""
    logging.info(message)
    if jax.process_index() == 0:
        print(message, flush=True)


# ---------------------------------------------------------------------------------------------
# Frozen features.


def pool_features(e: jnp.ndarray, pooling: str) -> jnp.ndarray:
    """One vector per record from the encoder output e: (B, T', C) -> (B, C) for "mean"
    (average over time), (B, 2C) for "mean_max" (average and maximum concatenated)."""
    e = e.astype(jnp.float32)
    if pooling == "mean":
        return jnp.mean(e, axis=1)
    if pooling == "mean_max":
        return jnp.concatenate([jnp.mean(e, axis=1), jnp.max(e, axis=1)], axis=-1)
    raise ValueError(f"config.pooling: expected one of {POOLINGS}, got {pooling!r}")


def feature_dim(encoder_cfg: EncoderConfig, pooling: str) -> int:
    """D, the length of a pooled feature vector."""
    width = int(encoder_cfg.widths[-1])
    return 2 * width if pooling == "mean_max" else width


@functools.lru_cache(maxsize=8)
def feature_fn(encoder_cfg: EncoderConfig, pooling: str) -> Any:
    """Jitted (params, batch) -> batch with `features` (B, D) added in place of `ecg`
    (B, T, 12); every other field of the batch passes through (labels stay aligned)."""
    model = Encoder(encoder_cfg)

    def fn(params: Any, batch: Mapping[str, jnp.ndarray]) -> dict[str, jnp.ndarray]:
        e, _ = model.apply({"params": params}, batch["ecg"])  # (B, T', C)
        out = {k: v for k, v in batch.items() if k != "ecg"}
        out["features"] = pool_features(e, pooling)
        return out

    return jax.jit(fn)


def extract_split(
    builder: Any,
    split: str,
    fields: Sequence[str],
    params: Any,
    fn: Any,
    mesh: jax.sharding.Mesh,
    batch_size: int,
    threads: int,
) -> dict[str, np.ndarray]:
    """`fn` over every record of `split` in order: features (N, D) and the other `fields`."""
    source = downstream.split_source(builder, split, ["ecg", *fields])
    if len(source) == 0:
        raise ValueError(f"{builder.info.full_name}: split '{split}' has no records")
    it = downstream.batches(source, ["ecg", *fields], batch_size, threads=threads)
    return downstream.apply_batched(fn, it, mesh, params)


def standardisation(features: np.ndarray, eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and standard deviation of features (N, D); a constant dimension
    gets scale 1, so it maps to 0 instead of dividing by zero."""
    mean = features.mean(axis=0)
    std = features.std(axis=0)
    return mean.astype(np.float32), np.where(std > eps, std, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Label fractions.


def label_subset(
    labels: np.ndarray, fraction: float, seed: int, min_positives: int
) -> tuple[np.ndarray, int]:
    """Indices (sorted) of the train records a label fraction uses, and how many were added.

    labels: (N, C) {0, 1}. The subset is the first ceil(fraction * N) records of one seeded
    permutation of 0..N-1 (`np.random.default_rng(seed)`), so at one seed the fractions are
    nested (1 % within 10 % within 100 %). Top-up: a class with fewer than `min_positives`
    positives in that subset gets its next positives in permutation order added until it
    has min(min_positives, its positives in all N) (classes in column order). The subset
    then holds ceil(fraction * N) + added records.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label fraction must lie in (0, 1], got {fraction}")
    y = np.asarray(labels) > 0
    n = y.shape[0]
    if n == 0:
        raise ValueError("label_subset: no labelled train records")
    order = np.random.default_rng(seed).permutation(n)
    size = min(n, math.ceil(fraction * n - 1e-9))  # 0.1 * 30 is 3.0000000000000004
    chosen = np.zeros(n, bool)
    chosen[order[:size]] = True
    added = 0
    for k in range(y.shape[1]):
        want = min(int(min_positives), int(y[:, k].sum()))
        missing = want - int(y[chosen, k].sum())
        if missing <= 0:
            continue
        candidates = [i for i in order if y[i, k] and not chosen[i]][:missing]
        chosen[candidates] = True
        added += len(candidates)
    return np.flatnonzero(chosen), added


# ---------------------------------------------------------------------------------------------
# The logistic head.


def head_loss(
    head: Mapping[str, jnp.ndarray], x: jnp.ndarray, y: jnp.ndarray, weight_decay: jnp.ndarray
) -> jnp.ndarray:
    """Mean binary cross-entropy of sigmoid(x @ kernel + bias) against y (N, C), plus
    weight_decay / 2 * ||kernel||^2 (the bias is not penalised)."""
    logits = x @ head["kernel"] + head["bias"]  # (N, C)
    bce = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, y))
    return bce + 0.5 * weight_decay * jnp.sum(jnp.square(head["kernel"]))


@functools.partial(jax.jit, static_argnames=("steps", "optimizer", "learning_rate"))
def _fit(
    x: jnp.ndarray,
    y: jnp.ndarray,
    weight_decay: jnp.ndarray,
    *,
    steps: int,
    optimizer: str,
    learning_rate: float,
) -> tuple[dict[str, jnp.ndarray], jnp.ndarray]:
    head = {
        "kernel": jnp.zeros((x.shape[1], y.shape[1]), jnp.float32),
        "bias": jnp.zeros((y.shape[1],), jnp.float32),
    }

    def loss(h: Any) -> jnp.ndarray:
        return head_loss(h, x, y, weight_decay)

    if optimizer == "lbfgs":
        tx = optax.lbfgs()
        value_and_grad = optax.value_and_grad_from_state(loss)

        def step(carry: Any, _: Any) -> tuple[Any, jnp.ndarray]:
            params, state = carry
            value, grad = value_and_grad(params, state=state)
            updates, new_state = tx.update(
                grad, state, params, value=value, grad=grad, value_fn=loss
            )
            new_params = optax.apply_updates(params, updates)
            # At the optimum the line search can divide 0 by 0: keep the last finite point.
            finite = jnp.all(
                jnp.asarray([jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(new_params)])
            )
            keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
            return (jax.tree.map(keep, new_params, params), new_state), value
    else:
        tx = optax.adam(learning_rate)
        value_and_grad = jax.value_and_grad(loss)

        def step(carry: Any, _: Any) -> tuple[Any, jnp.ndarray]:
            params, state = carry
            value, grad = value_and_grad(params)
            updates, new_state = tx.update(grad, state, params)
            return (optax.apply_updates(params, updates), new_state), value

    (head, _), losses = jax.lax.scan(step, (head, tx.init(head)), None, length=steps)
    return head, losses


def fit_logistic_head(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    weight_decay: float,
    steps: int,
    optimizer: str = "lbfgs",
    learning_rate: float = 0.01,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A logistic head fitted full-batch: features (N, D) (standardised), labels (N, C)
    {0, 1} -> ({kernel (D, C), bias (C,)}, loss per step (steps,)).

    Starts from zero weights (the problem is convex, so the start only sets the path);
    `optimizer` is "lbfgs" (optax L-BFGS with its zoom line search) or "adam"."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"config.probe.optimizer: expected one of {OPTIMIZERS}, got {optimizer!r}")
    x = jnp.asarray(features, jnp.float32)
    y = jnp.asarray(labels, jnp.float32)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"fit_logistic_head: expected features (N, D) and labels (N, C), got {x.shape} "
            f"and {y.shape}"
        )
    head, losses = _fit(
        x,
        y,
        jnp.float32(weight_decay),
        steps=int(steps),
        optimizer=optimizer,
        learning_rate=float(learning_rate),
    )
    head = jax.tree.map(np.asarray, head)
    if not all(np.all(np.isfinite(v)) for v in head.values()):
        raise FloatingPointError(
            f"fit_logistic_head: non-finite weights after {steps} {optimizer} steps "
            f"(weight decay {weight_decay}); lower --config.probe.learning_rate"
        )
    return head, np.asarray(losses)


def predict_proba(head: Mapping[str, np.ndarray], features: np.ndarray) -> np.ndarray:
    """Class probabilities (N, C) = sigmoid(features (N, D) @ kernel + bias)."""
    logits = np.asarray(features, np.float64) @ head["kernel"] + head["bias"]
    return (1.0 / (1.0 + np.exp(-logits))).astype(np.float64)


def _macro_auroc_nan_safe(y: np.ndarray, p: np.ndarray) -> float:
    """Mean AUROC over the classes where it is defined (-inf when none is): model selection
    on a small validation split where a class may have no positive."""
    values = [metrics.auroc(y[:, k], p[:, k]) for k in range(y.shape[1])]
    defined = [v for v in values if not math.isnan(v)]
    return float(np.mean(defined)) if defined else -math.inf


def fit_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    probe: ml_collections.ConfigDict,
) -> tuple[dict[str, np.ndarray], float, dict[str, float]]:
    """The head for each of `probe.weight_decays`; keeps the one with the best validation
    macro AUROC (the first on ties). Returns (head, weight decay, {decay: val AUROC})."""
    decays = [float(w) for w in probe.weight_decays]
    if not decays:
        raise ValueError("config.probe.weight_decays: give at least one weight decay")
    best: tuple[float, dict[str, np.ndarray], float] | None = None
    search = {}
    for wd in decays:
        head, _ = fit_logistic_head(
            x_train,
            y_train,
            weight_decay=wd,
            steps=int(probe.steps),
            optimizer=str(probe.optimizer),
            learning_rate=float(probe.learning_rate),
        )
        score = _macro_auroc_nan_safe(y_val, predict_proba(head, x_val))
        search[f"{wd:g}"] = score
        if best is None or score > best[0]:
            best = (score, head, wd)
    assert best is not None
    return best[1], best[2], search


# ---------------------------------------------------------------------------------------------
# The saved probe (for `beatssl_jax.classify`).


def predictor_target(info: Mapping[str, Any]) -> dict[str, Any]:
    """ShapeDtypeStructs of a saved predictor's state, from its `predictor` description."""
    cfg = EncoderConfig(**info["encoder"])
    x = jax.ShapeDtypeStruct((1, int(info["num_samples"]), 12), jnp.float32)
    encoder = jax.eval_shape(
        lambda x: Encoder(cfg).init(jax.random.key(0), jnp.zeros(x.shape, x.dtype))["params"], x
    )
    d, c = int(info["feature_dim"]), len(info["class_names"])
    f32 = jnp.float32
    return {
        "encoder": jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype), encoder),
        "head": {
            "kernel": jax.ShapeDtypeStruct((d, c), f32),
            "bias": jax.ShapeDtypeStruct((c,), f32),
        },
        "feature_mean": jax.ShapeDtypeStruct((d,), f32),
        "feature_std": jax.ShapeDtypeStruct((d,), f32),
        "thresholds": jax.ShapeDtypeStruct((c,), f32),
    }


def save_predictor(workdir: str | Path, state: Mapping[str, Any], info: Mapping[str, Any]) -> Path:
    """Write the predictor's state {encoder, head {kernel, bias}, feature_mean,
    feature_std, thresholds} into workdir/checkpoints (step PREDICTOR_STEP), replacing a
    predictor an earlier run of this workdir saved; `info` goes beside it as the
    checkpoint's JSON extra. Returns the checkpoint folder."""
    return downstream.save_fitted(workdir, PREDICTOR_STEP, dict(state), info)


class NotAProbeRunError(FileNotFoundError):
    """A workdir is not a finished linear-probe run."""


def load_predictor(workdir: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state, predictor description) of a finished linear-probe run in `workdir`.

    Raises NotAProbeRunError naming the workdir and what is missing."""
    return downstream.load_fitted(
        workdir, PROGRAM, METRICS_FILE, predictor_target, NotAProbeRunError
    )


# ---------------------------------------------------------------------------------------------
# The program.


def _percent(fraction: float) -> str:
    return f"{100.0 * fraction:g}"


def _split_counts(
    name: str, data: Mapping[str, np.ndarray], keep: np.ndarray, class_names: Sequence[str]
) -> dict[str, Any]:
    y = data["labels"][keep]
    return {
        "split": name,
        "records": int(keep.size),
        "labelled": int(keep.sum()),
        "unlabelled_dropped": int(keep.size - keep.sum()),
        "positives": {c: int(y[:, k].sum()) for k, c in enumerate(class_names)},
    }


def _fmt_ci(value: float, interval: Mapping[str, Any]) -> str:
    return f"{value:.3f} [{interval['low']:.3f}, {interval['high']:.3f}]"


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Run the linear probe of `config` and write its report into `workdir`; returns the
    report written to workdir/metrics.json."""
    start = time.perf_counter()
    work = Path(workdir).expanduser()
    downstream.check_workdir(work, config.pretrained, PROGRAM, "it probes")
    work.mkdir(parents=True, exist_ok=True)
    (work / downstream.CONFIG_FILE).write_text(config.to_json_best_effort(indent=2) + "\n")
    if config.pooling not in POOLINGS:
        raise ValueError(f"config.pooling: expected one of {POOLINGS}, got {config.pooling!r}")
    class_names = [str(c) for c in config.class_names]
    fractions = sorted({float(f) for f in config.label_fractions})
    if not fractions:
        raise ValueError("config.label_fractions: give at least one fraction")

    # Data and encoder.
    builder = downstream.prepare_dataset(config)
    ecg_shape = tuple(builder.info.features["ecg"].shape)
    num_samples = int(ecg_shape[0])
    signal = downstream.dataset_signal_info(builder, PROGRAM, "classify")
    encoder_cfg, params, provenance = downstream.load_encoder(config, num_samples)
    _say(
        f"linear probe: encoder {provenance['preset']} from {provenance['pretrained']}"
        + (f" (step {provenance['step']})" if provenance.get("step") is not None else "")
        + f", dataset {builder.info.full_name}, records {ecg_shape}"
    )

    # Frozen features of every record.
    mesh = sharding.make_mesh(jax.local_devices())
    batch_size = downstream.eval_batch_size(int(config.batch_size), mesh)
    params_dev = jax.device_put(params, sharding.replicated_sharding(mesh))
    fn = feature_fn(encoder_cfg, str(config.pooling))
    mask_field = str(config.get("label_mask_field", "") or "")
    fields = [str(config.label_field)] + ([mask_field] if mask_field else [])
    splits = {
        "train": str(config.train_split),
        "validation": str(config.validation_split),
        "test": str(config.test_split),
    }
    data: dict[str, dict[str, np.ndarray]] = {}
    t0 = time.perf_counter()
    for role, split in splits.items():
        out = extract_split(
            builder, split, fields, params_dev, fn, mesh, batch_size, int(config.read_threads)
        )
        labels = np.asarray(out[str(config.label_field)])
        if labels.ndim != 2 or labels.shape[1] != len(class_names):
            raise ValueError(
                f"{builder.info.full_name} split '{split}': field {config.label_field!r} has "
                f"shape {labels.shape[1:]} per record, config.class_names has "
                f"{len(class_names)} classes {class_names}"
            )
        keep = (
            np.asarray(out[mask_field]).astype(bool)
            if mask_field
            else np.ones(labels.shape[0], bool)
        )
        data[role] = {
            "features": np.asarray(out["features"], np.float32),
            "labels": (labels > 0.5).astype(np.int32),
            "keep": keep,
        }
    extract_seconds = time.perf_counter() - t0
    counts = {
        role: _split_counts(splits[role], d, d["keep"], class_names) for role, d in data.items()
    }
    _say(
        "features: "
        + ", ".join(
            f"{role} {c['labelled']} labelled of {c['records']}" for role, c in counts.items()
        )
        + f" ({extract_seconds:.1f} s); records without a label leave the task"
    )

    # Standardise with the train split's statistics (every train record: the features need
    # no label).
    mean, std = standardisation(data["train"]["features"])

    def task(role: str) -> tuple[np.ndarray, np.ndarray]:
        d = data[role]
        return (d["features"][d["keep"]] - mean) / std, d["labels"][d["keep"]]

    x_train, y_train = task("train")
    x_val, y_val = task("validation")
    x_test, y_test = task("test")

    encoder_name = (
        f"random-init {provenance['preset']} encoder"
        if provenance["pretrained"] == downstream.NONE
        else f"{provenance['preset']} encoder of {Path(provenance['pretrained']).name} "
        f"(step {provenance.get('step')})"
    )
    results: dict[str, Any] = {}
    kept: dict[str, Any] | None = None
    for fraction in fractions:
        idx, added = label_subset(y_train, fraction, int(config.seed), int(config.min_positives))
        head, wd, search = fit_probe(x_train[idx], y_train[idx], x_val, y_val, config.probe)
        p_val = predict_proba(head, x_val)
        p_test = predict_proba(head, x_test)
        thresholds = metrics.best_thresholds(y_val, p_val)
        val = metrics.classification_metrics(y_val, p_val, thresholds, class_names)
        test = metrics.classification_metrics(y_test, p_test, thresholds, class_names)
        intervals = metrics.bootstrap_intervals(
            y_test,
            p_test,
            thresholds,
            class_names,
            num_samples=int(config.bootstrap_samples),
            seed=int(config.seed),
            level=float(config.bootstrap_level),
        )
        pct = _percent(fraction)
        entry: dict[str, Any] = {
            "fraction": fraction,
            "train_records": int(idx.size),
            "topped_up": int(added),
            "train_positives": {c: int(y_train[idx, k].sum()) for k, c in enumerate(class_names)},
            "weight_decay": wd,
            "weight_decay_search": search,
            "validation": val,
            "test": test,
            "test_intervals": intervals,
        }
        if config.plots:
            curves = {}
            for k, c in enumerate(class_names):
                fpr, tpr, _ = metrics.roc_curve(y_test[:, k], p_test[:, k])
                curves[c] = (fpr, tpr, test["per_class"][c]["auroc"])
            plot = writers.save_roc_plot(
                work / f"roc_{pct}.png",
                curves,
                f"{builder.info.name} test split, {pct} % of train labels\n{encoder_name}",
            )
            entry["roc_plot"] = plot.name
        results[f"{pct}%"] = entry
        kept = {"fraction": fraction, "head": head, "thresholds": thresholds}

    # The probe of the largest fraction, saved for prediction.
    assert kept is not None
    info = {
        "step": PREDICTOR_STEP,
        "fraction": kept["fraction"],
        "encoder": dataclasses.asdict(encoder_cfg),
        "preset": provenance["preset"],
        "pooling": str(config.pooling),
        "feature_dim": feature_dim(encoder_cfg, str(config.pooling)),
        "class_names": class_names,
        "num_samples": num_samples,
        "fs": float(signal["preprocess"]["fs"]),
        "signal": signal,
        "batch_size": int(config.batch_size),
    }
    predictor_dir = save_predictor(
        work,
        {
            "encoder": params,
            "head": kept["head"],
            "feature_mean": mean,
            "feature_std": std,
            "thresholds": kept["thresholds"],
        },
        info,
    )

    report = {
        "program": PROGRAM,
        "provenance": {
            **provenance,
            "dataset": builder.info.full_name,
            "seed": int(config.seed),
            "pooling": str(config.pooling),
            "feature_dim": info["feature_dim"],
            "optimizer": str(config.probe.optimizer),
            "probe_steps": int(config.probe.steps),
        },
        "records": counts,
        "fractions": results,
        "predictor": info,
        "seconds": {"features": extract_seconds, "total": time.perf_counter() - start},
    }
    (work / METRICS_FILE).write_text(json.dumps(report, indent=2) + "\n")

    lines = [
        f"{'labels':>7} {'train':>6}  {'val AUROC':>9}  {'test macro AUROC [95% CI]':>26}  "
        f"{'test macro F1 [95% CI]':>26}"
    ]
    for pct, r in results.items():
        ci = r["test_intervals"]
        lines.append(
            f"{pct:>7} {r['train_records']:>6}  {r['validation']['macro_auroc']:>9.3f}  "
            f"{_fmt_ci(r['test']['macro_auroc'], ci['macro_auroc']):>26}  "
            f"{_fmt_ci(r['test']['macro_f1'], ci['macro_f1']):>26}"
        )
    _say("\n".join(lines))
    _say(
        f"metrics in {work / METRICS_FILE}; ROC plots roc_<pct>.png in {work}; the "
        f"{_percent(kept['fraction'])} % probe for beatssl_jax.classify in {predictor_dir} "
        f"({report['seconds']['total']:.1f} s)"
    )
    return report


run = train_and_evaluate
