"""The run summary and the spread over seeds, from hand-written metrics.json files."""

import json
import math

import pytest

from beatssl_jax import summary


def _segment_run(path, seed, macro, pretrained="none", dataset="ludb/default/1.0.0"):
    path.mkdir(parents=True)
    sample = {"macro_f1": macro, "macro_dice": macro - 0.01}
    sample.update({w: {"f1": macro} for w in ("P", "QRS", "T")})
    metrics = {
        "program": "segment",
        "dataset": dataset,
        "seed": seed,
        "records": {"test": 3},
        "provenance": {"pretrained": pretrained},
        "test": {
            "cleaned": {
                "samplewise": sample,
                "boundaries": {"macro_f1": 0.98},
                "tolerance_ms": 150.0,
            }
        },
        "overlays": ["overlay_1.png"],
    }
    (path / "metrics.json").write_text(json.dumps(metrics))
    return str(path)


def _figure(text, name):
    line = next(x for x in text.splitlines() if x.strip().startswith(name))
    mean, _, sd = line[len(name) + 2 :].split()[:3]
    return float(mean), float(sd)


def test_seed_spread_hand_computed(tmp_path):
    runs = [_segment_run(tmp_path / f"s{i}", i, v) for i, v in enumerate((0.88, 0.90, 0.92))]
    text = summary.seed_spread(runs)
    assert "seeds [0, 1, 2]" in text
    mean, sd = _figure(text, "sample-wise F1 macro")
    # mean 0.90; deviations -0.02, 0, 0.02 -> variance 0.0008 / 2 -> SD 0.02
    assert mean == pytest.approx(0.90, abs=1e-4) and sd == pytest.approx(0.02, abs=1e-4)
    mean, sd = _figure(text, "boundary F1 macro (150 ms)")
    assert mean == pytest.approx(0.98) and sd == 0.0
    assert "[0.8800, 0.9000, 0.9200]" in text


def test_seed_spread_refuses_mixed_or_repeated_runs(tmp_path):
    a = _segment_run(tmp_path / "a", 0, 0.9)
    with pytest.raises(ValueError, match="encoders"):
        summary.seed_spread([a, _segment_run(tmp_path / "b", 1, 0.9, pretrained="/p")])
    with pytest.raises(ValueError, match="repeated seeds"):
        summary.seed_spread([a, _segment_run(tmp_path / "c", 0, 0.9)])
    with pytest.raises(ValueError, match="at least two"):
        summary.seed_spread([a])


def test_nan_figures_stay_nan(tmp_path):
    runs = [_segment_run(tmp_path / "a", 0, 0.9), _segment_run(tmp_path / "b", 1, math.nan)]
    mean, sd = _figure(summary.seed_spread(runs), "sample-wise F1 macro")
    assert math.isnan(mean) and math.isnan(sd)


def test_main_reports_problems_without_a_traceback(tmp_path, capsys):
    assert summary.main(["--over_seeds", str(tmp_path / "missing"), str(tmp_path)]) == 1
    assert "no metrics.json" in capsys.readouterr().err
    assert summary.main([_segment_run(tmp_path / "ok", 0, 0.9)]) == 0
    assert "sample-wise F1 macro 0.900" in capsys.readouterr().out
