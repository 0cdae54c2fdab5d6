"""Checkpoints: round trips, the save/keep schedule, resuming, shardings, partial restore,
architecture mismatches, SIGTERM, and the per-process iterator state of a two-process run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.training import train_state

from beatssl_jax import checkpointing, input_pipeline
from tests.conftest import (
    PROJECT_ROOT,
    free_port,
    last_json,
    python_env,
    run_jax_processes,
    run_python,
)


class Tiny(nn.Module):
    """An 'encoder' and a 'head', as the pretraining model names its parts."""

    features: int = 3

    @nn.compact
    def __call__(self, x):
        return nn.Dense(2, name="head")(nn.relu(nn.Dense(self.features, name="encoder")(x)))


def make_state(seed: int, features: int = 3, steps: int = 0) -> train_state.TrainState:
    """A TrainState after `steps` AdamW updates on a fixed regression batch."""
    model = Tiny(features)
    x = jnp.linspace(-1.0, 1.0, 20, dtype=jnp.float32).reshape(5, 4)
    params = model.init(jax.random.key(seed), x)["params"]
    state = train_state.TrainState.create(
        apply_fn=model.apply, params=params, tx=optax.adamw(1e-2, weight_decay=1e-3)
    )

    def loss(p):
        return jnp.mean((state.apply_fn({"params": p}, x) - 1.0) ** 2)

    for _ in range(steps):
        state = state.apply_gradients(grads=jax.grad(loss)(state.params))
    return state


def run_state(seed: int, features: int = 3, steps: int = 0) -> dict:
    """What the train loop saves: the TrainState and the run's RNG keys."""
    return {
        "train": make_state(seed, features, steps),
        "rng": jax.random.key(100 + seed),
        "rng_raw": jax.random.PRNGKey(200 + seed),
    }


def assert_trees_equal(a, b) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def records(n: int = 40) -> list[dict]:
    return [{"id": np.int64(i)} for i in range(n)]


def test_round_trip_restores_params_optimizer_step_rng_iterator_and_extra(tmp_path):
    saved = run_state(seed=0, steps=3)
    it = input_pipeline.make_iterator(records(), global_batch_size=4, seed=5)
    for _ in range(3):
        next(it)
    extra = {"config": {"batch_size": 4, "lr": 1e-2}, "metrics": {"loss": 0.25}}
    with checkpointing.Checkpointer(tmp_path / "ckpt", max_to_keep=3) as ckpt:
        assert ckpt.save(3, saved, it.get_state(), extra)
        ckpt.wait_until_finished()
        # Restore into a differently initialised state of the same architecture.
        state, data_state, got_extra = ckpt.restore(run_state(seed=1))

    assert int(state["train"].step) == 3 == int(saved["train"].step)
    assert_trees_equal(state["train"].params, saved["train"].params)
    assert_trees_equal(state["train"].opt_state, saved["train"].opt_state)
    # The optimiser moments are non-trivial, so equality is not that of two fresh states.
    mu = state["train"].opt_state[0].mu["encoder"]["kernel"]
    assert np.abs(np.asarray(mu)).sum() > 0
    # Typed keys come back typed, with the same implementation and key data.
    assert jax.dtypes.issubdtype(state["rng"].dtype, jax.dtypes.prng_key)
    assert jax.random.key_impl(state["rng"]) == jax.random.key_impl(saved["rng"])
    np.testing.assert_array_equal(
        jax.random.key_data(state["rng"]), jax.random.key_data(saved["rng"])
    )
    np.testing.assert_array_equal(
        jax.random.uniform(state["rng"], (3,)), jax.random.uniform(saved["rng"], (3,))
    )
    np.testing.assert_array_equal(state["rng_raw"], saved["rng_raw"])
    assert state["train"].apply_fn is not None and state["train"].tx is not None
    assert got_extra == extra

    # The restored iterator state yields exactly the batches the uninterrupted run reads.
    resumed = input_pipeline.make_iterator(records(), global_batch_size=4, seed=5)
    resumed.set_state(data_state)
    for _ in range(4):
        np.testing.assert_array_equal(next(resumed)["id"], next(it)["id"])


