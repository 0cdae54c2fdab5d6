"""Print the headline results of finished linear-probe and segmentation runs.

    python -m beatssl_jax.summary WORKDIR [WORKDIR ...]

Each WORKDIR is a `linear_probe` or `segment` run; its `metrics.json` is read (nothing is
recomputed) and one block per run is printed: the probe's test macro AUROC and F1 with
their bootstrap intervals per label fraction, the segmentation's held-out sample-wise and
boundary F1, and the paths of the plots.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _interval(block: dict[str, Any], key: str) -> str:
    ci = block.get(key) or {}
    low, high = ci.get("low"), ci.get("high")
    if low is None or high is None:
        return ""
    return f" [{float(low):.3f}, {float(high):.3f}]"


def _count(metrics: dict[str, Any], split: str) -> Any:
    value = metrics.get("records", {}).get(split)
    return value.get("records") if isinstance(value, dict) else value


def probe_lines(workdir: Path, metrics: dict[str, Any]) -> list[str]:
    prov = metrics.get("provenance", {})
    lines = [
        f"linear probe {workdir} (encoder: {prov.get('pretrained')}, step {prov.get('step')}; "
        f"dataset {prov.get('dataset')}; test records {_count(metrics, 'test')})"
    ]
    for name, result in metrics["fractions"].items():
        test, ci = result["test"], result.get("test_intervals", {})
        lines.append(
            f"  {name:>5} labels ({result['train_records']} records): macro AUROC "
            f"{float(test['macro_auroc']):.3f}{_interval(ci, 'macro_auroc')}, macro F1 "
            f"{float(test['macro_f1']):.3f}{_interval(ci, 'macro_f1')}  "
            f"plot {workdir / result['roc_plot']}"
        )
    return lines


def segment_lines(workdir: Path, metrics: dict[str, Any]) -> list[str]:
    prov = metrics.get("provenance", {})
    test = metrics["test"]["cleaned"]
    sample, bounds = test["samplewise"], test["boundaries"]
    waves = ", ".join(f"{w} {float(sample[w]['f1']):.3f}" for w in ("P", "QRS", "T"))
    lines = [
        f"segmentation {workdir} (encoder: {prov.get('pretrained')}; dataset "
        f"{metrics.get('dataset')}; test records {_count(metrics, 'test')})",
        f"  sample-wise F1 macro {float(sample['macro_f1']):.3f} ({waves}); Dice macro "
        f"{float(sample['macro_dice']):.3f}",
        f"  boundary F1 within {test['tolerance_ms']:g} ms macro {float(bounds['macro_f1']):.3f}",
        "  overlays " + ", ".join(str(workdir / p) for p in metrics.get("overlays", [])),
    ]
    return lines


def summarize(workdirs: list[str]) -> str:
    out = []
    for w in workdirs:
        path = Path(w) / "metrics.json"
        if not path.exists():
            raise FileNotFoundError(
                f"{w}: no metrics.json (is it a finished probe or segment run?)"
            )
        metrics = json.loads(path.read_text())
        program = metrics.get("program")
        if program == "linear_probe":
            out += probe_lines(Path(w), metrics)
        elif program == "segment":
            out += segment_lines(Path(w), metrics)
        else:
            raise ValueError(f"{path}: program {program!r} is neither linear_probe nor segment")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    print(summarize(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
