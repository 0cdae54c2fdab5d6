"""Checkpoints of a training run, with Orbax; the only module that imports orbax.

A run's workdir holds one folder per saved step, written by Orbax's `CheckpointManager`:

    <directory>/<step>/
      state/   the training pytree (Orbax's standard PyTree format): parameters, optimiser
               state, step, RNG keys, anything else the train loop puts in it
      data/    the input iterator's position, one JSON file per JAX process,
               `process_<i>-of-<n>.json`
      extra/   one JSON document (config snapshot, metrics), written by process 0

`Checkpointer` saves every `save_every_steps` steps, keeps the `max_to_keep` newest
checkpoints, and writes in a background thread (`async_save`): `save` returns once the
arrays are copied off the devices, and the files appear, atomically, later. A folder exists
under its step name only once it is complete, so a run killed mid-write resumes from the
previous checkpoint. `restore` reads a checkpoint back into the structure, dtypes and
shardings of a target pytree (concrete arrays or `jax.ShapeDtypeStruct`s), so a resumed run
gets its arrays on the mesh it runs on now.

RNG keys. Typed keys (`jax.random.key`) may sit anywhere in the state: Orbax (>= 0.12.8)
writes their raw uint32 key data and wraps it back into a key of the target's
implementation on restore; raw uint32 keys (`jax.random.PRNGKey`) are ordinary arrays.

Iterator state. Each process reads its own rows of every global batch, so each process
saves its own iterator state: the `data` item writes one file per process (the layout of
grain's own Orbax handler, `grain.checkpoint.CheckpointSave`, whose files it can read).
Orbax's `JsonSave` writes from the primary process only, which would lose the other
processes' positions. A run restored on the same number of processes reads its own file.
On a different number of processes the files can only be reused when they agree, as the
states of `input_pipeline.BatchIterator` do (a global step and the identity of the batch
sequence, the same in every process); otherwise restoring is an error.

Downstream programs read only a part of a pretraining checkpoint, e.g. the encoder's
parameters, with `restore_subtree`, which never writes to the directory. Both restore
paths compare the target with the checkpoint first and raise `CheckpointMismatchError`
naming the directory, the step and every missing, unexpected or differently shaped array.

Preemption. `PreemptionGuard` turns SIGTERM (the notice that Slurm, Kubernetes and TPU VMs
send before stopping a job) into a flag that the train loop reads once a step; the loop
then saves with `force=True`, waits for the write and exits normally.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import threading
from collections.abc import Iterable, Mapping, Sequence
from types import FrameType
from typing import Any, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

STATE = "state"
DATA = "data"
EXTRA = "extra"

_PROCESS_FILE = re.compile(r"process_(\d+)-of-(\d+)\.json")


class CheckpointMismatchError(ValueError):
    """A checkpoint's arrays do not match the target it is restored into (architecture)."""


class Restored(NamedTuple):
    """What `Checkpointer.restore` returns."""

    state: Any  # the training pytree, in the target's structure and shardings
    data_state: bytes | None  # this process's iterator state, None if none was saved
    extra: dict[str, Any] | None  # the JSON document saved beside the state, if any


# ----------------------------------------------------------------------------------------
# The per-process iterator state as an Orbax item.


class _ProcessStateHandler(ocp.CheckpointHandler):
    """Every process writes (and reads) its own JSON file, process_<i>-of-<n>.json."""

    def save(self, directory: epath.Path, args: _ProcessStateSave) -> None:
        name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        (directory / name).write_text(args.state.decode())

    def restore(self, directory: epath.Path, args: _ProcessStateRestore | None = None) -> bytes:
        own = directory / f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        if own.exists():
            return own.read_text().encode()
        files = sorted(p for p in directory.iterdir() if _PROCESS_FILE.fullmatch(p.name))
        if not files:
            raise FileNotFoundError(f"{directory}: no iterator state files")
        texts = {p.read_text() for p in files}
        if len(texts) > 1:
            raise ValueError(
                f"{directory}: the iterator states were saved by "
                f"{_PROCESS_FILE.fullmatch(files[0].name).group(2)} processes and differ "
                f"between them, so they cannot be given to the {jax.process_count()} "
                "processes of this run; resume on the same number of processes"
            )
        return texts.pop().encode()

    def metadata(self, directory: epath.Path) -> None:
        return None

    def finalize(self, directory: epath.Path) -> None:
        pass

    def close(self) -> None:
        pass