def test_saves_every_n_steps_and_keeps_the_newest_k(tmp_path):
    state = run_state(seed=0)
    with checkpointing.Checkpointer(
        tmp_path, save_every_steps=3, max_to_keep=2, async_save=False
    ) as ckpt:
        saved = [step for step in range(1, 11) if ckpt.save(step, state)]
        assert saved == [3, 6, 9]
        assert ckpt.all_steps() == [6, 9]
        assert ckpt.latest_step() == 9
        # The preemption path: forced off-schedule, and not repeated at the same step.
        assert ckpt.save(10, state, force=True)
        assert not ckpt.save(10, state, force=True)
        assert ckpt.all_steps() == [9, 10]
        with pytest.raises(ValueError, match="before the latest checkpoint"):
            ckpt.save(8, state, force=True)


def test_async_save_then_restart_resumes_from_the_latest(tmp_path):
    big = {"w": jnp.arange(2_000_000, dtype=jnp.float32).reshape(2000, 1000)}
    with checkpointing.Checkpointer(tmp_path, save_every_steps=2, max_to_keep=2) as ckpt:
        assert ckpt.latest_step() is None
        with pytest.raises(FileNotFoundError, match=str(tmp_path)):
            ckpt.restore(big)
        for step in range(1, 6):
            ckpt.save(step, {"w": big["w"] + step}, json.dumps({"step": step}), {"step": step})
        ckpt.wait_until_finished()
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == ["2", "4"]

    # A new process running the same command finds the latest checkpoint.
    with checkpointing.Checkpointer(tmp_path, save_every_steps=2, max_to_keep=2) as ckpt:
        assert ckpt.latest_step() == 4 and ckpt.all_steps() == [2, 4]
        abstract = jax.eval_shape(lambda: big)
        state, data_state, extra = ckpt.restore(abstract)
        np.testing.assert_array_equal(state["w"], np.asarray(big["w"]) + 4)
        assert json.loads(data_state) == {"step": 4} and extra == {"step": 4}
        older = ckpt.restore(abstract, step=2)
        assert older.extra == {"step": 2}
        with pytest.raises(FileNotFoundError, match="no checkpoint at step 3"):
            ckpt.restore(abstract, step=3)


def test_state_without_iterator_or_extra(tmp_path):
    with checkpointing.Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, {"x": jnp.ones(3)})
        ckpt.wait_until_finished()
        restored = ckpt.restore({"x": jnp.zeros(3)})
        np.testing.assert_array_equal(restored.state["x"], np.ones(3))
        assert restored.data_state is None and restored.extra is None
        with pytest.raises(ValueError):
            ckpt.save(2, {"x": jnp.ones(3)}, data_state=b"not json")


def test_architecture_mismatch_names_the_directory_and_the_arrays(tmp_path):
    with checkpointing.Checkpointer(tmp_path) as ckpt:
        ckpt.save(7, run_state(seed=0))
        ckpt.wait_until_finished()
        with pytest.raises(checkpointing.CheckpointMismatchError) as err:
            ckpt.restore(run_state(seed=0, features=5))
    message = str(err.value)
    assert str(tmp_path / "7") in message
    assert "train/params/encoder/kernel: checkpoint shape (4, 3), target (4, 5)" in message
    assert "train/params/head/kernel: checkpoint shape (3, 2), target (5, 2)" in message
    assert "train/opt_state/0/mu/encoder/bias" in message

    # Keys missing from the checkpoint and keys the target lacks are both named.
    with checkpointing.Checkpointer(tmp_path) as ckpt:
        target = run_state(seed=0)
        target["ema"] = {"w": jnp.zeros(2)}
        del target["rng_raw"]
        with pytest.raises(checkpointing.CheckpointMismatchError) as err:
            ckpt.restore(target)
    assert "ema/w: not in the checkpoint" in str(err.value)
    assert "rng_raw: in the checkpoint but not in the target" in str(err.value)


