"""TFDS builders of the project's datasets; importing this package registers them.

`import data_builders` makes `tfds.builder(name, data_dir=...)` and
`tfds.data_source(name, data_dir=...)` find: synthetic_ecg, ludb, ptb_xl, ecg_corpus.
Build one with `python -m data_builders.build NAME [--manual_dir=...] [--data_dir=...]`.
"""

from __future__ import annotations

import importlib
import importlib.util

# Builder packages, each `data_builders/<name>/<name>_dataset_builder.py` with class Builder.
BUILDER_NAMES: tuple[str, ...] = ("synthetic_ecg", "ludb", "ptb_xl", "ecg_corpus")


def _register() -> tuple[str, ...]:
    """Import every builder package present; TFDS registers a builder on import."""
    found = []
    for name in BUILDER_NAMES:
        if importlib.util.find_spec(f"{__name__}.{name}") is not None:
            importlib.import_module(f"{__name__}.{name}")
            found.append(name)
    return tuple(found)


AVAILABLE_BUILDERS: tuple[str, ...] = _register()
