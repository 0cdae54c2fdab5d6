"""Entry point: `python -m beatssl_jax.main --config=configs/<program>.py[:args] --workdir=W`.

The program run is `config.program`; every program exposes `run(config, workdir)`.
"""

from __future__ import annotations

import importlib

from absl import app, flags, logging
from ml_collections import config_flags

PROGRAMS = {"pretrain": "beatssl_jax.pretrain"}

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/pretrain.py")
_WORKDIR = flags.DEFINE_string("workdir", "workdir", "Directory for logs and outputs.")
flags.mark_flags_as_required(["config"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    if config.program not in PROGRAMS:
        raise app.UsageError(f"config.program={config.program!r} is not one of {sorted(PROGRAMS)}")
    logging.info("program %s, workdir %s", config.program, _WORKDIR.value)
    importlib.import_module(PROGRAMS[config.program]).run(config, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
