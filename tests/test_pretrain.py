"""The pretraining program: learning, metrics, resume, data parallelism, failure modes."""

import json
import os
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest

from beatssl_jax import pretrain, writers
from configs import pretrain as pretrain_config
from tests.conftest import PROJECT_ROOT


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    import tensorflow_datasets as tfds

    import data_builders  # noqa: F401

    path = str(tmp_path_factory.mktemp("tfds"))
    tfds.builder("synthetic_ecg", config="tiny", data_dir=path).download_and_prepare()
    return path


def tiny_config(data_dir: str, **overrides):
    config = pretrain_config.get_config("tiny")
    config.data_dir = data_dir
    config.learning_rate = 1e-2
    config.log_every_steps = 1
    config.async_checkpoints = True
    for key, value in overrides.items():
        config[key] = value
    return config


@pytest.fixture(scope="module")
def reference_run(data_dir, tmp_path_factory):
    """30 uninterrupted steps, every step logged, checkpoints every 10 steps."""
    workdir = tmp_path_factory.mktemp("reference")
    summary = pretrain.train_and_evaluate(tiny_config(data_dir), str(workdir))
    return workdir, summary


def test_thirty_steps_lower_the_loss(reference_run):
    workdir, summary = reference_run
    records = writers.read_metrics(workdir)
    assert [r["step"] for r in records] == list(range(1, 31))
    losses = np.array([r["loss"] for r in records])
    assert np.all(np.isfinite(losses))
    first, last = losses[:5].mean(), losses[-5:].mean()
    assert last < first - 0.3, (first, last, losses)
    assert summary["step"] == 30 and not summary["preempted"]


def test_metrics_jsonl_fields(reference_run):
    workdir, _ = reference_run
    records = writers.read_metrics(workdir)
    for field in ("step", "loss", "loss_rhythm", "loss_beat", "learning_rate", "examples_per_sec"):
        assert all(field in r for r in records), field
    # L = L_rhythm + lambda * L_beat with lambda = 1 in the default preset.
    for r in records:
        assert r["loss"] == pytest.approx(r["loss_rhythm"] + r["loss_beat"], rel=1e-5)
    # Warm-up then cosine decay: the peak is reached, then the rate falls.
    lrs = [r["learning_rate"] for r in records]
    assert max(lrs) == pytest.approx(1e-2, rel=1e-3)
    assert lrs[-1] < lrs[5] < lrs[3]
    assert records[0]["examples_per_sec"] is None  # the step that compiled is not timed
    assert all(r["examples_per_sec"] > 0 for r in records[1:])
    config = json.loads((workdir / "config.json").read_text())
    assert config["loss"]["preset"] == "soft1^50+hard"


def test_resume_equals_uninterrupted_and_non_finite_stops(reference_run, data_dir, tmp_path):
    ref_dir, _ = reference_run
    kept = sorted(int(p.name) for p in (ref_dir / "checkpoints").iterdir() if p.name.isdigit())
    assert kept == [10, 20, 30]  # keep_checkpoints = 3

    # Stop at step 15 (a checkpoint is saved there), then rerun the same command.
    first = pretrain.train_and_evaluate(tiny_config(data_dir, stop_at_step=15), str(tmp_path))
    assert first["preempted"] and first["step"] == 15 and first["last_checkpoint_step"] == 15
    second = pretrain.train_and_evaluate(tiny_config(data_dir), str(tmp_path))
    assert second["start_step"] == 15 and second["step"] == 30

    resumed = writers.read_metrics(tmp_path)
    reference = writers.read_metrics(ref_dir)
    assert [r["step"] for r in resumed] == [r["step"] for r in reference]
    for a, b in zip(resumed, reference, strict=True):
        for field in ("loss", "loss_rhythm", "loss_beat", "learning_rate", "grad_norm"):
            assert a[field] == pytest.approx(b[field], rel=1e-6, abs=1e-7), (a["step"], field)

    # Continue with an infinite learning rate: the first update makes the parameters
    # non-finite, and the run stops without saving them (a checkpoint is due every step).
    bad = tiny_config(
        data_dir, learning_rate=float("inf"), num_train_steps=40, checkpoint_every_steps=1
    )
    with pytest.raises(FloatingPointError, match=r"non-finite training at step 31.*step 30"):
        pretrain.train_and_evaluate(bad, str(tmp_path))
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == 30


