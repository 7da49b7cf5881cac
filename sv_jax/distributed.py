"""Several processes as one run: JAX's own multi-controller runtime (TPU VM pods, GPU nodes, or
processes on one CPU machine over loopback), from `config.distributed`.

Every process runs the same program on its own devices; collectives go over ICI / NCCL, and over
gloo on CPU, so that a test can run a real cluster of local processes. Results come back to every
host whole (`to_host`); files are written by process 0 alone, behind a barrier (`on_process_zero`).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from sv_jax.errors import UserError


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
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def to_global(tree: Any, sharding: jax.sharding.Sharding) -> Any:
    """Host arrays (the same on every process) laid out by `sharding`: each process puts only the
    shards its own devices hold (no cross-host equality check, no whole copy per device)."""
    def one(array):
        array = np.asarray(array)
        return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])

    return jax.tree.map(one, tree)
