"""Wave segmentation (LUDB protocol, METHOD.md section 7): `python -m beatssl_jax.main
--config=configs/segment.py[:ludb] --workdir=W`.

The program reads top to bottom:

    mesh over the local devices ('data' axis)
      -> dataset (built on demand); train / validation / test splits held in memory:
         ecg (N, T, 12), wave_mask (N, T, 12) int8 codes 0..3, annotated (N, T, 12) bool
      -> encoder parameters (`downstream.load_encoder`: a pretraining run's, read-only, or
         random init) and a fresh U-Net decoder (`models.decoder.SegmentationModel`)
      -> AdamW per half: the encoder's updates are zero when `freeze_encoder`, otherwise
         its learning rate is `encoder_learning_rate_multiplier` x the decoder's
      -> one jitted train step (state donated, batch split over 'data'): random crops of
         `crop_samples` with an amplitude scale, cross-entropy over the 4 classes per
         sample and lead, averaged over the annotated samples only (`masked_cross_entropy`), plus
         `dice_weight` x a soft Dice loss over the same samples (`masked_soft_dice`)
      -> every `eval_every_steps`: validation macro sample-wise F1 of the cleaned
         predictions; the best step's parameters are kept
      -> the best parameters scored on validation and test, raw and cleaned
         (`metrics.segmentation_metrics`), into `W/metrics.json`; `W/overlay_<record>.png`
         for a few test records; the model saved in `W/checkpoints` for
         `python -m beatssl_jax.delineate`.

Cleaning is `ecg.delineation.clean_mask` with `config.cleanup`: short gaps inside a wave
are filled and runs too short to be a wave removed. Both the raw and the cleaned scores are
reported; the cleaned ones pick the best step and are the headline figures.

Decision rule. A sample's label is the argmax of its four logits after adding an offset to
the background logit. The offset is chosen after training, on validation, from
`config.background_offsets` (0 is the plain argmax); a negative offset widens the predicted
waves, which counters a model that under-segments (more false negatives than false
positives). Test is scored with the chosen offset (and, for reference, with 0), and
`delineate` uses it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
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
from flax.training import train_state

from beatssl_jax import downstream, sharding, writers
from beatssl_jax.ecg.delineation import WAVE_NAMES, CleanupConfig, clean_mask, mask_to_intervals
from beatssl_jax.ecg.leads import LEAD_INDEX, LEADS
from beatssl_jax.metrics import samplewise_scores, segmentation_metrics
from beatssl_jax.models.decoder import NUM_CLASSES, DecoderConfig, SegmentationModel
from beatssl_jax.models.encoder import EncoderConfig
from beatssl_jax.pretrain import OptimizerConfig, learning_rate_schedule, make_optimizer

PROGRAM = "segment"
METRICS_FILE = "metrics.json"
FIELDS = ("ecg", "wave_mask", "annotated")
WAVE_COLOURS = {"P": "tab:green", "QRS": "tab:red", "T": "tab:blue"}


def _say(message: str) -> None:
    """Log on every process; print on process 0 (the progress a user watches)."""
    logging.info(message)
    if jax.process_index() == 0:
        print(message, flush=True)


# ---------------------------------------------------------------------------------------------
# Configuration -> objects.


def decoder_config(config: ml_collections.ConfigDict) -> DecoderConfig:
    """The `DecoderConfig` of `config.decoder` (computation dtype from `config.model`)."""
    d = config.decoder
    return DecoderConfig(
        widths=tuple(d.widths),
        kernel_size=int(d.kernel_size),
        num_groups=int(d.num_groups),
        bottleneck_blocks=int(d.get("bottleneck_blocks", 0)),
        dtype=str(config.model.get("dtype", "float32")),
    )


def cleanup_config(config: ml_collections.ConfigDict) -> CleanupConfig:
    """The `CleanupConfig` of `config.cleanup`."""
    return CleanupConfig(
        min_duration_ms=tuple(float(v) for v in config.cleanup.min_duration_ms),
        max_gap_ms=float(config.cleanup.max_gap_ms),
    )


def _optimizer_config(config: ml_collections.ConfigDict, multiplier: float) -> OptimizerConfig:
    opt = OptimizerConfig.from_config(config)
    return dataclasses.replace(opt, learning_rate=opt.learning_rate * multiplier)


def make_segment_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """AdamW with warm-up and cosine decay (`pretrain.make_optimizer`) on each half of
    {"encoder", "decoder"}: the encoder's updates are exactly zero when
    `config.freeze_encoder`, else its learning rate is scaled by
    `config.encoder_learning_rate_multiplier`."""
    decoder_tx = make_optimizer(_optimizer_config(config, 1.0))
    if bool(config.freeze_encoder):
        encoder_tx = optax.set_to_zero()
    else:
        multiplier = float(config.encoder_learning_rate_multiplier)
        encoder_tx = make_optimizer(_optimizer_config(config, multiplier))
    return optax.multi_transform(
        {"encoder": encoder_tx, "decoder": decoder_tx},
        lambda params: {k: jax.tree.map(lambda _, k=k: k, v) for k, v in params.items()},
    )


# ---------------------------------------------------------------------------------------------
# Loss, state and step.


def masked_cross_entropy(
    logits: jnp.ndarray, labels: jnp.ndarray, annotated: jnp.ndarray
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Mean softmax cross-entropy over the annotated samples, and their number.

    logits: (B, T, L, 4) float; labels: (B, T, L) int codes 0..3; annotated: (B, T, L) bool.
    A sample outside `annotated` contributes exactly nothing to the loss or its gradient
    (its term is selected away, not multiplied, so even a non-finite term cannot leak);
    the mean is over the annotated samples of the whole batch (1 when there is none, so a
    batch without annotations gives loss 0).
    """
    labels = jnp.clip(labels.astype(jnp.int32), 0, NUM_CLASSES - 1)
    per_sample = optax.softmax_cross_entropy_with_integer_labels(logits, labels)  # (B, T, L)
    mask = annotated.astype(bool)
    total = jnp.sum(jnp.where(mask, per_sample, 0.0))
    count = jnp.sum(mask)
    return total / jnp.maximum(count, 1).astype(total.dtype), count


