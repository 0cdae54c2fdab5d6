"""Metric writers: JSON lines from process 0, optionally TensorBoard beside them.

`MetricWriter(workdir)` appends one JSON object per `write(step, metrics)` call to
`workdir/metrics.jsonl` ({"step": ..., name: value, ...}), flushed at once, so a run killed
at any moment leaves whole lines. Only JAX process 0 writes; on the other processes every
method does nothing, so the train loop calls them unconditionally.

A run resumed from a checkpoint appends to the same file; lines of steps after the
checkpoint it resumes from (written before the interruption) are dropped first by
`truncate_after(step)`, so the file holds each step once, as an uninterrupted run would.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

METRICS_FILE = "metrics.jsonl"


def _plain(value: Any) -> Any:
    """A JSON-ready Python scalar from a numpy / jax scalar (non-finite floats as strings)."""
    if value is None:
        return None
    value = np.asarray(value)
    if value.ndim:
        return value.tolist()
    item = value.item()
    if isinstance(item, float) and not math.isfinite(item):
        return str(item)  # JSON has no NaN / inf literals
    return item


def read_metrics(workdir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every record of `workdir/metrics.jsonl`, in file order ([] when absent)."""
    path = Path(workdir) / METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricWriter:
    """JSON-lines metrics (process 0 only), with TensorBoard scalars when `tensorboard`."""

    def __init__(self, workdir: str | os.PathLike[str], *, tensorboard: bool = False):
        self.path = Path(workdir) / METRICS_FILE
        self.active = jax.process_index() == 0
        self._tb = None
        if self.active:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                self._tb = _tensorboard_writer(Path(workdir) / "tensorboard")

    def truncate_after(self, step: int) -> None:
        """Drop the records of steps > `step` (left by a run that did not reach a checkpoint)."""
        if not self.active or not self.path.exists():
            return
        kept = [r for r in read_metrics(self.path.parent) if int(r.get("step", 0)) <= step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        if not self.active:
            return
        record = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for name, value in record.items():
                if name != "step" and isinstance(value, int | float):
                    self._tb.add_scalar(name, value, int(step))
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _tensorboard_writer(logdir: Path) -> Any:
    """A TensorBoard `SummaryWriter` (from tensorboardX or torch), or an error naming both."""
    for module in ("tensorboardX", "torch.utils.tensorboard"):
        try:
            return __import__(module, fromlist=["SummaryWriter"]).SummaryWriter(str(logdir))
        except ImportError:
            continue
    raise ImportError(
        "config.tensorboard=True needs tensorboardX (pip install tensorboardX) or torch; "
        "metrics.jsonl is written either way"
    )


# ---------------------------------------------------------------------------------------------
# PNG plots (matplotlib `Figure` objects rendered straight to files: no pyplot, no display,
# and the backend a user chose for pyplot is left alone).


def save_roc_plot(
    path: str | os.PathLike[str],
    curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]],
    title: str,
) -> Path:
    """ROC curves of several classes in one PNG: `curves` {class: (fpr, tpr, auc)}.

    A class whose curve is undefined (no positive or no negative: NaN rates, as
    `metrics.roc_curve` gives them) is named in the legend without a line. Returns the path.
    """
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(5.0, 5.0), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0.0, 1.0], [0.0, 1.0], color="0.7", linestyle="--", linewidth=1.0)
    for name, (fpr, tpr, auc) in curves.items():
        fpr, tpr = np.asarray(fpr, np.float64), np.asarray(tpr, np.float64)
        if fpr.size == 0 or not (np.all(np.isfinite(fpr)) and np.all(np.isfinite(tpr))):
            ax.plot([], [], label=f"{name} (undefined: one class only)")
            continue
        ax.plot(fpr, tpr, linewidth=1.5, label=f"{name} (AUROC {float(auc):.3f})")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path