@ocp.args.register_with_handler(_ProcessStateHandler, for_save=True)
@dataclasses.dataclass
class _ProcessStateSave(ocp.args.CheckpointArgs):
    state: bytes


@ocp.args.register_with_handler(_ProcessStateHandler, for_restore=True)
@dataclasses.dataclass
class _ProcessStateRestore(ocp.args.CheckpointArgs):
    pass


# ----------------------------------------------------------------------------------------
# Comparing a target with what a checkpoint holds.


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _leaves_by_path(tree: Any) -> dict[str, Any]:
    """{'a/b/0/c': leaf} over a pytree's leaves (empty nodes such as None drop out)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {"/".join(_key_name(k) for k in path): leaf for path, leaf in flat}


def _stored_shape(leaf: Any) -> tuple[int, ...]:
    """The shape a target leaf has on disk: typed PRNG keys are stored as their key data."""
    dtype = getattr(leaf, "dtype", None)
    shape = tuple(leaf.shape) if hasattr(leaf, "shape") else np.shape(leaf)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return tuple(jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(shape, dtype)).shape)
    return shape


def _mismatches(target: Any, stored: Any, *, allow_unexpected: bool = False) -> list[str]:
    """Human-readable differences between a target pytree and a checkpoint's metadata tree."""
    want, have = _leaves_by_path(target), _leaves_by_path(stored)
    problems = [f"{p}: not in the checkpoint" for p in want if p not in have]
    if not allow_unexpected:
        problems += [f"{p}: in the checkpoint but not in the target" for p in have if p not in want]
    for path in want.keys() & have.keys():
        target_shape, stored_shape = _stored_shape(want[path]), tuple(have[path].shape)
        if target_shape != stored_shape:
            problems.append(f"{path}: checkpoint shape {stored_shape}, target {target_shape}")
    return sorted(problems)


def _raise_mismatch(where: str, problems: list[str], limit: int = 20) -> None:
    shown = "\n  ".join(problems[:limit])
    more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
    raise CheckpointMismatchError(
        f"{where} does not match the target (does the config's architecture match the run "
        f"that wrote it?):\n  {shown}{more}"
    )