def masked_soft_dice(
    logits: jnp.ndarray, labels: jnp.ndarray, annotated: jnp.ndarray
) -> jnp.ndarray:
    """1 - mean over the waves (P, QRS, T) of the soft Dice of the batch's annotated samples.

    For wave k: 2 sum(p_k y_k) / (sum(p_k) + sum(y_k)) with p the softmax and y the one-hot
    labels, pooled over the batch's annotated samples (the differentiable form of the
    pooled sample-wise F1 that `metrics.samplewise_scores` reports). Samples outside
    `annotated` are selected away, as in `masked_cross_entropy`.
    """
    mask = annotated.astype(bool)[..., None]  # (B, T, L, 1)
    p = jnp.where(mask, jax.nn.softmax(logits, axis=-1), 0.0)[..., 1:]  # (B, T, L, 3)
    y = jnp.where(mask, jax.nn.one_hot(labels, NUM_CLASSES, dtype=p.dtype), 0.0)[..., 1:]
    inter = jnp.sum(p * y, axis=(0, 1, 2))
    total = jnp.sum(p, axis=(0, 1, 2)) + jnp.sum(y, axis=(0, 1, 2))
    return 1.0 - jnp.mean(2.0 * inter / jnp.maximum(total, 1.0))


def create_train_state(
    config: ml_collections.ConfigDict,
    encoder_cfg: EncoderConfig,
    decoder_cfg: DecoderConfig,
    encoder_params: Any,
    num_samples: int,
) -> train_state.TrainState:
    """Parameters {"encoder": encoder_params, "decoder": fresh from config.seed} and the
    optimiser state (`make_segment_optimizer`)."""
    model = SegmentationModel(encoder_cfg, decoder_cfg)
    x = jnp.zeros((1, num_samples, 12), jnp.float32)
    key = jax.random.fold_in(jax.random.key(int(config.seed)), 1)
    shapes = jax.eval_shape(model.init, key, x)["params"]  # traced, not compiled
    fresh = jax.tree.map(lambda p: (tuple(p.shape), str(p.dtype)), shapes["encoder"])
    given = jax.tree.map(lambda p: (tuple(p.shape), str(p.dtype)), encoder_params)
    if jax.tree.structure(fresh) != jax.tree.structure(given) or fresh != given:
        raise ValueError(
            "create_train_state: the encoder parameters do not have the structure of "
            f"Encoder({encoder_cfg}); check --config.model.preset"
        )
    params = jax.jit(model.init)(key, x)["params"]
    params = {"encoder": jax.tree.map(jnp.asarray, encoder_params), "decoder": params["decoder"]}
    return train_state.TrainState.create(
        apply_fn=model.apply, params=params, tx=make_segment_optimizer(config)
    )