def test_select_beat_slots_matches_select_beats():
    from beatssl_jax.ecg.targets import select_beats

    for n in range(0, 33):
        slots, real = pretrain.select_beat_slots(jnp.array([n]), 8)
        expected = select_beats(np.zeros(n), 8)
        np.testing.assert_array_equal(np.asarray(slots[0])[np.asarray(real[0])], expected)
        assert int(real.sum()) == min(n, 8)


def test_config_presets_reach_the_loss_and_model():
    config = pretrain_config.get_config("tiny,hard+soft2")
    loss = pretrain.loss_config_from(config)
    assert (loss.rhythm, loss.beat) == ("hard", "soft_2")
    config.loss.tau = 0.2
    assert pretrain.loss_config_from(config).tau == 0.2
    best = pretrain.loss_config_from(pretrain_config.get_config())
    assert (best.rhythm, best.gamma, best.beat) == ("soft_1", 50.0, "hard")
    model = pretrain.model_config_from(pretrain_config.get_config("small"))
    assert model.encoder.widths == (64, 128, 128, 256)
    ptb = pretrain_config.get_config("ptb_xl,tiny")
    assert ptb.dataset == "ptb_xl" and ptb.train_split == "train+validation"
    assert "test" not in ptb.train_split


_SHARDED_STEP = textwrap.dedent(
    """
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import jax, jax.numpy as jnp, numpy as np
    from beatssl_jax import pretrain, sharding
    from beatssl_jax.models import BeatSSLModel
    from configs import pretrain as pretrain_config

    assert jax.device_count() == 4
    config = pretrain_config.get_config("tiny")
    config.num_samples = 1000
    rng = np.random.default_rng(0)
    b, t, cap = 8, 1000, 32
    num_beats = rng.integers(3, 12, b)
    r_peaks = np.full((b, cap), -1, np.int32)
    for i, n in enumerate(num_beats):
        r_peaks[i, :n] = np.sort(rng.choice(np.arange(50, t - 50), n, replace=False))
    beat_class = np.where(r_peaks >= 0, rng.integers(0, 3, (b, cap)), -1).astype(np.int32)
    batch = {
        "ecg": rng.normal(size=(b, t, 12)).astype(np.float32),
        "r_peaks": r_peaks,
        "num_beats": num_beats.astype(np.int32),
        "features": rng.uniform(size=(b, 20)).astype(np.float32),
        "beat_features": rng.uniform(size=(b, cap, 6)).astype(np.float32),
        "beat_features_mask": np.broadcast_to((r_peaks >= 0)[..., None], (b, cap, 6)).copy(),
        "beat_class": beat_class,
    }
    model_cfg = pretrain.model_config_from(config)
    loss_cfg = pretrain.loss_config_from(config)
    model = BeatSSLModel(model_cfg)

    def fresh_state(mesh):
        state = pretrain.create_train_state(config, model, t, 8)
        return jax.device_put(state, sharding.replicated_sharding(mesh))

    def loss_and_grads(mesh):
        state = fresh_state(mesh)
        key = jax.random.fold_in(state.rng, 0)  # the key of the train step's first views
        global_batch = jax.device_put(batch, sharding.batch_sharding(mesh))
        fn = jax.jit(jax.value_and_grad(lambda p, b: pretrain.compute_loss(
            p, model.apply, b, key, model_config=model_cfg, loss_config=loss_cfg,
            augment=pretrain.ThreeKGConfig(), max_beats=8)[0]))
        return jax.device_get(fn(state.params, global_batch)), global_batch

    mesh1, mesh4 = sharding.make_mesh(jax.devices()[:1]), sharding.make_mesh(jax.devices())
    (l1, g1), _ = loss_and_grads(mesh1)
    (l4, g4), global_batch = loss_and_grads(mesh4)
    np.testing.assert_allclose(l4, l1, rtol=2e-5)
    jax.tree.map(lambda a, c: np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-6), g4, g1)
    # The jitted train step on 4 devices (state replicated and donated, batch split): its
    # loss and gradient norm are the 1-device ones.
    state = fresh_state(mesh4)
    step = pretrain.make_train_step(config, model_cfg, loss_cfg, mesh4, state)
    new_state, m4 = step(state, global_batch)
    m4 = jax.device_get(m4)
    np.testing.assert_allclose(m4["loss"], l1, rtol=2e-5)
    gnorm = np.sqrt(sum(float(np.sum(np.square(g))) for g in jax.tree.leaves(g1)))
    np.testing.assert_allclose(m4["grad_norm"], gnorm, rtol=1e-4)
    assert bool(m4["params_finite"]) and int(new_state.step) == 1
    print("OK", float(l1), float(l4))
    """
)


