"""Speed of the jitted Beat-SSL train step: examples/s, compile time, no recompilation.

    python bench/bench_train_step.py [--presets=tiny,small] [--batch_sizes=8,32] [--steps=5]

For every (encoder preset, global batch size) it compiles the train step of
`configs/pretrain.py` (default loss, 10 s at 500 Hz, K = 8 beats) on all local devices,
runs it on random records with random R peaks, and prints the compile time, the median
step time and examples/s. It also checks that the steps after the first did not compile
again (the jitted function's cache gains no entry after the first step). Numbers are
printed, never asserted.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np

from beatssl_jax import pretrain, sharding
from beatssl_jax.models import BeatSSLModel
from configs import pretrain as pretrain_config


def random_batch(batch_size: int, num_samples: int, capacity: int, seed: int = 0) -> dict:
    """Records of Gaussian noise with 8-14 R peaks each, and targets of the right shapes."""
    rng = np.random.default_rng(seed)
    r_peaks = np.full((batch_size, capacity), -1, np.int32)
    num_beats = rng.integers(8, 15, batch_size).astype(np.int32)
    for i, n in enumerate(num_beats):
        r_peaks[i, :n] = np.sort(rng.choice(np.arange(100, num_samples - 200), n, replace=False))
    return {
        "ecg": rng.normal(size=(batch_size, num_samples, 12)).astype(np.float32),
        "r_peaks": r_peaks,
        "num_beats": num_beats,
        "features": rng.uniform(size=(batch_size, 20)).astype(np.float32),
        "beat_features": rng.uniform(size=(batch_size, capacity, 6)).astype(np.float32),
        "beat_features_mask": np.broadcast_to(
            (r_peaks >= 0)[..., None], (batch_size, capacity, 6)
        ).copy(),
        "beat_class": np.where(r_peaks >= 0, 0, -1).astype(np.int32),
    }


def bench(preset: str, batch_size: int, steps: int) -> dict:
    config = pretrain_config.get_config()
    config.model.preset = preset
    config.batch_size = batch_size
    mesh = sharding.make_mesh()
    model_cfg = pretrain.model_config_from(config)
    loss_cfg = pretrain.loss_config_from(config)
    state = pretrain.create_train_state(
        config, BeatSSLModel(model_cfg), config.num_samples, config.max_beats_per_record
    )
    state = jax.device_put(state, sharding.replicated_sharding(mesh))
    step = pretrain.make_train_step(config, model_cfg, loss_cfg, mesh, state)
    batch = jax.device_put(
        random_batch(batch_size, config.num_samples, 32), sharding.batch_sharding(mesh)
    )
    cached_before = step._cache_size()  # one jitted function serves equal settings
    start = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    cached_after_first = step._cache_size()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {
        "preset": preset,
        "batch": batch_size,
        "compile_s": compile_s,
        "step_ms": median * 1e3,
        "examples_per_s": batch_size / median,
        "compilations": cached_after_first - cached_before,
        "recompilations": step._cache_size() - cached_after_first,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", default="tiny,small")
    parser.add_argument("--batch_sizes", default="8,32")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    devices = jax.devices()
    print(f"{len(devices)} {devices[0].platform} device(s)")
    print(f"{'preset':<8}{'batch':>6}{'compile s':>11}{'step ms':>10}{'ex/s':>9}{'recompiles':>12}")
    for preset in args.presets.split(","):
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            r = bench(preset, batch_size, args.steps)
            print(
                f"{r['preset']:<8}{r['batch']:>6}{r['compile_s']:>11.1f}{r['step_ms']:>10.1f}"
                f"{r['examples_per_s']:>9.1f}{r['recompilations']:>12}"
            )
            if r["recompilations"]:
                print(f"  WARNING: {r['recompilations']} compilations after the first step")


if __name__ == "__main__":
    main()