def train_step(
    state: train_state.TrainState,
    batch: Mapping[str, jnp.ndarray],
    *,
    schedule: optax.Schedule,
    dice_weight: float = 0.0,
) -> tuple[train_state.TrainState, dict[str, jnp.ndarray]]:
    """One AdamW update on batch {ecg (B, T, 12), wave_mask (B, T, 12), annotated (B, T, 12)}:
    loss = masked cross-entropy + dice_weight * masked soft Dice loss."""

    def loss_fn(params: Any) -> tuple[jnp.ndarray, jnp.ndarray]:
        logits = state.apply_fn({"params": params}, batch["ecg"])
        labels, annotated = batch["wave_mask"], batch["annotated"]
        loss, count = masked_cross_entropy(logits, labels, annotated)
        if dice_weight:
            loss = loss + dice_weight * masked_soft_dice(logits, labels, annotated)
        return loss, count

    (loss, count), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new_state = state.apply_gradients(grads=grads)
    metrics = {
        "loss": loss,
        "annotated_fraction": count / batch["annotated"].size,
        "grad_norm": optax.tree.norm(grads),
        "learning_rate": schedule(state.step),
    }
    return new_state, metrics


def make_train_step(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> Any:
    """`train_step` jitted with the state donated, state and metrics replicated, the batch
    split over the mesh's 'data' axis."""
    replicated = sharding.replicated_sharding(mesh)
    step = functools.partial(
        train_step,
        schedule=learning_rate_schedule(_optimizer_config(config, 1.0)),
        dice_weight=float(config.get("dice_weight", 0.0)),
    )
    return jax.jit(
        step,
        in_shardings=(replicated, sharding.batch_sharding(mesh)),
        out_shardings=(replicated, replicated),
        donate_argnums=(0,),
    )


def predict_fn(encoder_cfg: EncoderConfig, decoder_cfg: DecoderConfig) -> Any:
    """jitted (params, background_offset, {"ecg": (B, T, 12)}) -> (B, T, 12) int8 codes:
    the argmax of the logits with the scalar `background_offset` added to the background
    class's logit (0: the plain argmax; < 0 labels more samples as waves)."""
    model = SegmentationModel(encoder_cfg, decoder_cfg)

    def fn(params: Any, background_offset: jnp.ndarray, batch: Mapping[str, jnp.ndarray]):
        logits = model.apply({"params": params}, batch["ecg"])  # (B, T, 12, 4)
        logits = logits.at[..., 0].add(background_offset)
        return jnp.argmax(logits, axis=-1).astype(jnp.int8)

    return jax.jit(fn)


# ---------------------------------------------------------------------------------------------
# Data.


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Random changes to each training crop; the wave labels stay valid under all of them.

    amplitude_scale: the whole crop is multiplied by exp(u), u ~ U(log lo, log hi).
    lead_scale:      each lead is further multiplied by its own exp(U(log lo, log hi)).
    noise_std:       white noise with a standard deviation ~ U(0, noise_std), in signal units.
    wander:          a sinusoid per lead with amplitude ~ U(0, wander), frequency
                     ~ U(0.05, 0.5) Hz and a random phase: baseline wander, in signal units.
    """

    amplitude_scale: tuple[float, float] = (1.0, 1.0)
    lead_scale: tuple[float, float] = (1.0, 1.0)
    noise_std: float = 0.0
    wander: float = 0.0

    def __post_init__(self) -> None:
        for name in ("amplitude_scale", "lead_scale"):
            lo, hi = (float(v) for v in getattr(self, name))
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must be 0 < lo <= hi, got ({lo}, {hi})")
        for name in ("noise_std", "wander"):
            if not float(getattr(self, name)) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> Augmentation:
        return cls(
            amplitude_scale=tuple(float(v) for v in config.amplitude_scale),
            lead_scale=tuple(float(v) for v in config.get("lead_scale", (1.0, 1.0))),
            noise_std=float(config.get("noise_std", 0.0)),
            wander=float(config.get("baseline_wander", 0.0)),
        )

    def __call__(self, rng: np.random.Generator, ecg: np.ndarray, fs: float) -> np.ndarray:
        """`ecg` (B, T, L) -> the augmented crops, float32."""
        b, t, leads = ecg.shape

        def log_uniform(bounds: tuple[float, float], shape: tuple[int, ...]) -> np.ndarray:
            lo, hi = (float(v) for v in bounds)
            return np.exp(rng.uniform(np.log(lo), np.log(hi), size=shape))

        out = ecg * log_uniform(self.amplitude_scale, (b, 1, 1))
        if self.lead_scale != (1.0, 1.0):
            out = out * log_uniform(self.lead_scale, (b, 1, leads))
        if self.wander > 0:
            time_s = np.arange(t) / float(fs)
            amp = rng.uniform(0.0, self.wander, size=(b, 1, leads))
            freq = rng.uniform(0.05, 0.5, size=(b, 1, leads))
            phase = rng.uniform(0.0, 2 * np.pi, size=(b, 1, leads))
            out = out + amp * np.sin(2 * np.pi * freq * time_s[None, :, None] + phase)
        if self.noise_std > 0:
            std = rng.uniform(0.0, self.noise_std, size=(b, 1, 1))
            out = out + std * rng.standard_normal(out.shape)
        return out.astype(np.float32)


def sample_batch(
    rng: np.random.Generator,
    data: Mapping[str, np.ndarray],
    batch_size: int,
    crop_samples: int,
    augment: Augmentation,
    fs: float,
) -> dict[str, np.ndarray]:
    """A training batch: `batch_size` records drawn with replacement, a random window of
    `crop_samples` of each (0: whole records), the ECG changed by `augment`."""
    n, t = data["ecg"].shape[:2]
    crop = t if crop_samples <= 0 else int(crop_samples)
    if crop > t:
        raise ValueError(f"crop_samples {crop} exceeds the records' length {t}")
    rows = rng.integers(0, n, size=batch_size)
    starts = rng.integers(0, t - crop + 1, size=batch_size)
    time_idx = starts[:, None] + np.arange(crop)[None, :]  # (B, crop)
    out = {k: data[k][rows[:, None], time_idx] for k in FIELDS}
    out["ecg"] = augment(rng, out["ecg"], fs)
    return out


def per_record_scores(
    data: Mapping[str, np.ndarray], pred: np.ndarray, names: Sequence[str], fs: float, tol: float
) -> dict[str, dict[str, float]]:
    """Sample-wise F1 per wave and macro, and boundary macro F1, of every record on its own:
    which records pull the pooled figures down. NaN where a record has no such wave."""
    out = {}
    for i, name in enumerate(names):
        m = segmentation_metrics(
            data["wave_mask"][i : i + 1], pred[i : i + 1], data["annotated"][i : i + 1], fs, tol
        )
        sw = m["samplewise"]
        out[str(name)] = {
            "samplewise_macro_f1": float(sw["macro_f1"]),
            **{f"{w}_f1": float(sw[w]["f1"]) for w in WAVE_NAMES},
            "boundary_macro_f1": float(m["boundaries"]["macro_f1"]),
        }
    return out


def _record_names(builder: Any, split: str, n: int) -> list[str]:
    """Names of a split's records: LUDB ids where the dataset has them, else indices."""
    if "record_id" in builder.info.features:
        ids = downstream.read_split(builder, split, ["record_id"])["record_id"]
        return [str(int(i)) for i in ids]
    return [f"{split}{i}" for i in range(n)]


# ---------------------------------------------------------------------------------------------
# Evaluation.


def predict_masks(
    params: Any,
    predict: Any,
    data: Mapping[str, np.ndarray],
    batch_size: int,
    mesh: Any,
    background_offset: float = 0.0,
) -> np.ndarray:
    """(N, T, 12) int8 predicted codes of every record of `data` (whole records)."""
    replicated = sharding.replicated_sharding(mesh)
    dev_params = jax.device_put(params, replicated)
    offset = jax.device_put(jnp.asarray(background_offset, jnp.float32), replicated)
    return downstream.apply_batched(
        predict,
        downstream.array_batches({"ecg": data["ecg"]}, batch_size),
        mesh,
        dev_params,
        offset,
    )


def clean_masks(masks: np.ndarray, fs: float, cleanup: CleanupConfig) -> np.ndarray:
    """`delineation.clean_mask` of every record: (N, T, L) -> (N, T, L) int8."""
    return np.stack([clean_mask(m, fs, cleanup) for m in masks]).astype(np.int8)


def score(
    data: Mapping[str, np.ndarray], raw: np.ndarray, cleaned: np.ndarray, fs: float, tol: float
) -> dict[str, Any]:
    """{"raw": ..., "cleaned": ...} segmentation metrics against data's wave_mask."""
    true, annotated = data["wave_mask"], data["annotated"]
    return {
        "raw": segmentation_metrics(true, raw, annotated, fs, tol),
        "cleaned": segmentation_metrics(true, cleaned, annotated, fs, tol),
    }


# ---------------------------------------------------------------------------------------------
# Overlays.


def save_overlay(
    path: str | Path,
    ecg: np.ndarray,
    true: np.ndarray,
    pred: np.ndarray,
    annotated: np.ndarray,
    fs: float,
    leads: Sequence[str],
    title: str,
) -> Path:
    """A PNG of some leads of one record: the signal, the annotated waves as coloured spans
    in the upper half of each panel, the predicted waves in the lower half, the annotated
    span's limits as dashed lines. ecg, true, pred, annotated: (T, 12)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(ecg.shape[0]) / fs
    fig = Figure(figsize=(14.0, 2.2 * len(leads)), dpi=90)
    for row, lead in enumerate(leads):
        if lead not in LEAD_INDEX:
            raise ValueError(f"save_overlay: unknown lead {lead!r}; leads are {LEADS}")
        j = LEAD_INDEX[lead]
        ax = fig.add_subplot(len(leads), 1, row + 1)
        for mask, (y0, y1) in ((true[:, j], (0.5, 1.0)), (pred[:, j], (0.0, 0.5))):
            for iv in mask_to_intervals(mask):
                ax.axvspan(
                    t[iv.onset],
                    t[iv.offset] + 1.0 / fs,
                    ymin=y0,
                    ymax=y1,
                    color=WAVE_COLOURS[iv.kind],
                    alpha=0.3,
                    linewidth=0,
                )
        ax.plot(t, ecg[:, j], color="black", linewidth=0.7)
        span = np.flatnonzero(annotated[:, j])
        if span.size:
            for edge in (span[0], span[-1]):
                ax.axvline(t[edge], color="0.4", linestyle="--", linewidth=0.8)
        ax.set_ylabel(lead)
        ax.set_xlim(t[0], t[-1])
        if row == 0:
            ax.set_title(f"{title} (upper half: annotated, lower half: predicted)", fontsize=9)
    ax.set_xlabel("time (s)")
    fig.legend(
        handles=[Patch(color=c, alpha=0.3, label=w) for w, c in WAVE_COLOURS.items()],
        loc="upper right",
        fontsize="small",
    )
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


# ---------------------------------------------------------------------------------------------
# The saved model (for `beatssl_jax.delineate`).


class NotASegmentRunError(FileNotFoundError):
    """A workdir is not a finished segmentation run."""


def model_target(info: Mapping[str, Any]) -> Any:
    """ShapeDtypeStructs of a saved model's parameters, from its `predictor` description."""
    enc = EncoderConfig(**info["encoder"])
    dec = DecoderConfig(**info["decoder"])
    model = SegmentationModel(enc, dec)
    x = jax.ShapeDtypeStruct((1, enc.total_stride * 4, 12), jnp.float32)
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x)["params"], x)
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype), shapes)