def _abstract(tree: Any) -> Any:
    """ShapeDtypeStructs (keeping shardings) for array leaves; Python scalars stay as they are."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _path(directory: str | os.PathLike[str]) -> epath.Path:
    text = os.fspath(directory)
    return epath.Path(text if "://" in text else os.path.abspath(text))


# ----------------------------------------------------------------------------------------


class Checkpointer:
    """Periodic, asynchronous checkpoints of a training run in `directory`.

    directory         the run's checkpoint folder (created if absent); local or gs://.
    save_every_steps  `save` writes only at steps that are multiples of it (or when forced).
    max_to_keep       the newest checkpoints kept; older ones are deleted (None: keep all).
    async_save        write in a background thread; `save` returns after the arrays are
                      copied to host memory. Call `wait_until_finished` (or `close`) before
                      the process exits.

    Every process of a multi-process run creates a `Checkpointer` on the same directory and
    calls `save` and `restore` at the same steps: both are collective.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        save_every_steps: int = 1,
        max_to_keep: int | None = None,
        async_save: bool = True,
    ):
        if save_every_steps <= 0:
            raise ValueError(f"save_every_steps must be positive, got {save_every_steps}")
        if max_to_keep is not None and max_to_keep <= 0:
            raise ValueError(f"max_to_keep must be positive or None, got {max_to_keep}")
        self._directory = _path(directory)
        self._save_every_steps = save_every_steps
        self._manager = ocp.CheckpointManager(
            self._directory,
            options=ocp.CheckpointManagerOptions(
                save_interval_steps=save_every_steps,
                max_to_keep=max_to_keep,
                enable_async_checkpointing=async_save,
                cleanup_tmp_directories=True,
            ),
            item_handlers={
                STATE: ocp.StandardCheckpointHandler(),
                DATA: _ProcessStateHandler(),
                EXTRA: ocp.JsonCheckpointHandler(),
            },
        )

    @property
    def directory(self) -> epath.Path:
        return self._directory

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, None when there is none."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """Steps of the complete checkpoints kept, oldest first."""
        return sorted(self._manager.all_steps())

    def save(
        self,
        step: int,
        state: Any,
        data_state: bytes | str | None = None,
        extra: Mapping[str, Any] | None = None,
        *,
        force: bool = False,
    ) -> bool:
        """Save `state` (a pytree) as step `step` if it is a save step; True if it saved.

        data_state  this process's iterator state (`BatchIterator.get_state()`), or None.
        extra       a JSON-serialisable mapping (config snapshot, metrics), or None.
        force       save whatever the step (preemption, end of training).

        The latest step saved is not written again (False): the preemption save may fall on
        the step the periodic save has just written. An earlier step is an error, since
        the checkpoints kept and the one a restart resumes from are the highest steps.
        """
        step = int(step)
        if not force and step % self._save_every_steps:
            return False  # (Orbax alone would also save the first step of a new run)
        latest = self._manager.latest_step()
        if latest is not None and step <= latest:
            if step == latest:
                return False
            raise ValueError(
                f"{self._directory}: cannot save step {step}, before the latest checkpoint "
                f"(step {latest})"
            )
        items: dict[str, ocp.args.CheckpointArgs] = {STATE: ocp.args.StandardSave(state)}
        if data_state is not None:
            if isinstance(data_state, str):
                data_state = data_state.encode()
            json.loads(data_state)  # a clear error now rather than an unreadable checkpoint
            items[DATA] = _ProcessStateSave(data_state)
        if extra is not None:
            items[EXTRA] = ocp.args.JsonSave(json.loads(json.dumps(dict(extra))))
        return self._manager.save(step, args=ocp.args.Composite(**items), force=force)

    def restore(self, target: Any, *, step: int | None = None) -> Restored:
        """The checkpoint at `step` (default: the latest) in the structure of `target`.

        `target` is the pytree `save` was given, with concrete arrays or
        `jax.ShapeDtypeStruct`s (e.g. from `jax.eval_shape`); every array comes back with
        the target leaf's dtype and sharding (a `ShapeDtypeStruct` without a sharding gives
        a numpy array). Raises FileNotFoundError when there is no checkpoint and
        CheckpointMismatchError when the arrays differ in name or shape from the target.
        """
        step = self._step_or_latest(step)
        stored = self._manager.item_metadata(step)[STATE]
        where = f"checkpoint {self._directory / str(step)}"
        problems = _mismatches(target, stored.tree)
        if problems:
            _raise_mismatch(where, problems)
        items: dict[str, ocp.args.CheckpointArgs] = {
            STATE: ocp.args.StandardRestore(_abstract(target))
        }
        folder = self._directory / str(step)
        if (folder / DATA).exists():
            items[DATA] = _ProcessStateRestore()
        if (folder / EXTRA).exists():
            items[EXTRA] = ocp.args.JsonRestore()
        out = self._manager.restore(step, args=ocp.args.Composite(**items))
        return Restored(
            out[STATE], out[DATA] if DATA in items else None, out[EXTRA] if EXTRA in items else None
        )

    def _step_or_latest(self, step: int | None) -> int:
        steps = self._manager.all_steps()
        if step is None:
            if not steps:
                raise FileNotFoundError(f"{self._directory}: no checkpoint to restore")
            return max(steps)
        if step not in steps:
            raise FileNotFoundError(
                f"{self._directory}: no checkpoint at step {step}; it has steps {sorted(steps)}"
            )
        return int(step)

    def wait_until_finished(self) -> None:
        """Block until every started save is on disk (and old checkpoints are deleted)."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release the manager's threads."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def restore_subtree(
    directory: str | os.PathLike[str],
    path: str | Sequence[str],
    target: Any = None,
    *,
    step: int | None = None,
) -> Any:
    """One subtree of a checkpoint's state, e.g. the encoder's parameters; never writes.

    directory  the `Checkpointer` directory of a (pretraining) run.
    path       where the subtree sits in the saved state: "params/encoder" or
               ("params", "encoder"); the names are the pytree's keys and attributes
               (TrainState fields, dict keys, sequence indices).
    target     the subtree's structure, arrays or `jax.ShapeDtypeStruct`s: arrays come back
               with its dtypes and shardings, and a mismatch in names or shapes raises
               CheckpointMismatchError naming each one. None: numpy arrays as stored
               (typed PRNG keys as their uint32 key data).
    step       default: the latest checkpoint.
    """
    keys = [k for k in (path.split("/") if isinstance(path, str) else path) if k != ""]
    if not keys:
        raise ValueError("restore_subtree: give a non-empty path, e.g. 'params/encoder'")
    root = _path(directory)
    manager = ocp.CheckpointManager(
        root,
        options=ocp.CheckpointManagerOptions(read_only=True, create=False),
        item_handlers={STATE: ocp.PyTreeCheckpointHandler()},
    )
    try:
        steps = manager.all_steps()
        if step is None:
            if not steps:
                raise FileNotFoundError(f"{root}: no checkpoint to restore")
            step = max(steps)
        elif step not in steps:
            raise FileNotFoundError(f"{root}: no checkpoint at step {step}; it has {sorted(steps)}")
        where = f"checkpoint {root / str(step)}"
        stored = manager.item_metadata(step)[STATE].tree
        node = stored
        for i, key in enumerate(keys):
            children = _children(node)
            if key not in children:
                missing = "/".join(keys[: i + 1])
                _raise_mismatch(
                    where, [f"{missing}: not in the checkpoint (it has {sorted(children)})"]
                )
            node = children[key]
        if target is None:
            sub = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), node)
            restore_args = jax.tree.map(
                lambda s: ocp.RestoreArgs(restore_type=np.ndarray, dtype=s.dtype), sub
            )
        else:
            problems = _mismatches(target, node)
            if problems:
                prefix = "/".join(keys)
                _raise_mismatch(where, [f"{prefix}/{p}" for p in problems])
            sub = _abstract(target)
            restore_args = ocp.checkpoint_utils.construct_restore_args(sub)
        nested, nested_args = sub, restore_args
        for key in reversed(keys):
            nested, nested_args = {key: nested}, {key: nested_args}
        out = manager.restore(
            step,
            args=ocp.args.Composite(
                **{
                    STATE: ocp.args.PyTreeRestore(
                        nested, restore_args=nested_args, partial_restore=True
                    )
                }
            ),
        )[STATE]
    finally:
        manager.close()
    for key in keys:
        out = out[key]
    return out


