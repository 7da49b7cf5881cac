"""Several processes as one run: JAX's own multi-controller runtime (TPU VM pods, GPU nodes, or
processes on one CPU machine over loopback), from `config.distributed`.

Every process runs the same program on its own devices; collectives go over ICI / NCCL, and over
gloo on CPU, so that a test can run a real cluster of local processes.
"""

from __future__ import annotations

import os
import sys

import jax
import ml_collections

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
