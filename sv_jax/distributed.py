"""Several processes as one run: JAX's own multi-controller runtime (TPU VM pods, GPU nodes, or
processes on one CPU machine over loopback), from `config.distributed`.

Every process runs the same program on its own devices; collectives go over ICI / NCCL, and over
gloo on CPU, so that a test can run a real cluster of local processes. Host work is split too: each
process reads and tokenizes its share of a dataset (`map_shares`), and a row-sharded result comes back
to the process whose devices hold the row (`rows_here`), which grades it; small Python results are then
exchanged (`gather_by_index`). Files are written by process 0 alone, behind a barrier (`on_process_zero`).
Barriers and exchanges of Python values go through the runtime's coordination service (its key-value
store), not through device collectives: no program to compile, no wait for the devices' queue.
"""

from __future__ import annotations

import itertools
import os
import pickle
import sys
from typing import Any, Callable, Sequence, TypeVar

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from sv_jax.errors import UserError

T = TypeVar("T")
R = TypeVar("R")

# How long a process waits for the others at a barrier or an exchange (one may be writing a checkpoint).
WAIT_MS = 60 * 60 * 1000
CHUNK_BYTES = 1 << 20  # an exchanged value goes through the key-value store in pieces of at most this
# Every process passes the same barriers and exchanges in the same order: the n-th one has one name.
_exchanges = itertools.count()


def initialize(config: ml_collections.ConfigDict) -> None:
    """Joins the cluster `config.distributed` describes; on one process (the default) does nothing.

    `num_processes` 0 and an empty `coordinator` / `process_id` -1 let `jax.distributed.initialize`
    find them itself (TPU VM pods, SLURM and the like). Must run before any other JAX call."""
    settings = config.distributed
    if settings.num_processes == 1:
        return
    if settings.num_processes < 0:
        raise UserError(f"config key 'distributed.num_processes' ({settings.num_processes}) must be 1 (one "
                        "process), 0 (detected) or the number of processes")
    if settings.num_processes and not -1 <= settings.process_id < settings.num_processes:
        raise UserError(f"config key 'distributed.process_id' ({settings.process_id}) must be -1 (detected) or "
                        f"below distributed.num_processes ({settings.num_processes})")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # the CPU backend's collectives
    jax.distributed.initialize(
        coordinator_address=settings.coordinator or None,
        num_processes=settings.num_processes or None,
        process_id=None if settings.process_id < 0 else settings.process_id,
    )
    if jax.process_index() != 0:  # process 0 alone prints; every process logs and errs on stderr
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the rest of the process


def to_host(tree: Any) -> Any:
    """A pytree of arrays as NumPy on this host, whole: on several processes a gather of every
    process's shards (an array may span devices this process cannot read)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)


def on_process_zero(write: Callable[[], Any], name: str) -> None:
    """Runs `write` (a file or folder of the run's outputs) on process 0 alone; every process then
    waits at a barrier called `name`, so that none reads the output before it is there."""
    if jax.process_index() == 0:
        write()
    barrier(name)


def barrier(name: str) -> None:
    """Waits until every process has reached the barrier (`name` for the logs); nothing on one process."""
    if jax.process_count() > 1:
        _client().wait_at_barrier(f"sv_jax/{next(_exchanges)}/{name}", WAIT_MS)


def _client():
    """The coordination service's client that `jax.distributed.initialize` connected."""
    from jax._src import distributed as runtime  # the client orbax's barriers use too; no public handle

    return runtime.global_state.client


def to_global(tree: Any, sharding: jax.sharding.Sharding) -> Any:
    """Host arrays (the same on every process) laid out by `sharding`: each process puts only the
    shards its own devices hold (no cross-host equality check, no whole copy per device)."""
    def one(array):
        array = np.asarray(array)
        return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])

    return jax.tree.map(one, tree)


def share(count: int) -> range:
    """This process's contiguous share of `count` items (the first `count % processes` take one more)."""
    index, processes = jax.process_index(), jax.process_count()
    each, extra = divmod(count, processes)
    start = index * each + min(index, extra)
    return range(start, start + each + (index < extra))