def _children(node: Any) -> dict[str, Any]:
    """A metadata node's children by name (dict keys, list indices)."""
    if isinstance(node, Mapping):
        return {str(k): v for k, v in node.items()}
    if isinstance(node, list | tuple):
        return {str(i): v for i, v in enumerate(node)}
    return {}


# ----------------------------------------------------------------------------------------


class PreemptionGuard:
    """A flag raised by SIGTERM (or the given signals), for a clean stop between steps.

    Use as a context manager around the train loop; the previous handlers come back on
    exit. Signal handlers run in the main thread, so enter it there:

        with PreemptionGuard() as guard:
            for step in ...:
                ...
                if guard.should_stop():
                    checkpointer.save(step, state, it.get_state(), force=True)
                    checkpointer.wait_until_finished()
                    break
    """

    def __init__(self, signals: Iterable[int] = (signal.SIGTERM,)):
        self._signals = tuple(signals)
        self._event = threading.Event()
        self._previous: dict[int, Any] = {}
        self.received: int | None = None  # the signal that raised the flag

    def install(self) -> PreemptionGuard:
        for sig in self._signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        self._event.set()

    @property
    def requested(self) -> bool:
        """True once this process has received one of the signals."""
        return self._event.is_set()

    def should_stop(self) -> bool:
        """True when any process of the run has received a signal.

        With several JAX processes this is a collective (an all-gather of one flag), so every
        process calls it at the same steps; they then all stop at the same step and save
        the same checkpoint. With one process it only reads the flag.
        """
        if jax.process_count() == 1:
            return self.requested
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.array(self.requested, dtype=np.int32))
        return bool(np.any(flags))

    def close(self) -> None:
        """Put back the handlers that were installed before."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def __enter__(self) -> PreemptionGuard:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.close()
