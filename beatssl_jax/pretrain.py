"""Beat-SSL pretraining: `python -m beatssl_jax.main --config=configs/pretrain.py[:args]`.

The loop reads top to bottom (METHOD.md sections 1, 3, 5):

    mesh over every device of every process ('data' axis)
      -> dataset (built on demand) -> grain iterator of global batches (G = batch_size)
      -> TrainState (params, AdamW state, step) + RNG key, restored from the latest
         checkpoint of `workdir/checkpoints` when there is one
      -> one jitted train step, state donated, explicit shardings:
           two 3KG views of every record, made on device (one key per example, from the
           state's key folded with the step)
           -> BeatSSLModel on the 2B views -> z_r (2B, D), z_b (2B, K, D)
           -> L_rhythm + lambda * L_beat over the GLOBAL batch: the loss functions take
              the full (sharded) arrays and the compiler inserts the gathers, so the loss
              on any number of devices is the one-device loss on the same global batch
           -> AdamW update (linear warm-up, cosine decay)
      -> metrics.jsonl and a progress line every `log_every_steps`
      -> a checkpoint every `checkpoint_every_steps` (async; params, optimiser state,
         step, RNG key, iterator position)

Beats. The dataset stores up to `beat_capacity` (32) R peaks per record; the step keeps
`max_beats_per_record` (K) of them spread evenly over the record (`select_beat_slots`, the
on-device form of `ecg.targets.select_beats`). A beat leaves the beat loss in a view whose
3KG time mask hides more than 1 - `beat_window.min_visible_fraction` of its window
(`models.beat_validity`).

Stopping. SIGTERM (preemption), or reaching `config.stop_at_step` (a time-boxed job), saves
a checkpoint and returns normally; the same command resumes from it. A non-finite loss, or
non-finite parameters after an update, stops the run with FloatingPointError before
anything non-finite is saved: the newest checkpoint is the last good state. Finiteness is
checked at every logged step and before every save.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax.training import train_state

from beatssl_jax import checkpointing, input_pipeline, sharding, writers
from beatssl_jax.ecg.augment import ThreeKGConfig, three_kg_views
from beatssl_jax.losses import LossConfig, loss_preset, total_loss
from beatssl_jax.models import (
    BeatSSLModel,
    BeatWindowConfig,
    ModelConfig,
    beat_validity,
    encoder_preset,
)

CHECKPOINT_DIR = "checkpoints"
# Fields of a batch the train step reads (besides the mask input_pipeline adds).
TRAIN_FIELDS = input_pipeline.DEFAULT_FIELDS


def _say(message: str) -> None:
    """Log on every process; print on process 0 (the progress a user watches)."""
    logging.info(message)
    if jax.process_index() == 0:
        print(message, flush=True)


# ---------------------------------------------------------------------------------------------
# Configuration -> objects.


def model_config_from(config: ml_collections.ConfigDict) -> ModelConfig:
    """The `ModelConfig` of `config.model` (encoder preset, dtype, projectors) and
    `config.beat_window`, at the data's sampling rate `config.fs`."""
    m = config.model
    encoder = dataclasses.replace(encoder_preset(m.preset), dtype=m.dtype)
    window = BeatWindowConfig(
        fs=float(config.fs),
        window_ms=tuple(config.beat_window.window_ms),
        pooling=config.beat_window.pooling,
        min_visible_fraction=float(config.beat_window.min_visible_fraction),
    )
    return ModelConfig(
        encoder=encoder,
        projection_dim=int(m.projection_dim),
        projector_hidden_dim=int(m.projector_hidden_dim),
        projector_layers=int(m.projector_layers),
        beat_window=window,
    )


def loss_config_from(config: ml_collections.ConfigDict) -> LossConfig:
    """The ablation preset `config.loss.preset` with every non-None field of `config.loss`
    overriding it."""
    overrides = {k: v for k, v in config.loss.items() if k != "preset" and v is not None}
    if "ignore_beat_classes" in overrides:
        overrides["ignore_beat_classes"] = tuple(overrides["ignore_beat_classes"])
    return loss_preset(config.loss.preset, **overrides)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """AdamW and its schedule (hashable, so equal settings share one optimiser object and
    the jitted step compiled for it)."""

    learning_rate: float
    warmup_steps: int
    num_train_steps: int
    final_lr_fraction: float
    weight_decay: float
    b1: float
    b2: float
    eps: float
    grad_clip_norm: float

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> OptimizerConfig:
        return cls(
            learning_rate=float(config.learning_rate),
            warmup_steps=int(config.warmup_steps),
            num_train_steps=int(config.num_train_steps),
            final_lr_fraction=float(config.final_lr_fraction),
            weight_decay=float(config.weight_decay),
            b1=float(config.adam_b1),
            b2=float(config.adam_b2),
            eps=float(config.adam_eps),
            grad_clip_norm=float(config.grad_clip_norm or 0.0),
        )