def test_four_devices_equal_one_device_on_the_same_global_batch():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    done = subprocess.run(
        [sys.executable, "-c", _SHARDED_STEP],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "OK" in done.stdout


@pytest.mark.slow
def test_two_processes_equal_one_process(data_dir, tmp_path, reference_run):
    """launch/local_multiprocess.sh: 2 JAX processes (1 CPU device each) reproduce the
    1-process losses of the same config step for step."""
    ref_dir, _ = reference_run
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(PYTHON=sys.executable, PORT=str(20000 + os.getpid() % 20000))
    cmd = [
        "bash", "launch/local_multiprocess.sh", "2", "--config=configs/pretrain.py:tiny",
        f"--workdir={tmp_path}", f"--config.data_dir={data_dir}", "--config.learning_rate=0.01",
        "--config.log_every_steps=1", "--config.num_train_steps=10",
        "--config.checkpoint_every_steps=5",
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                          timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    two = writers.read_metrics(tmp_path)
    one = writers.read_metrics(ref_dir)[:10]
    assert [r["step"] for r in two] == list(range(1, 11))
    # num_train_steps differs from the reference (30), so the schedules agree only during
    # the 3 warm-up steps: the losses of steps 1-5 come from parameters updated with them.
    for a, b in zip(two[:5], one[:5], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5), a["step"]
    data_dir_10 = tmp_path / "checkpoints" / "10" / "data"
    data_files = sorted(p.name for p in data_dir_10.iterdir() if p.name.startswith("process_"))
    assert data_files == ["process_0-of-2.json", "process_1-of-2.json"]


@pytest.mark.slow
def test_kill_9_and_restart_equals_uninterrupted(data_dir, tmp_path, reference_run):
    """SIGKILL mid-run (no chance to save), then the same command: it resumes from the last
    complete checkpoint and the losses equal the uninterrupted run's."""
    import signal
    import time

    ref_dir, _ = reference_run
    cmd = [
        sys.executable, "-m", "beatssl_jax.main", "--config=configs/pretrain.py:tiny",
        f"--workdir={tmp_path}", f"--config.data_dir={data_dir}", "--config.learning_rate=0.01",
        "--config.log_every_steps=1",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    for line in proc.stdout:
        if line.startswith("step 13/") or time.time() > deadline:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "resumed from checkpoint step" in done.stdout
    resumed, reference = writers.read_metrics(tmp_path), writers.read_metrics(ref_dir)
    assert [r["step"] for r in resumed] == list(range(1, 31))
    for a, b in zip(resumed, reference, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6), a["step"]
