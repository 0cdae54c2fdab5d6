"""The main entry point and the pretraining config, run in-process and as a command."""

import json
import subprocess
import sys

import pytest

from configs import pretrain as pretrain_config
from tests.conftest import PROJECT_ROOT


def test_config_arguments():
    base = pretrain_config.get_config()
    tiny = pretrain_config.get_config("tiny")
    assert base.dataset == "synthetic_ecg" and base.program == "pretrain"
    assert tiny.synthetic.num_records < base.synthetic.num_records
    assert tiny.batch_size <= tiny.synthetic.num_records
    for field in ("num_train_steps", "batch_size", "seed", "log_every_steps",
                  "checkpoint_every_steps", "data_dir", "manual_dir"):  # fmt: skip
        assert field in base
    with pytest.raises(ValueError, match="unknown argument"):
        pretrain_config.get_config("tiny,huge")
    with pytest.raises(ValueError, match="at most one"):
        pretrain_config.get_config("ptb_xl,ecg_corpus")
    combined = pretrain_config.get_config("ecg_corpus,tiny,soft2+soft2")
    assert combined.dataset == "ecg_corpus" and combined.batch_size == tiny.batch_size
    assert combined.loss.preset == "soft2+soft2"


def test_main_command_builds_the_data_and_pretrains(tmp_path):
    workdir, data_dir = tmp_path / "run", tmp_path / "tfds"
    cmd = [
        sys.executable, "-m", "beatssl_jax.main", "--config=configs/pretrain.py:tiny,hard+hard",
        f"--workdir={workdir}", f"--config.data_dir={data_dir}", "--config.num_train_steps=4",
        "--config.log_every_steps=2", "--config.checkpoint_every_steps=2",
        "--config.augment.mask_fraction=0.5",
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "is not built" in done.stdout  # the dataset was built on demand
    assert "finished at step 4/4" in done.stdout
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    config = json.loads((workdir / "config.json").read_text())
    assert config["augment"]["mask_fraction"] == 0.5  # the override reached the run
    assert config["loss"]["preset"] == "hard+hard"
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [
        "2",
        "4",
    ]