def learning_rate_schedule(opt: OptimizerConfig) -> optax.Schedule:
    """Linear warm-up from 0 to `learning_rate` over `warmup_steps`, then cosine decay to
    `learning_rate * final_lr_fraction` at `num_train_steps`."""
    warmup = min(opt.warmup_steps, max(opt.num_train_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=opt.learning_rate,
        warmup_steps=warmup,
        decay_steps=max(opt.num_train_steps, warmup + 1),
        end_value=opt.learning_rate * opt.final_lr_fraction,
    )


def _decay_mask(params: Any) -> Any:
    """Weight decay on kernels only (ndim > 1), not on biases and norm scales."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


@functools.lru_cache(maxsize=16)
def make_optimizer(opt: OptimizerConfig) -> optax.GradientTransformation:
    """AdamW with the warm-up + cosine schedule, after optional global-norm clipping."""
    adamw = optax.adamw(
        learning_rate_schedule(opt),
        b1=opt.b1,
        b2=opt.b2,
        eps=opt.eps,
        weight_decay=opt.weight_decay,
        mask=_decay_mask,
    )
    if opt.grad_clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm), adamw)
    return adamw


# ---------------------------------------------------------------------------------------------
# Train state and step.


class TrainState(train_state.TrainState):
    """Flax `TrainState` (step, params, opt_state) plus the run's PRNG key."""

    rng: jax.Array


def init_train_state(
    model_config: ModelConfig,
    num_samples: int,
    num_beats: int,
    opt: OptimizerConfig,
    seed: int | jax.Array,
) -> TrainState:
    """Fresh parameters, optimiser state and run key from `seed` (traceable)."""
    init_key, run_key = jax.random.split(jax.random.key(seed))
    model = BeatSSLModel(model_config)
    x = jnp.zeros((1, num_samples, 12), jnp.float32)
    r = jnp.full((1, num_beats), -1, jnp.int32)
    params = model.init(init_key, x, r)["params"]
    return TrainState.create(
        apply_fn=model.apply, params=params, tx=make_optimizer(opt), rng=run_key
    )


def create_train_state(
    config: ml_collections.ConfigDict, model: BeatSSLModel, num_samples: int, num_beats: int
) -> TrainState:
    """`init_train_state` with the config's optimiser and seed (eagerly, on one device)."""
    opt = OptimizerConfig.from_config(config)
    return init_train_state(model.config, num_samples, num_beats, opt, int(config.seed))


def select_beat_slots(num_beats: jnp.ndarray, k: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Slots (B, k) of at most k beats spread evenly over each record, and which are real.

    The on-device form of `ecg.targets.select_beats`: a record with n <= k beats keeps
    slots 0..n-1; with n > k, slot round(j * (n - 1) / (k - 1)) for j = 0..k-1 (distinct,
    since the spacing exceeds 1).
    """
    n = num_beats.astype(jnp.int32)[:, None]  # (B, 1)
    j = jnp.arange(k, dtype=jnp.int32)[None, :]  # (1, k)
    spread = jnp.round(j * (n - 1) / max(k - 1, 1)).astype(jnp.int32)
    slots = jnp.where(n > k, spread, j)
    return jnp.where(j < n, slots, 0), j < jnp.minimum(n, k)


def _take_beats(x: jnp.ndarray, slots: jnp.ndarray, real: jnp.ndarray, fill: Any) -> jnp.ndarray:
    """Rows `slots` (B, k) of per-beat x (B, C, ...), `fill` where not `real`."""
    idx = slots.reshape(slots.shape + (1,) * (x.ndim - 2))
    taken = jnp.take_along_axis(x, idx, axis=1)
    mask = real.reshape(real.shape + (1,) * (x.ndim - 2))
    return jnp.where(mask, taken, jnp.asarray(fill, x.dtype))


def beat_batch(batch: Mapping[str, jnp.ndarray], k: int) -> dict[str, jnp.ndarray]:
    """The K-beat view of a batch: r_peaks (B, K) (-1 padded), beat_class (B, K),
    beat_features and beat_features_mask (B, K, Fb)."""
    slots, real = select_beat_slots(batch["num_beats"], k)
    out = {
        "r_peaks": _take_beats(batch["r_peaks"], slots, real, -1),
        "beat_class": _take_beats(batch["beat_class"], slots, real, -1),
    }
    if input_pipeline.BEAT_FEATURES in batch:
        out["beat_features"] = _take_beats(batch["beat_features"], slots, real, 0.0)
        out["beat_features_mask"] = _take_beats(batch["beat_features_mask"], slots, real, False)
    return out


def compute_loss(
    params: Any,
    apply_fn: Any,
    batch: Mapping[str, jnp.ndarray],
    key: jax.Array,
    *,
    model_config: ModelConfig,
    loss_config: LossConfig,
    augment: ThreeKGConfig,
    max_beats: int,
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """Beat-SSL loss of one global batch: two 3KG views, the model, L_rhythm + lambda L_beat.

    `key` makes the views: view a of example b uses key split(split(key)[0], B)[b], view b
    likewise from split(key)[1] (`three_kg_views`), so the views depend on the global
    batch and the key only, never on how the batch is sharded.
    """
    x = batch["ecg"]  # (B, T, 12)
    n = x.shape[0]
    key_a, key_b = jax.random.split(key)
    view_a, mask_a = three_kg_views(key_a, x, augment)
    view_b, mask_b = three_kg_views(key_b, x, augment)
    views = jnp.concatenate([view_a, view_b], axis=0)  # (2B, T, 12): view i and i + B pair
    masks = jnp.concatenate([mask_a, mask_b], axis=0)
    beats = beat_batch(batch, max_beats)
    r_peaks = jnp.concatenate([beats["r_peaks"], beats["r_peaks"]], axis=0)  # (2B, K)
    out = apply_fn({"params": params}, views, r_peaks)
    valid = beat_validity(r_peaks, masks, model_config.beat_window) & out["has_window"]
    loss, parts = total_loss(
        loss_config,
        out["z_rhythm"],
        out["z_beat"],
        valid,
        features=batch.get(input_pipeline.FEATURES),
        beat_class=beats["beat_class"],
        beat_features=beats.get("beat_features"),
        beat_features_mask=beats.get("beat_features_mask"),
    )
    real = r_peaks >= 0
    metrics = {
        "loss": loss,
        "loss_rhythm": parts["rhythm_loss"],
        "loss_beat": parts["beat_loss"],
        "beat_anchors": parts["beat_anchors"],
        "beats_real": jnp.sum(real),
        "beats_valid_fraction": jnp.sum(valid) / jnp.maximum(jnp.sum(real), 1),
        "views_per_step": jnp.asarray(2 * n),
    }
    return loss, metrics


def train_step(
    state: TrainState,
    batch: Mapping[str, jnp.ndarray],
    *,
    model_config: ModelConfig,
    loss_config: LossConfig,
    augment: ThreeKGConfig,
    max_beats: int,
    schedule: optax.Schedule,
) -> tuple[TrainState, dict[str, jnp.ndarray]]:
    """One AdamW update on a global batch; returns the new state and scalar metrics.

    The views' key is `fold_in(state.rng, state.step)`: a resumed run makes the same views
    as an uninterrupted one.
    """
    key = jax.random.fold_in(state.rng, state.step)
    grad_fn = jax.value_and_grad(compute_loss, has_aux=True)
    (_, metrics), grads = grad_fn(
        state.params,
        state.apply_fn,
        batch,
        key,
        model_config=model_config,
        loss_config=loss_config,
        augment=augment,
        max_beats=max_beats,
    )
    new_state = state.apply_gradients(grads=grads)
    finite = jax.tree.reduce(
        jnp.logical_and, jax.tree.map(lambda p: jnp.all(jnp.isfinite(p)), new_state.params)
    )
    metrics = {
        **metrics,
        "grad_norm": optax.tree.norm(grads),
        "param_norm": optax.tree.norm(new_state.params),
        "params_finite": finite,
        "learning_rate": schedule(state.step),
    }
    return new_state, metrics


def make_train_step(
    config: ml_collections.ConfigDict,
    model_config: ModelConfig,
    loss_config: LossConfig,
    mesh: jax.sharding.Mesh,
    state: TrainState,
) -> Any:
    """`train_step` jitted with the state donated, state and metrics replicated, the batch
    split over the mesh's 'data' axis. Runs in one process with equal settings share one
    jitted function, hence one compilation."""
    del state  # the state's structure follows from the settings
    return _jitted_train_step(
        model_config,
        loss_config,
        ThreeKGConfig.from_config(config.augment),
        int(config.max_beats_per_record),
        OptimizerConfig.from_config(config),
        mesh,
    )


@functools.lru_cache(maxsize=8)
def _jitted_train_step(
    model_config: ModelConfig,
    loss_config: LossConfig,
    augment: ThreeKGConfig,
    max_beats: int,
    opt: OptimizerConfig,
    mesh: jax.sharding.Mesh,
) -> Any:
    replicated = sharding.replicated_sharding(mesh)
    step = functools.partial(
        train_step,
        model_config=model_config,
        loss_config=loss_config,
        augment=augment,
        max_beats=max_beats,
        schedule=learning_rate_schedule(opt),
    )
    return jax.jit(
        step,
        in_shardings=(replicated, sharding.batch_sharding(mesh)),
        out_shardings=(replicated, replicated),
        donate_argnums=(0,),
    )


@functools.lru_cache(maxsize=8)
def _jitted_init(
    model_config: ModelConfig, num_samples: int, num_beats: int, opt: OptimizerConfig, mesh: Any
) -> Any:
    init = functools.partial(init_train_state, model_config, num_samples, num_beats, opt)
    return jax.jit(init, out_shardings=sharding.replicated_sharding(mesh))


# ---------------------------------------------------------------------------------------------
# Data.


def _tfds_builder(config: ml_collections.ConfigDict) -> Any:
    """The TFDS builder of `config.dataset` / `config.dataset_config` in `config.data_dir`.

    For synthetic_ecg a config name the builder does not define (e.g. "n512") is made from
    `config.synthetic`: `num_records` train records, a tenth of that (at least 8) for
    validation and test, the generator's knobs from `config.synthetic.generator`.
    """
    import tensorflow_datasets as tfds

    import data_builders  # noqa: F401  (registers the builders)

    data_dir = config.data_dir or None
    kwargs: dict[str, Any] = {"data_dir": data_dir}
    if config.num_build_workers:
        kwargs["num_workers"] = int(config.num_build_workers)
    name = config.dataset
    cfg_name = config.dataset_config or None
    if name == "synthetic_ecg" and cfg_name is not None:
        from beatssl_jax.ecg.synthetic import SyntheticConfig
        from data_builders.synthetic_ecg.synthetic_ecg_dataset_builder import (
            Builder,
            SyntheticEcgConfig,
        )

        if cfg_name not in {c.name for c in Builder.BUILDER_CONFIGS}:
            n = int(config.synthetic.num_records)
            held_out = max(8, n // 10)
            custom = SyntheticEcgConfig(
                name=cfg_name,
                description=f"{n} train records, {held_out} validation and test (pretrain config)",
                num_train=n,
                num_validation=held_out,
                num_test=held_out,
                generator=SyntheticConfig(**config.synthetic.generator.to_dict()),
            )
            return tfds.builder(name, config=custom, **kwargs)
    return tfds.builder(name, config=cfg_name, **kwargs)


def prepare_dataset(config: ml_collections.ConfigDict) -> Any:
    """The dataset's builder, built first when `config.data_dir` does not hold it yet.

    Datasets read from source files (ludb, ptb_xl, ecg_corpus) take them from
    `config.manual_dir`. In a multi-process run process 0 builds while the others wait.
    """
    import tensorflow_datasets as tfds

    builder = _tfds_builder(config)
    if _is_built(builder):
        return builder
    if jax.process_index() == 0:
        source = f" from the source files in {config.manual_dir}" if config.manual_dir else ""
        _say(
            f"dataset {builder.info.full_name} is not built in {builder.data_dir}: building "
            f"it now{source} (datasets read from files need --config.manual_dir=...)"
        )
        start = time.perf_counter()
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=config.manual_dir or None)
        )
        _say(f"built {builder.info.full_name} in {time.perf_counter() - start:.1f} s")
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("beatssl_dataset_built")
    return _tfds_builder(config)  # re-read the info written by the build


def _is_built(builder: Any) -> bool:
    return Path(builder.data_dir, "dataset_info.json").exists()


def make_train_iterator(
    config: ml_collections.ConfigDict, builder: Any, mesh: jax.sharding.Mesh
) -> tuple[input_pipeline.BatchIterator, int]:
    """The global-batch iterator over `config.train_split` and the number of records."""
    import tensorflow_datasets as tfds

    info = builder.info
    missing = sorted(set(TRAIN_FIELDS) - set(info.features))
    if missing:
        raise KeyError(f"{info.full_name}: no feature(s) {missing}; it has {sorted(info.features)}")
    decoders = {k: tfds.decode.SkipDecoding() for k in info.features if k not in TRAIN_FIELDS}
    source = builder.as_data_source(split=config.train_split, decoders=decoders or None)
    transform = input_pipeline.PrepareExample.from_metadata(info.metadata or {}, TRAIN_FIELDS)
    iterator = input_pipeline.make_iterator(
        source,
        global_batch_size=int(config.batch_size),
        seed=int(config.seed),
        transform=transform,
        mesh=mesh,
        num_workers=int(config.input.num_workers),
        read_threads=int(config.input.read_threads),
        prefetch_batches=int(config.input.prefetch_batches),
    )
    return iterator, len(source)


def _check_shapes(config: ml_collections.ConfigDict, builder: Any) -> tuple[int, int]:
    """(T, beat capacity) of the dataset's records; T must be config.num_samples."""
    shape = builder.info.features["ecg"].shape
    capacity = builder.info.features["r_peaks"].shape[0]
    if shape[0] != config.num_samples or shape[1] != 12:
        raise ValueError(
            f"{builder.info.full_name}: records are {tuple(shape)}, but the config expects "
            f"({config.num_samples}, 12); set --config.num_samples and --config.fs to the "
            "dataset's"
        )
    if config.max_beats_per_record > capacity:
        raise ValueError(
            f"max_beats_per_record {config.max_beats_per_record} exceeds the dataset's beat "
            f"capacity {capacity}"
        )
    return int(shape[0]), int(capacity)


# ---------------------------------------------------------------------------------------------
# The loop.


def _format_seconds(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _is_finite_step(metrics: Mapping[str, Any]) -> bool:
    return bool(np.isfinite(float(metrics["loss"])) and bool(metrics["params_finite"]))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Pretrain to `config.num_train_steps`, resuming from `workdir/checkpoints` if present.

    Returns a summary: the step reached, whether the run was preempted, the last logged
    metrics and the timing.
    """
    workdir_path = Path(workdir)
    workdir_path.mkdir(parents=True, exist_ok=True)
    mesh = sharding.make_mesh()
    sharding.check_batch_divisible(int(config.batch_size), mesh)
    _say(
        f"mesh: {mesh.shape[sharding.DATA_AXIS]} device(s) ({jax.devices()[0].platform}) over "
        f"{jax.process_count()} process(es); global batch {config.batch_size}"
    )
    if jax.process_index() == 0:
        (workdir_path / "config.json").write_text(config.to_json_best_effort(indent=2))

    builder = prepare_dataset(config)
    num_samples, _ = _check_shapes(config, builder)
    iterator, num_records = make_train_iterator(config, builder, mesh)
    _say(
        f"data: {builder.info.full_name} split '{config.train_split}', {num_records} records, "
        f"{iterator.steps_per_epoch} steps per epoch"
    )

    model_cfg = model_config_from(config)
    loss_cfg = loss_config_from(config)
    k = int(config.max_beats_per_record)
    init = _jitted_init(model_cfg, num_samples, k, OptimizerConfig.from_config(config), mesh)
    state = init(jnp.asarray(int(config.seed), jnp.uint32))
    num_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(state.params))
    _say(
        f"model: encoder '{config.model.preset}', {num_params:,} parameters; loss "
        f"'{config.loss.preset}' (rhythm {loss_cfg.rhythm}, beat {loss_cfg.beat})"
    )

    ckpt = checkpointing.Checkpointer(
        workdir_path / CHECKPOINT_DIR,
        save_every_steps=int(config.checkpoint_every_steps),
        max_to_keep=int(config.keep_checkpoints),
        async_save=bool(config.async_checkpoints),
    )
    writer = writers.MetricWriter(workdir_path, tensorboard=bool(config.tensorboard))
    if ckpt.latest_step() is not None:
        restored = ckpt.restore(state)
        state = restored.state
        if restored.data_state is not None:
            iterator.set_state(restored.data_state)
        _say(f"resumed from checkpoint step {int(state.step)} in {ckpt.directory}")
    start_step = int(state.step)
    writer.truncate_after(start_step)

    p_train_step = make_train_step(config, model_cfg, loss_cfg, mesh, state)
    extra = {"config": json.loads(config.to_json_best_effort())}
    num_steps = int(config.num_train_steps)
    log_every = max(int(config.log_every_steps), 1)
    examples_per_step = int(config.batch_size)
    summary: dict[str, Any] = {"start_step": start_step, "preempted": False, "last_metrics": None}
    last_good_step = ckpt.latest_step()
    step = start_step
    run_start = time.perf_counter()
    window_start, window_step = run_start, start_step
    compile_seconds = None

    with checkpointing.PreemptionGuard() as guard:
        try:
            while step < num_steps:
                batch = next(iterator)
                t0 = time.perf_counter()
                state, metrics = p_train_step(state, batch)
                step += 1
                if compile_seconds is None:
                    jax.block_until_ready(metrics)
                    compile_seconds = time.perf_counter() - t0
                    _say(f"first step (compilation included) took {compile_seconds:.1f} s")
                    window_start, window_step = time.perf_counter(), step
                is_save = step % int(config.checkpoint_every_steps) == 0 or step == num_steps
                if step % log_every == 0 or is_save or step == num_steps:
                    host = jax.device_get(metrics)
                    if not _is_finite_step(host):
                        raise FloatingPointError(
                            f"non-finite training at step {step}: loss {float(host['loss'])}, "
                            f"parameters finite: {bool(host['params_finite'])}. Nothing was "
                            f"saved for this step; the newest checkpoint (step "
                            f"{ckpt.latest_step()}) in {ckpt.directory} is the last good state. "
                            "Lower --config.learning_rate or check the data."
                        )
                    if step % log_every == 0 or step == num_steps:
                        now = time.perf_counter()
                        done = max(step - window_step, 0)
                        rate = done * examples_per_step / max(now - window_start, 1e-9)
                        record = {
                            k: host[k]
                            for k in (
                                "loss",
                                "loss_rhythm",
                                "loss_beat",
                                "learning_rate",
                                "grad_norm",
                                "param_norm",
                                "beat_anchors",
                                "beats_valid_fraction",
                            )
                        }
                        # null on the step that compiled: no step was timed on its own yet
                        record["examples_per_sec"] = rate if done else None
                        record["epoch"] = step / iterator.steps_per_epoch
                        writer.write(step, record)
                        steps_per_sec = done / max(now - window_start, 1e-9)
                        eta = (num_steps - step) / steps_per_sec if done else float("nan")
                        _say(
                            f"step {step}/{num_steps} loss {float(host['loss']):.4f} "
                            f"(rhythm {float(host['loss_rhythm']):.4f}, beat "
                            f"{float(host['loss_beat']):.4f}) lr "
                            f"{float(host['learning_rate']):.2e} "
                            f"{rate:.1f} ex/s ETA "
                            f"{_format_seconds(eta) if math.isfinite(eta) else '?'}"
                        )
                        summary["last_metrics"] = {"step": step, **record}
                        window_start, window_step = now, step
                    if is_save:
                        extra["step"] = step
                        if ckpt.save(
                            step, state, iterator.get_state(), extra, force=step == num_steps
                        ):
                            last_good_step = step
                stop_early = bool(config.stop_at_step) and step >= int(config.stop_at_step)
                if guard.should_stop() or stop_early:
                    why = "config.stop_at_step" if stop_early else "termination signal"
                    _say(f"{why} at step {step}: saving a checkpoint and stopping")
                    host = jax.device_get(metrics)
                    if _is_finite_step(host):
                        ckpt.save(step, state, iterator.get_state(), extra, force=True)
                        last_good_step = step
                    summary["preempted"] = True
                    break
        finally:
            ckpt.close()
            iterator.close()
            writer.close()

    elapsed = time.perf_counter() - run_start
    summary.update(
        {
            "step": step,
            "last_checkpoint_step": last_good_step,
            "compile_seconds": compile_seconds,
            "wall_seconds": elapsed,
            "num_params": num_params,
        }
    )
    _say(
        f"{'stopped' if summary['preempted'] else 'finished'} at step {step}/{num_steps} in "
        f"{_format_seconds(elapsed)}; checkpoints in {ckpt.directory}, metrics in "
        f"{writer.path}"
    )
    return summary


run = train_and_evaluate