def test_restore_subtree_reads_only_the_encoder(tmp_path):
    saved = run_state(seed=0, steps=2)
    with checkpointing.Checkpointer(tmp_path) as ckpt:
        ckpt.save(2, saved)
        ckpt.save(4, run_state(seed=3, steps=2), force=True)
    before = sorted(p.name for p in tmp_path.rglob("*"))

    encoder = saved["train"].params["encoder"]
    as_stored = checkpointing.restore_subtree(tmp_path, "train/params/encoder", step=2)
    assert set(as_stored) == {"kernel", "bias"}
    assert isinstance(as_stored["kernel"], np.ndarray)
    assert_trees_equal(as_stored, encoder)

    target = make_state(seed=9).params["encoder"]
    into = checkpointing.restore_subtree(tmp_path, ("train", "params", "encoder"), target)
    assert isinstance(into["kernel"], jax.Array)
    assert_trees_equal(into, run_state(seed=3, steps=2)["train"].params["encoder"])  # latest

    with pytest.raises(checkpointing.CheckpointMismatchError) as err:
        checkpointing.restore_subtree(
            tmp_path, "train/params/encoder", make_state(seed=0, features=8).params["encoder"]
        )
    assert str(tmp_path / "4") in str(err.value)
    assert "train/params/encoder/kernel: checkpoint shape (4, 3), target (4, 8)" in str(err.value)
    with pytest.raises(checkpointing.CheckpointMismatchError, match=r"train/params/decoder"):
        checkpointing.restore_subtree(tmp_path, "train/params/decoder")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        checkpointing.restore_subtree(tmp_path / "elsewhere", "train/params/encoder")
    # Read-only: nothing was written or deleted.
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_sigterm_raises_the_flag_and_close_restores_the_handler():
    previous = signal.getsignal(signal.SIGTERM)
    with checkpointing.PreemptionGuard() as guard:
        assert not guard.requested and not guard.should_stop()
        os.kill(os.getpid(), signal.SIGTERM)
        assert guard.requested and guard.should_stop()
        assert guard.received == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is previous


MESH_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from beatssl_jax import checkpointing, sharding

    directory = sys.argv[1]
    mesh = sharding.make_mesh()
    rep, split = sharding.replicated_sharding(mesh), sharding.batch_sharding(mesh)
    keys = jax.random.split(jax.random.key(3), 8)
    state = {
        "params": {"encoder": {"w": jnp.arange(32.0).reshape(8, 4)}, "head": jnp.ones(4)},
        "keys": keys,
        "step": jnp.int32(5),
    }
    # Saved from one device; restored replicated or split over the 4-device mesh.
    with checkpointing.Checkpointer(directory) as ckpt:
        ckpt.save(5, state)
    want = {
        "params": {"encoder": {"w": split}, "head": rep},
        "keys": split,
        "step": rep,
    }
    target = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, want
    )
    with checkpointing.Checkpointer(directory) as ckpt:
        got = ckpt.restore(target).state
    encoder = checkpointing.restore_subtree(
        directory, "params/encoder", target["params"]["encoder"]
    )
    print(json.dumps({
        "devices": mesh.size,
        "shardings_match": [
            g.sharding == s for g, s in zip(jax.tree.leaves(got), jax.tree.leaves(want))
        ],
        "w_shard_rows": [s.data.shape[0] for s in got["params"]["encoder"]["w"].addressable_shards],
        "equal": bool(np.array_equal(got["params"]["encoder"]["w"], state["params"]["encoder"]["w"])
                      and np.array_equal(jax.random.key_data(got["keys"]),
                                         jax.random.key_data(keys))),
        "keys_typed": bool(jax.dtypes.issubdtype(got["keys"].dtype, jax.dtypes.prng_key)),
        "subtree_sharding": encoder["w"].sharding == split,
        "subtree_equal": bool(np.array_equal(encoder["w"], state["params"]["encoder"]["w"])),
    }))
    """
)


def test_restore_into_a_mesh_target_gives_its_shardings(tmp_path):
    out = run_python(
        MESH_SCRIPT, str(tmp_path / "ckpt"), XLA_FLAGS="--xla_force_host_platform_device_count=4"
    )
    assert out["devices"] == 4
    assert all(out["shardings_match"]) and len(out["shardings_match"]) == 4
    assert out["w_shard_rows"] == [2, 2, 2, 2]
    assert out["equal"] and out["keys_typed"]
    assert out["subtree_sharding"] and out["subtree_equal"]


TWO_PROCESS_SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys
    import jax
    import jax.numpy as jnp
    import numpy as np

    process_id, port, directory = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"localhost:{port}", num_processes=2, process_id=process_id
    )
    from beatssl_jax import checkpointing, sharding

    mesh = sharding.make_mesh()
    rows = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    state = {
        "w": jax.device_put(jnp.ones((4, 2)), sharding.replicated_sharding(mesh)),
        "rows": sharding.global_batch(rows[4 * process_id : 4 * process_id + 4], mesh),
    }
    out = {}
    with checkpointing.PreemptionGuard() as guard:
        out["before"] = guard.should_stop()
        if process_id == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        out["after"] = guard.should_stop()  # both processes see process 1's signal
        out["local_flag"] = guard.requested
    with checkpointing.Checkpointer(directory, save_every_steps=3) as ckpt:
        # Each process saves its own iterator state; at step 6 they agree.
        ckpt.save(3, state, json.dumps({"step": 3, "process": process_id}), {"note": "three"})
        ckpt.save(6, state, json.dumps({"step": 6}), {"note": "six"})
        ckpt.wait_until_finished()
        target = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
        )
        restored = ckpt.restore(target, step=3)
    out["data_state"] = json.loads(restored.data_state)
    out["extra"] = restored.extra
    out["rows_local"] = [s.data.tolist() for s in restored.state["rows"].addressable_shards]
    print(json.dumps(out))
    jax.distributed.shutdown()
    """
)


