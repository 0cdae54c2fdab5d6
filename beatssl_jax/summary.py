"""Print the headline results of finished linear-probe and segmentation runs.

    python -m beatssl_jax.summary WORKDIR [WORKDIR ...]
    python -m beatssl_jax.summary --over_seeds WORKDIR WORKDIR [WORKDIR ...]

Each WORKDIR is a `linear_probe` or `segment` run; its `metrics.json` is read (nothing is
recomputed) and one block per run is printed: the probe's test macro AUROC and F1 with
their bootstrap intervals per label fraction, the segmentation's held-out sample-wise and
boundary F1, and the paths of the plots.

`--over_seeds` takes runs of one program on one dataset that differ only in their seed and
prints the mean and sample standard deviation (n - 1) of each headline test figure.
"""

from __future__ import annotations

import json
import math
import statistics
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


def _read(workdir: str) -> dict[str, Any]:
    path = Path(workdir) / "metrics.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{workdir}: no metrics.json (is it a finished probe or segment run?)"
        )
    return json.loads(path.read_text())


def headline(metrics: dict[str, Any]) -> dict[str, float]:
    """The headline test figures of one run, by name."""
    program = metrics.get("program")
    if program == "segment":
        test = metrics["test"]["cleaned"]
        sample = test["samplewise"]
        out = {"sample-wise F1 macro": sample["macro_f1"]}
        out.update({f"sample-wise F1 {w}": sample[w]["f1"] for w in ("P", "QRS", "T")})
        out["Dice macro"] = sample["macro_dice"]
        out[f"boundary F1 macro ({test['tolerance_ms']:g} ms)"] = test["boundaries"]["macro_f1"]
    elif program == "linear_probe":
        out = {}
        for name, result in metrics["fractions"].items():
            out[f"{name} macro AUROC"] = result["test"]["macro_auroc"]
            out[f"{name} macro F1"] = result["test"]["macro_f1"]
    else:
        raise ValueError(f"program {program!r} is neither linear_probe nor segment")
    return {k: float(v) for k, v in out.items()}


def seed_spread(workdirs: list[str]) -> str:
    """Mean +- sample SD over runs that differ only in their seed."""
    if len(workdirs) < 2:
        raise ValueError("--over_seeds needs at least two workdirs")
    runs = [_read(w) for w in workdirs]

    def field(m: dict[str, Any], key: str) -> Any:  # top level, else the provenance
        return m[key] if key in m else m.get("provenance", {}).get(key)

    kinds = {(m.get("program"), field(m, "dataset"), field(m, "pretrained")) for m in runs}
    if len(kinds) != 1:
        raise ValueError(
            "--over_seeds: the runs mix programs, datasets or encoders: "
            + "; ".join(f"{p} on {d} from {e}" for p, d, e in sorted(kinds, key=str))
        )
    seeds = [field(m, "seed") for m in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--over_seeds: repeated seeds {seeds} in {workdirs}")
    figures = [headline(m) for m in runs]
    program, dataset, encoder = kinds.pop()
    lines = [
        f"{program} on {dataset}, encoder {encoder}, seeds {seeds}: mean +- SD (n - 1) [per seed]"
    ]
    for name in figures[0]:
        values = [f[name] for f in figures]
        if any(math.isnan(v) for v in values):
            mean = sd = math.nan
        else:
            mean, sd = statistics.fmean(values), statistics.stdev(values)
        each = ", ".join(f"{v:.4f}" for v in values)
        lines.append(f"  {name:<32} {mean:.4f} +- {sd:.4f}  [{each}]")
    return "\n".join(lines)


def summarize(workdirs: list[str]) -> str:
    out = []
    for w in workdirs:
        metrics = _read(w)
        path = Path(w) / "metrics.json"
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
    try:
        text = seed_spread(argv[1:]) if argv[0] == "--over_seeds" else summarize(argv)
    except (FileNotFoundError, ValueError, KeyError) as err:
        print(f"summary: {err}", file=sys.stderr)
        return 1
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
