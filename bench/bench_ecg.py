"""Throughput of the signal core: 3KG views on device and R-peak detection on the host.

    python bench/bench_ecg.py [--batch 256] [--samples 5000] [--repeats 10] [--records 50]

Prints medians (and min / max) over repeats. The 3KG figure is for the jitted, vmapped
view of a (batch, samples, 12) float32 array, compile time excluded and reported apart.
R-peak detection runs on synthetic 10 s records and, when ../shared/data/ludb is present,
on real LUDB records.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from beatssl_jax.ecg.augment import ThreeKGConfig, three_kg_views
from beatssl_jax.ecg.peaks import detect_r_peaks
from beatssl_jax.ecg.synthetic import generate_record

LUDB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ludb"


def _summary(label: str, values: list[float], unit: str) -> None:
    print(
        f"{label}: median {statistics.median(values):.1f} {unit} "
        f"(min {min(values):.1f}, max {max(values):.1f}, n={len(values)})"
    )


def bench_views(batch: int, samples: int, repeats: int) -> None:
    config = ThreeKGConfig()
    views = jax.jit(three_kg_views, static_argnums=2)
    x = jax.random.normal(jax.random.key(0), (batch, samples, 12), jnp.float32)
    start = time.perf_counter()
    jax.block_until_ready(views(jax.random.key(1), x, config))
    compile_s = time.perf_counter() - start
    rates, times = [], []
    for r in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(views(jax.random.key(2 + r), x, config))
        elapsed = time.perf_counter() - start
        times.append(elapsed * 1e3)
        rates.append(batch / elapsed)
    print(f"3KG views, batch {batch} x {samples} x 12 float32 on {jax.devices()[0].platform}")
    print(f"  first call (compile + run): {compile_s:.2f} s; cache size {views._cache_size()}")
    _summary("  time per batch", times, "ms")
    _summary("  throughput", rates, "views/s")


def bench_peaks(records: list[tuple[np.ndarray, float]], label: str, repeats: int) -> None:
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for ecg, fs in records:
            detect_r_peaks(ecg, fs)
        rates.append(len(records) / (time.perf_counter() - start))
    _summary(f"R-peak detection, {label} ({len(records)} records)", rates, "records/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--records", type=int, default=50)
    parser.add_argument("--peak_repeats", type=int, default=3)
    args = parser.parse_args()

    bench_views(args.batch, args.samples, args.repeats)

    synthetic = []
    for seed in range(args.records):
        rec = generate_record(seed)
        synthetic.append((rec.ecg, rec.fs))
    bench_peaks(synthetic, "synthetic 10 s @ 500 Hz", args.peak_repeats)
    if LUDB.is_dir():
        from beatssl_jax.ecg.records import read_wfdb

        names = (LUDB / "RECORDS").read_text().split()[: args.records]
        real = [(r.signal, r.fs) for r in (read_wfdb(LUDB / n) for n in names)]
        bench_peaks(real, "LUDB 10 s @ 500 Hz", args.peak_repeats)
    else:
        print(f"LUDB not found at {LUDB}: real-record timing skipped")


if __name__ == "__main__":
    main()
