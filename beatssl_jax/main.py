"""Entry point: `python -m beatssl_jax.main --config=configs/<program>.py[:args] --workdir=W`.

The program run is `config.program`; every program exposes `run(config, workdir)`.

Several processes (one per host, or several on one machine) form one JAX run when
`jax.distributed.initialize` is called before anything touches the devices. That happens
when the environment names the coordinator (JAX_COORDINATOR_ADDRESS, with JAX_NUM_PROCESSES
and JAX_PROCESS_ID, as `launch/local_multiprocess.sh` sets them), or with `--multiprocess`,
which lets JAX detect the cluster itself (Cloud TPU pods, Slurm).
"""

from __future__ import annotations

import importlib
import os

import jax
from absl import app, flags, logging
from ml_collections import config_flags

PROGRAMS = {
    "pretrain": "beatssl_jax.pretrain",
    "linear_probe": "beatssl_jax.linear_probe",
    "segment": "beatssl_jax.segment",
}

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/pretrain.py")
_WORKDIR = flags.DEFINE_string("workdir", "workdir", "Directory for logs and outputs.")
_MULTIPROCESS = flags.DEFINE_bool(
    "multiprocess", False, "Call jax.distributed.initialize() with cluster auto-detection."
)
flags.mark_flags_as_required(["config"])


def initialize_distributed(auto_detect: bool = False) -> None:
    """Join a multi-process JAX run when the environment or `auto_detect` asks for one."""
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if address:
        if jax.config.jax_platforms == "cpu" or os.environ.get("JAX_PLATFORMS") == "cpu":
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=address,
            num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["JAX_PROCESS_ID"]),
        )
    elif auto_detect:
        jax.distributed.initialize()
    else:
        return
    logging.info("process %d of %d", jax.process_index(), jax.process_count())


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    if config.program not in PROGRAMS:
        raise app.UsageError(f"config.program={config.program!r} is not one of {sorted(PROGRAMS)}")
    initialize_distributed(_MULTIPROCESS.value)
    logging.info("program %s, workdir %s", config.program, _WORKDIR.value)
    importlib.import_module(PROGRAMS[config.program]).run(config, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
