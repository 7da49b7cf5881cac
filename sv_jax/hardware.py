"""Named targets for `config.hardware`: how many devices a slice or node has and how much memory
each, what the memory plan (`sv_jax.plan`) budgets against and what `auto` settings resolve to.

Memory is what the runtime reports a device can allocate (`bytes_limit`), not the marketing
figure: an H100's 80 GB is 79.6 GiB, of which XLA takes 75 % by default on GPUs (the runbook sets
`XLA_PYTHON_CLIENT_MEM_FRACTION=0.95`). TPU slice names count chips (v5e, v6e) or TensorCores
(v5p: two per chip, one device), as Cloud TPU names them.
"""

from __future__ import annotations

import dataclasses

from sv_jax.errors import UserError

GIB = 1 << 30


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    devices: int
    hosts: int
    memory_gib: float  # per device
    # What `remat: auto` resolves to: `dots` keeps the matmul outputs where memory is plentiful,
    # `full` keeps only each layer's input where it is not.
    remat: str
    # Devices on the mesh's `model` axis (the rest is `fsdp`): where FSDP alone would leave a
    # device less than a row of the paper's batch.
    model_parallel: int = 1

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * GIB)


TARGETS = {t.name: t for t in (
    Target("v5e-8", devices=8, hosts=1, memory_gib=15.75, remat="full"),
    Target("v5e-64", devices=64, hosts=16, memory_gib=15.75, remat="full", model_parallel=2),
    Target("v6e-8", devices=8, hosts=1, memory_gib=31.25, remat="full"),
    Target("v5p-8", devices=4, hosts=1, memory_gib=95.74, remat="dots"),
    Target("v5p-32", devices=16, hosts=4, memory_gib=95.74, remat="dots"),
    Target("1xh100", devices=1, hosts=1, memory_gib=79.6 * 0.95, remat="full"),
    Target("8xh100", devices=8, hosts=1, memory_gib=79.6 * 0.95, remat="full"),
    Target("1xh200", devices=1, hosts=1, memory_gib=139.8 * 0.95, remat="dots"),
    Target("8xh200", devices=8, hosts=1, memory_gib=139.8 * 0.95, remat="dots"),
)}


def target(name: str) -> Target:
    """The target `config.hardware` names."""
    if name not in TARGETS:
        raise UserError(f"config key 'hardware': unknown target {name!r}; known: {', '.join(TARGETS)}")
    return TARGETS[name]