def save_model(workdir: str | Path, params: Any, info: Mapping[str, Any]) -> Path:
    """Write the parameters {encoder, decoder} into workdir/checkpoints as step
    info["step"], replacing a model an earlier run of this workdir saved; `info` goes
    beside them as the checkpoint's JSON extra."""
    return downstream.save_fitted(workdir, int(info["step"]), params, info)


def load_model(workdir: str | Path) -> tuple[Any, dict[str, Any]]:
    """(parameters, predictor description) of a finished segmentation run in `workdir`.

    Raises NotASegmentRunError naming the workdir and what is missing."""
    return downstream.load_fitted(workdir, PROGRAM, METRICS_FILE, model_target, NotASegmentRunError)


# ---------------------------------------------------------------------------------------------
# The program.


def _fmt(value: float) -> str:
    return "  nan" if not np.isfinite(value) else f"{value:.3f}"


def results_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Sample-wise F1 per wave, macro F1 / Dice and boundary macro F1 of each split x
    variant, then the boundary detail of test (cleaned)."""
    lines = [
        f"{'split':<11}{'variant':<9}"
        + "".join(f"{'F1 ' + w:>8}" for w in WAVE_NAMES)
        + f"{'macroF1':>9}{'macroDice':>11}{'bndF1':>8}"
    ]
    for split, by_variant in results.items():
        for variant, m in by_variant.items():
            s, b = m["samplewise"], m["boundaries"]
            lines.append(
                f"{split:<11}{variant:<9}"
                + "".join(f"{_fmt(s[w]['f1']):>8}" for w in WAVE_NAMES)
                + f"{_fmt(s['macro_f1']):>9}{_fmt(s['macro_dice']):>11}"
                + f"{_fmt(b['macro_f1']):>8}"
            )
    if "test" in results:
        b = results["test"]["cleaned"]["boundaries"]  # the chosen background offset
        lines.append(
            f"test boundaries (cleaned, +-{results['test']['cleaned']['tolerance_ms']:g} ms): "
            f"{'kind':<11}{'sens':>7}{'PPV':>7}{'F1':>7}{'error ms (mean +- SD)':>24}"
        )
        for kind in (f"{w}_{side}" for w in WAVE_NAMES for side in ("onset", "offset")):
            k = b[kind]
            lines.append(
                f"{'':<40}{kind:<11}{_fmt(k['sensitivity']):>7}{_fmt(k['ppv']):>7}"
                f"{_fmt(k['f1']):>7}{k['mean_error_ms']:>13.1f} +- {k['sd_error_ms']:<6.1f}"
            )
    return "\n".join(lines)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Train the segmentation model, pick the best validation step, score it, save it.

    Returns the report written to `workdir/metrics.json`.
    """
    run_start = time.perf_counter()
    workdir_path = Path(workdir).expanduser()
    downstream.check_workdir(workdir_path, config.pretrained, PROGRAM, "it starts from")
    workdir_path.mkdir(parents=True, exist_ok=True)
    (workdir_path / downstream.CONFIG_FILE).write_text(config.to_json_best_effort(indent=2))
    (workdir_path / writers.METRICS_FILE).unlink(missing_ok=True)  # a rerun starts afresh
    mesh = sharding.make_mesh(jax.local_devices())
    batch_size = downstream.eval_batch_size(int(config.batch_size), mesh)
    eval_bs = downstream.eval_batch_size(int(config.eval_batch_size), mesh)

    builder = downstream.prepare_dataset(config)
    signal = downstream.dataset_signal_info(builder, PROGRAM, "delineation")
    fs = float(signal["preprocess"]["fs"])
    threads = int(config.read_threads)
    data = {
        split: downstream.read_split(builder, config[f"{split}_split"], FIELDS, threads=threads)
        for split in ("train", "validation", "test")
    }
    num_samples = int(data["train"]["ecg"].shape[1])
    counts = {s: int(d["ecg"].shape[0]) for s, d in data.items()}
    _say(
        f"data: {builder.info.full_name} at {fs:g} Hz, {num_samples} samples; records "
        + ", ".join(f"{s} {n}" for s, n in counts.items())
    )

    encoder_cfg, encoder_params, provenance = downstream.load_encoder(config, num_samples)
    decoder_cfg = decoder_config(config)
    decoder_cfg.check(encoder_cfg)
    crop = int(config.crop_samples)
    if crop and crop % encoder_cfg.total_stride:
        raise ValueError(
            f"crop_samples {crop} is not a multiple of the encoder's total stride "
            f"{encoder_cfg.total_stride}"
        )
    state = create_train_state(config, encoder_cfg, decoder_cfg, encoder_params, num_samples)
    state = jax.device_put(state, sharding.replicated_sharding(mesh))
    n_enc = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(state.params["encoder"]))
    n_dec = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(state.params["decoder"]))
    _say(
        f"model: encoder '{provenance['preset']}' ({n_enc:,} parameters, from "
        f"{provenance['pretrained']}"
        + (f" step {provenance.get('step')}" if provenance.get("step") is not None else "")
        + f", {'frozen' if config.freeze_encoder else 'fine-tuned'}), decoder widths "
        f"{decoder_cfg.widths} ({n_dec:,} parameters)"
    )

    p_train_step = make_train_step(config, mesh)
    predict = predict_fn(encoder_cfg, decoder_cfg)
    cleanup = cleanup_config(config)
    tol = float(config.tolerance_ms)
    rng = np.random.default_rng(int(config.seed))
    augment = Augmentation.from_config(config)
    place = sharding.batch_sharding(mesh)
    writer = writers.MetricWriter(workdir_path)
    num_steps = int(config.num_train_steps)
    eval_every = max(int(config.eval_every_steps), 1)
    log_every = max(int(config.log_every_steps), 1)
    best: dict[str, Any] = {"step": 0, "macro_f1": -np.inf, "params": None}
    history: list[dict[str, float]] = []
    train_start = time.perf_counter()
    window_start, window_step = train_start, 0

    def validate(step: int, params_device: Any) -> None:
        raw = predict_masks(params_device, predict, data["validation"], eval_bs, mesh)
        cleaned = clean_masks(raw, fs, cleanup)
        m = score(data["validation"], raw, cleaned, fs, tol)
        f1 = float(m["cleaned"]["samplewise"]["macro_f1"])
        record = {
            "val_macro_f1": f1,
            "val_macro_f1_raw": float(m["raw"]["samplewise"]["macro_f1"]),
            "val_boundary_macro_f1": float(m["cleaned"]["boundaries"]["macro_f1"]),
        }
        writer.write(step, record)
        history.append({"step": step, **record})
        improved = np.isfinite(f1) and f1 > best["macro_f1"]
        if improved:
            best.update(
                step=step,
                macro_f1=f1,
                params=jax.tree.map(lambda a: np.array(a, copy=True), params_device),
            )
        _say(
            f"validation at step {step}: macro F1 {f1:.4f} (raw "
            f"{record['val_macro_f1_raw']:.4f}), boundary macro F1 "
            f"{record['val_boundary_macro_f1']:.4f}" + (" (best so far)" if improved else "")
        )

    try:
        for step in range(1, num_steps + 1):
            batch = sample_batch(rng, data["train"], batch_size, crop, augment, fs)
            state, metrics = p_train_step(state, jax.device_put(batch, place))
            if step == 1:
                jax.block_until_ready(metrics)
                first = time.perf_counter() - train_start
                _say(f"first step (compilation included) took {first:.1f} s")
                window_start, window_step = time.perf_counter(), 1
            if step % log_every == 0 or step == num_steps:
                host = jax.device_get(metrics)
                if not np.isfinite(float(host["loss"])):
                    raise FloatingPointError(
                        f"non-finite loss at step {step}; lower --config.learning_rate"
                    )
                now = time.perf_counter()
                rate = (step - window_step) / max(now - window_start, 1e-9)
                writer.write(step, {**host, "steps_per_sec": rate})
                _say(
                    f"step {step}/{num_steps} loss {float(host['loss']):.4f} lr "
                    f"{float(host['learning_rate']):.2e} {rate:.2f} steps/s"
                )
                window_start, window_step = now, step
            if step % eval_every == 0 or step == num_steps:
                validate(step, state.params)
    finally:
        writer.close()
    train_seconds = time.perf_counter() - train_start
    if best["params"] is None:  # no finite validation score: keep the last parameters
        best.update(step=num_steps, params=jax.tree.map(np.asarray, state.params))
    params = best["params"]
    _say(f"best validation macro F1 {best['macro_f1']:.4f} at step {best['step']}")

    # The background logit offset: chosen on validation from config.background_offsets
    # (cleaned macro F1; ties to the first listed), then applied to test.
    offsets = [float(v) for v in config.background_offsets] or [0.0]
    offset_scores, validation_raw = {}, {}
    for offset in offsets:
        raw = predict_masks(params, predict, data["validation"], eval_bs, mesh, offset)
        validation_raw[offset] = raw
        sw = samplewise_scores(
            data["validation"]["wave_mask"],
            clean_masks(raw, fs, cleanup),
            data["validation"]["annotated"],
        )
        offset_scores[offset] = float(sw["macro_f1"])
    chosen = max(
        offsets, key=lambda v: (np.nan_to_num(offset_scores[v], nan=-1.0), -offsets.index(v))
    )
    _say(
        "background logit offset on validation (cleaned macro F1): "
        + ", ".join(f"{v:g}: {f:.4f}" for v, f in offset_scores.items())
        + f"; chosen {chosen:g}"
    )

    results: dict[str, Any] = {}
    test_pred = None
    for split in ("validation", "test"):
        if split == "validation":
            raw = validation_raw[chosen]
        else:
            raw = predict_masks(params, predict, data[split], eval_bs, mesh, chosen)
        cleaned = clean_masks(raw, fs, cleanup)
        results[split] = score(data[split], raw, cleaned, fs, tol)
        if split == "test":
            test_pred = cleaned
    if chosen != 0.0:  # the plain argmax too, for reference
        raw = predict_masks(params, predict, data["test"], eval_bs, mesh, 0.0)
        results["test_off0"] = score(data["test"], raw, clean_masks(raw, fs, cleanup), fs, tol)

    overlays = []
    names = _record_names(builder, config.test_split, counts["test"])
    for i in range(min(int(config.num_overlay_records), counts["test"])):
        d = data["test"]
        overlays.append(
            save_overlay(
                workdir_path / f"overlay_{names[i]}.png",
                d["ecg"][i],
                d["wave_mask"][i],
                test_pred[i],
                d["annotated"][i],
                fs,
                tuple(config.overlay_leads),
                f"{builder.info.full_name} test record {names[i]}",
            ).name
        )

    info = {
        "step": int(best["step"]),
        "encoder": dataclasses.asdict(encoder_cfg),
        "decoder": dataclasses.asdict(decoder_cfg),
        "signal": signal,
        "fs": fs,
        "num_samples": num_samples,
        "cleanup": dataclasses.asdict(cleanup),
        "background_offset": chosen,
        "preset": provenance["preset"],
        "pretrained": provenance["pretrained"],
    }
    model_dir = save_model(workdir_path, params, info)
    report = {
        "program": PROGRAM,
        "dataset": builder.info.full_name,
        "records": counts,
        "seed": int(config.seed),
        "provenance": {
            **provenance,
            "freeze_encoder": bool(config.freeze_encoder),
            "encoder_learning_rate_multiplier": float(config.encoder_learning_rate_multiplier),
        },
        "best_step": int(best["step"]),
        "best_validation_macro_f1": float(best["macro_f1"]),
        "validation_history": history,
        "test": results["test"],
        "validation": results["validation"],
        "test_background_offset0": results.get("test_off0"),
        "test_per_record": per_record_scores(data["test"], test_pred, names, fs, tol),
        "background_offset": {
            "chosen": chosen,
            "validation_macro_f1": {f"{v:g}": f for v, f in offset_scores.items()},
        },
        "num_params": {"encoder": n_enc, "decoder": n_dec},
        "train_seconds": train_seconds,
        "wall_seconds": time.perf_counter() - run_start,
        "overlays": overlays,
        "predictor": info,
    }
    (workdir_path / METRICS_FILE).write_text(json.dumps(report, indent=2))
    _say(results_table(results))
    _say(
        f"trained {num_steps} steps in {train_seconds:.0f} s; metrics in "
        f"{workdir_path / METRICS_FILE}, training log in {workdir_path / writers.METRICS_FILE}, "
        f"overlays {', '.join(overlays) or 'none'}, model in {model_dir} (for python -m "
        f"beatssl_jax.delineate --workdir={workdir_path})"
    )
    return report


run = train_and_evaluate
