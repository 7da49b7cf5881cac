"""Device meshes and the layout of parameters and batches on them (`jax.jit` shardings).

Parameters carry logical axis names (`sv_jax.models.logical_axes`); `RULES` maps each onto a mesh
axis: the batch splits over `data`, and parameters shard over `fsdp` (their `embed` axis: FSDP) and
`model` (heads, MLP width, vocabulary: tensor parallelism). Mesh axes a config leaves out are simply
not used, and a dimension that a mesh axis does not divide stays whole, so any mesh runs any model.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from sv_jax.errors import UserError
from sv_jax.models import ModelConfig, Params, logical_axes, param_shapes

RULES: dict[str, str] = {
    "embed": "fsdp",
    "vocab": "model",
    "heads": "model",
    "kv_heads": "model",
    "mlp": "model",
}
KNOWN_AXES = ("data", "fsdp", "model")


def make_mesh(shape: Sequence[int], axes: Sequence[str], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh of `shape` (one -1 takes the devices left) over `axes`, from `config.mesh`."""
    devices = list(devices if devices is not None else jax.devices())
    shape, axes = list(shape), tuple(axes)
    if len(shape) != len(axes):
        raise UserError(f"config keys 'mesh.shape' {tuple(shape)} and 'mesh.axes' {axes} differ in length")
    unknown = [a for a in axes if a not in KNOWN_AXES]
    if unknown:
        raise UserError(f"config key 'mesh.axes': unknown axis {unknown[0]!r}; known: {', '.join(KNOWN_AXES)}")
    if shape.count(-1) > 1:
        raise UserError("config key 'mesh.shape': at most one -1")
    if -1 in shape:
        rest = math.prod(s for s in shape if s != -1)
        shape[shape.index(-1)] = len(devices) // rest if rest and len(devices) % rest == 0 else 0
    if math.prod(shape) != len(devices) or min(shape) < 1:
        raise UserError(f"config key 'mesh.shape' {tuple(shape)} does not fit the {len(devices)} devices")
    return Mesh(np.array(devices).reshape(shape), axes)


def param_shardings(config: ModelConfig, mesh: Mesh) -> Params:
    """A `NamedSharding` for every parameter, from its logical axes through `RULES`."""
    def sharding(spec: PartitionSpec, shape: jax.ShapeDtypeStruct) -> NamedSharding:
        axes = []
        for name, size in zip(spec, shape.shape):
            axis = RULES.get(name)
            fits = axis in mesh.shape and size % mesh.shape[axis] == 0 and axis not in axes
            axes.append(axis if fits else None)
        return NamedSharding(mesh, PartitionSpec(*axes))

    return jax.tree.map(sharding, logical_axes(config), param_shapes(config),
                        is_leaf=lambda x: isinstance(x, PartitionSpec))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """`[micro_batches, rows, time]` arrays: rows split over `data` (and `fsdp`, which holds
    different rows too: FSDP is data parallel with sharded parameters)."""
    rows = tuple(a for a in ("data", "fsdp") if a in mesh.shape)
    return NamedSharding(mesh, PartitionSpec(None, rows or None, None))


def data_parallelism(mesh: Mesh) -> int:
    """How many ways a batch's rows are split: rows a step must be a multiple of it."""
    return math.prod(mesh.shape.get(a, 1) for a in ("data", "fsdp"))