def map_shares(fn: Callable[[T], R], items: Sequence[T], what: str) -> list[R]:
    """`fn` of every item, each process computing its own share; every process gets all results, in
    order. A `UserError` in any process's share is raised in every process (none waits for it)."""
    if jax.process_count() == 1:
        return [fn(item) for item in items]
    mine = share(len(items))
    logging.info("process %d of %d: %s %d-%d of %d", jax.process_index(), jax.process_count(), what,
                 mine.start, mine.stop - 1, len(items))
    try:
        local, error = [fn(items[i]) for i in mine], None
    except UserError as raised:
        local, error = [], str(raised)
    parts = _allgather_objects((local, error))
    for _, error in parts:
        if error is not None:
            raise UserError(error)
    return [result for part, _ in parts for result in part]


def first_failure(failure: str | None) -> str | None:
    """The first process's failure (in process order) if any process had one, on every process: so
    that all take the same branch after a step that may fail on some of them."""
    if jax.process_count() == 1:
        return failure
    return next((f for f in _allgather_objects(failure) if f is not None), None)


def gather_by_index(local: dict[int, T], count: int) -> list[T]:
    """Every process's `{index: item}` (together: each index below `count` once) as one list in index
    order, on every process."""
    merged = dict(local)
    if jax.process_count() > 1:
        for part in _allgather_objects(local):
            merged.update(part)
    missing = [i for i in range(count) if i not in merged]
    if missing:
        raise ValueError(f"no process holds index {missing[0]} of {count}")
    return [merged[i] for i in range(count)]


def _allgather_objects(value: Any) -> list[Any]:
    """One picklable value from each process, in process order, on every process.

    Each process puts its pickled value in the key-value store under this exchange's name and reads
    the others'. It then deletes its keys of the exchange before: every process has read them, as
    each set this exchange's keys only after reading all of that one's."""
    client, number = _client(), next(_exchanges)
    data = pickle.dumps(value)
    pieces = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]
    mine = [f"sv_jax/{number}/{jax.process_index()}/{i}" for i in range(len(pieces))]
    for key, piece in zip(mine, pieces):
        client.key_value_set_bytes(key, piece)
    client.key_value_set(f"sv_jax/{number}/{jax.process_index()}/pieces", str(len(pieces)))
    values = []
    for process in range(jax.process_count()):
        name = f"sv_jax/{number}/{process}"
        count = int(client.blocking_key_value_get(f"{name}/pieces", WAIT_MS))
        values.append(pickle.loads(b"".join(client.blocking_key_value_get_bytes(f"{name}/{i}", WAIT_MS)
                                            for i in range(count))))
    for key in _previous_keys:
        client.key_value_delete(key)
    _previous_keys[:] = [*mine, f"sv_jax/{number}/{jax.process_index()}/pieces"]
    return values


_previous_keys: list[str] = []  # this process's keys of its last exchange


def rows_here(tree: Any) -> tuple[np.ndarray, Any]:
    """The rows (axis 0) of a tree of row-sharded arrays that this process answers for, and the tree
    cut to them as NumPy: the rows its devices hold, a row that several processes hold going to the
    lowest. On one process: every row."""
    leaves, treedef = jax.tree.flatten(tree)
    if jax.process_count() == 1:
        return np.arange(leaves[0].shape[0]), jax.device_get(tree)
    blocks = _owned_blocks(leaves[0])
    rows = np.concatenate([np.arange(start, stop) for start, stop in blocks] or [np.zeros(0, np.int64)])
    cut = []
    for leaf in leaves:
        by_block = {_block(shard.index[0], leaf.shape[0]): shard for shard in leaf.addressable_shards}
        parts = [np.asarray(by_block[block].data) for block in blocks]
        cut.append(np.concatenate(parts) if parts else np.zeros((0, *leaf.shape[1:]), leaf.dtype))
    return rows, jax.tree.unflatten(treedef, cut)


def _owned_blocks(array: jax.Array) -> list[tuple[int, int]]:
    """The row blocks [start, stop) of `array` this process answers for, in order."""
    holders: dict[tuple[int, int], int] = {}
    for device, index in array.sharding.devices_indices_map(array.shape).items():
        block = _block(index[0], array.shape[0])
        holders[block] = min(holders.get(block, device.process_index), device.process_index)
    return sorted(block for block, process in holders.items() if process == jax.process_index())


def _block(rows: slice, count: int) -> tuple[int, int]:
    start, stop, _ = rows.indices(count)
    return start, stop
