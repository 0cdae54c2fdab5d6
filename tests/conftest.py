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
