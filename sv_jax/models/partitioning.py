"""Logical axis names → mesh axes: one table for parameters and activations alike (MaxText's way).

Parameters and activations name their axes (`embed`, `heads`, `activation_rows`, ...); `RULES`
maps each name onto mesh axes. Rows (batch rows of activations, logits and KV caches) split over
`data` and `fsdp`; parameters shard their `embed` axis over `fsdp` (FSDP) and heads, MLP width and
vocabulary over `model` (tensor parallelism), and so do the activations that carry those axes, so
that FSDP gathers weights, never the global batch.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

RULES: dict[str, tuple[str, ...]] = {
    # parameters
    "embed": ("fsdp",),
    "vocab": ("model",),
    "heads": ("model",),
    "kv_heads": ("model",),
    "mlp": ("model",),
    # activations and caches
    "activation_rows": ("data", "fsdp"),
    "activation_heads": ("model",),
    "activation_kv_heads": ("model",),
    "activation_mlp": ("model",),
    "activation_vocab": ("model",),
}


def mesh_spec(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
    """The `PartitionSpec` of an array of `shape` whose axes carry logical `names` (None: whole).

    A name's mesh axes that the mesh lacks, that are already used by an earlier axis, or whose
    product does not divide the dimension are dropped (the dimension then stays whole on them)."""
    used: set[str] = set()
    spec = []
    for name, size in zip(names, shape):
        axes = tuple(a for a in RULES.get(name, ()) if a in mesh.shape and a not in used)
        while axes and size % math.prod(mesh.shape[a] for a in axes):
            axes = axes[:-1]
        used.update(axes)
        spec.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    return PartitionSpec(*spec)


def constrain(x: jax.Array, names: Sequence[str | None], mesh: Mesh | None) -> jax.Array:
    """`x` laid out on `mesh` by its logical axis `names` inside a jitted program; unchanged
    without a mesh (one device, or a program whose layout its inputs decide)."""
    if mesh is None:
        return x
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, mesh_spec(names, x.shape, mesh)))
