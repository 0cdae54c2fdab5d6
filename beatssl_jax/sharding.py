"""The device mesh and the shardings of the data-parallel train step.

One mesh axis, `data`, runs over every device of every process. A batch is split along
its first dimension over that axis (`batch_sharding`); parameters and optimiser state are
replicated (`replicated_sharding`). Each process holds only its own rows of a global batch
(see `beatssl_jax.input_pipeline`); `global_batch` assembles those process-local numpy
arrays into global `jax.Array`s without moving data between processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(
    devices: Sequence[jax.Device] | None = None,
    axis_type: jax.sharding.AxisType = jax.sharding.AxisType.Auto,
) -> Mesh:
    """A 1-D mesh with axis `data` over `devices` (default: all devices of all processes).

    The axis is `Auto` by default (jax 0.12's own default is `Explicit`): the train step is
    written for the global batch, as on one device, and the compiler inserts the
    collectives, e.g. the gathers that put every example of the global batch into every
    device's contrastive negatives. Pass `AxisType.Explicit` for sharding-in-types.
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("make_mesh: no devices given")
    return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(axis_type,), devices=devices)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over the `data` axis, other dimensions whole."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of the mesh (parameters, optimiser state, scalars)."""
    return NamedSharding(mesh, PartitionSpec())


def check_batch_divisible(global_batch_size: int, mesh: Mesh) -> None:
    """Raise unless the global batch splits evenly over the mesh's `data` axis."""
    devices = mesh.shape[DATA_AXIS]
    if global_batch_size % devices:
        raise ValueError(
            f"global batch size {global_batch_size} does not split evenly over the {devices} "
            f"devices of the '{DATA_AXIS}' mesh axis; choose a multiple of {devices}"
        )


def global_batch(local_batch: Any, mesh: Mesh) -> Any:
    """Global `jax.Array`s, sharded by `batch_sharding(mesh)`, from process-local rows.

    `local_batch` is a pytree of numpy arrays of shape (b, ...), this process's b rows of a
    global batch of b x `jax.process_count()` rows; every process passes the same b. The
    rows of process p land on its own devices, at the global positions that `mesh` gives
    them (for `make_mesh`, processes in order: p's rows are [p * b, (p + 1) * b)).
    """
    sharding = batch_sharding(mesh)
    processes = jax.process_count()

    def to_global(x: Any) -> jax.Array:
        x = np.asarray(x)
        if x.ndim == 0:
            raise ValueError(f"global_batch: a batch leaf must have a batch dimension, got {x!r}")
        shape = (x.shape[0] * processes, *x.shape[1:])
        return jax.make_array_from_process_local_data(sharding, x, shape)

    return jax.tree.map(to_global, local_batch)
