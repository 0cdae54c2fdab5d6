"""Shared test helpers: where the real ECG data lives and how tests skip without it."""

from __future__ import annotations

from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Real records for integration tests sit beside the checkout, never inside it.
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


def shared_data(subdir: str) -> Path:
    """Path to ../shared/data/<subdir>, or skip the calling test with the reason."""
    path = SHARED_DATA / subdir
    if not path.is_dir():
        pytest.skip(f"real-data test: {path} is absent (see ../shared/data/README.md)")
    return path


def write_wfdb_record(
    directory: Path,
    name: str,
    signal,
    fs: float,
    names,
    units: str = "mV",
    gain: float = 1000.0,
    comments: list[str] | None = None,
) -> Path:
    """Write (T, n) `signal` as a 16-bit WFDB record `directory/name` (gain per unit,
    baseline 0) with lead names `names`; returns the record path without extension."""
    import numpy as np
    import wfdb

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    n = len(names)
    wfdb.wrsamp(
        name, fs=fs, units=[units] * n, sig_name=list(names),
        p_signal=np.asarray(signal, np.float64), fmt=["16"] * n, adc_gain=[gain] * n,
        baseline=[0] * n, write_dir=str(directory), comments=comments,
    )  # fmt: skip
    return directory / name


def check_pipeline_batch(name: str, data_dir: str, split: str, batch_size: int = 8) -> dict:
    """Read one batch of a built dataset through `tfds.data_source` and the grain pipeline.

    Checks what the train step relies on: static shapes, features scaled into [0, 1], R-peak
    padding consistent with `num_beats`, and no NaN left in any float field.
    """
    import numpy as np

    from beatssl_jax import input_pipeline

    source, metadata = input_pipeline.load_source(
        name, split, data_dir, fields=input_pipeline.DEFAULT_FIELDS
    )
    transform = input_pipeline.PrepareExample.from_metadata(metadata)
    iterator = input_pipeline.make_iterator(
        source, global_batch_size=batch_size, seed=0, num_epochs=1, transform=transform
    )
    batch = next(iter(iterator))
    iterator.close()
    assert batch["ecg"].shape[0] == batch_size and batch["ecg"].shape[2] == 12
    assert batch["ecg"].dtype == np.float32
    assert np.all((batch["features"] >= 0) & (batch["features"] <= 1))
    real = batch["r_peaks"] >= 0
    np.testing.assert_array_equal(real.sum(axis=1), batch["num_beats"])
    for key, value in batch.items():
        if np.issubdtype(value.dtype, np.floating):
            assert np.all(np.isfinite(value)), key
    return batch


def python_env(**extra: str) -> dict[str, str]:
    """The environment for a Python subprocess that imports the project from this checkout."""
    import os

    return {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **extra}


def last_json(stdout: str) -> dict:
    """The JSON object a subprocess printed on its last line."""
    import json

    return json.loads(stdout.strip().splitlines()[-1])


def free_port() -> int:
    """A free TCP port on localhost, for a JAX coordinator."""
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_jax_processes(
    script: str, args_per_process: list[list[str]], env: dict[str, str], timeout: float
) -> list[dict]:
    """Run `python -c script ARGS...` once per argument list, side by side; each must exit 0.

    Returns the JSON object each process printed last, in process order.
    """
    import subprocess
    import sys

    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, *args],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in args_per_process
    ]
    outs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, stderr[-3000:]
        outs.append(last_json(stdout))
    return outs


def run_python(script: str, *args: str, timeout: float = 120, **env: str) -> dict:
    """Run `python -c script ARGS...` from the project root with extra environment `env`;
    it must exit 0. Returns the JSON object it printed last."""
    return run_jax_processes(script, [list(args)], python_env(**env), timeout)[0]
