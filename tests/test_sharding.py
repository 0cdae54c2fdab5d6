"""Mesh and shardings: one process with fake CPU devices, and two JAX processes."""

from __future__ import annotations

import textwrap

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from beatssl_jax import sharding
from tests.conftest import (
    free_port,
    python_env,
    run_jax_processes,
    run_python,
)


def test_mesh_and_shardings_in_this_process():
    mesh = sharding.make_mesh()
    assert mesh.axis_names == ("data",) and mesh.size == jax.device_count()
    assert mesh.axis_types == (jax.sharding.AxisType.Auto,)
    assert sharding.batch_sharding(mesh).spec == PartitionSpec("data")
    assert sharding.replicated_sharding(mesh).spec == PartitionSpec()
    x = {"ecg": np.arange(24, dtype=np.float32).reshape(2, 12), "n": np.array([3, 4])}
    out = sharding.global_batch(x, mesh)
    np.testing.assert_array_equal(np.asarray(out["ecg"]), x["ecg"])
    assert out["n"].sharding == sharding.batch_sharding(mesh)
    with pytest.raises(ValueError, match="batch dimension"):
        sharding.global_batch({"scalar": np.float32(1.0)}, mesh)


def test_global_batch_on_four_fake_devices():
    script = textwrap.dedent(
        """
        import json
        import jax
        import numpy as np
        from beatssl_jax import sharding

        mesh = sharding.make_mesh()
        x = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
        g = sharding.global_batch({"x": x}, mesh)["x"]
        step = jax.jit(
            lambda a: (a * 2).sum(axis=0),
            in_shardings=sharding.batch_sharding(mesh),
            out_shardings=sharding.replicated_sharding(mesh),
        )
        out = {
            "devices": mesh.size,
            "shards": [s.data.tolist() for s in g.addressable_shards],
            "sum": np.asarray(step(g)).tolist(),
            "expected": (x * 2).sum(axis=0).tolist(),
        }
        try:
            sharding.check_batch_divisible(6, mesh)
        except ValueError as e:
            out["error"] = str(e)
        print(json.dumps(out))
        """
    )
    out = run_python(script, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    assert out["devices"] == 4
    x = np.arange(8 * 3).reshape(8, 3)
    assert out["shards"] == [x[2 * d : 2 * d + 2].tolist() for d in range(4)]
    assert out["sum"] == out["expected"]
    assert "does not split evenly over the 4 devices" in out["error"]


TWO_PROCESS_SCRIPT = textwrap.dedent(
    """
    import json
    import sys
    import jax
    import numpy as np

    process_id, port = int(sys.argv[1]), sys.argv[2]
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"localhost:{port}", num_processes=2, process_id=process_id
    )
    from jax.experimental import multihost_utils
    from beatssl_jax import input_pipeline as ip
    from beatssl_jax import sharding

    recs = [{"id": np.int64(i)} for i in range(40)]
    mesh = sharding.make_mesh()
    it = ip.make_iterator(recs, global_batch_size=8, seed=3, num_epochs=1, mesh=mesh)
    batches = []
    for batch in it:
        total = jax.jit(lambda x: x.sum(), out_shardings=sharding.replicated_sharding(mesh))(
            batch["id"]
        )
        full = multihost_utils.process_allgather(batch["id"], tiled=True)
        batches.append({"ids": np.asarray(full).tolist(), "sum": int(total)})
    print(json.dumps({
        "process_count": jax.process_count(),
        "devices": jax.device_count(),
        "local_rows": [s.data.tolist() for s in batch["id"].addressable_shards],
        "batches": batches,
    }))
    jax.distributed.shutdown()
    """
)


def test_two_jax_processes_build_the_single_process_global_batches():
    """Two processes x two CPU devices (`jax.distributed`): every global batch equals the one
    a single process reads, each process holding its own half."""
    from beatssl_jax import input_pipeline as ip

    port = str(free_port())
    env = python_env(XLA_FLAGS="--xla_force_host_platform_device_count=2")
    outs = run_jax_processes(TWO_PROCESS_SCRIPT, [[str(p), port] for p in range(2)], env, 120)
    recs = [{"id": np.int64(i)} for i in range(40)]
    single = [
        b["id"].tolist() for b in ip.make_iterator(recs, global_batch_size=8, seed=3, num_epochs=1)
    ]
    for p, out in enumerate(outs):
        assert out["process_count"] == 2 and out["devices"] == 4
        assert [b["ids"] for b in out["batches"]] == single
        assert [b["sum"] for b in out["batches"]] == [sum(ids) for ids in single]
        last = single[-1][4 * p : 4 * p + 4]  # process p's rows of the last batch
        assert out["local_rows"] == [last[:2], last[2:]]