def test_two_processes_keep_their_own_iterator_states(tmp_path):
    """Two JAX processes x two CPU devices save one checkpoint; each reads back its own
    iterator state, and a single process can reuse the states only where they agree."""
    directory = tmp_path / "ckpt"
    env = python_env(XLA_FLAGS="--xla_force_host_platform_device_count=2")
    port = str(free_port())
    outs = run_jax_processes(
        TWO_PROCESS_SCRIPT, [[str(p), port, str(directory)] for p in range(2)], env, 180
    )
    rows = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    for p, out in enumerate(outs):
        assert out["before"] is False and out["after"] is True
        assert out["local_flag"] is (p == 1)
        assert out["data_state"] == {"step": 3, "process": p}
        assert out["extra"] == {"note": "three"}
        assert out["rows_local"] == [
            rows[4 * p + 2 * d : 4 * p + 2 * d + 2].tolist() for d in (0, 1)
        ]
    names = sorted(p.name for p in (directory / "3" / "data").glob("process_*"))
    assert names == ["process_0-of-2.json", "process_1-of-2.json"]

    # This (single) process: the states of step 6 agree and are reused; those of step 3 not.
    target = {"w": jnp.zeros((4, 2)), "rows": jnp.zeros((8, 3))}
    with checkpointing.Checkpointer(directory, save_every_steps=3) as ckpt:
        state, data_state, extra = ckpt.restore(target)
        np.testing.assert_array_equal(state["rows"], rows)
        assert json.loads(data_state) == {"step": 6} and extra == {"note": "six"}
        with pytest.raises(ValueError, match="saved by 2 processes and differ"):
            ckpt.restore(target, step=3)


PREEMPTED_LOOP = textwrap.dedent(
    """
    import json, sys, time
    import jax.numpy as jnp
    from beatssl_jax import checkpointing

    directory = sys.argv[1]
    state = {"w": jnp.zeros(4), "step": 0}
    with checkpointing.Checkpointer(directory, save_every_steps=5, max_to_keep=2) as ckpt:
        with checkpointing.PreemptionGuard() as guard:
            for step in range(1, 100_000):
                state = {"w": state["w"] + 1, "step": step}
                ckpt.save(step, state, json.dumps({"step": step}))
                if step == 3:
                    print("running", flush=True)
                if guard.should_stop():
                    ckpt.save(step, state, json.dumps({"step": step}), force=True)
                    ckpt.wait_until_finished()
                    print(json.dumps({"stopped_at": step}), flush=True)
                    break
                time.sleep(0.01)
    """
)


def test_sigterm_during_a_loop_saves_the_current_step_and_exits_cleanly(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", PREEMPTED_LOOP, str(tmp_path)],
        cwd=PROJECT_ROOT,
        env=python_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "running"
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-3000:]
    stopped = last_json(stdout)["stopped_at"]
    with checkpointing.Checkpointer(tmp_path, save_every_steps=5) as ckpt:
        assert ckpt.latest_step() == stopped
        state, data_state, _ = ckpt.restore({"w": jnp.zeros(4), "step": 0})
    assert state["step"] == stopped
    np.testing.assert_array_equal(state["w"], np.full(4, stopped, np.float32))
    assert json.loads(data_state) == {"step": stopped}
