"""Device meshes and the layout of parameters, training states and batches on them (`jax.jit`
shardings).

Every array names its axes logically and `partitioning.RULES` maps the names onto the mesh: rows of
batches, activations and KV caches split over `data` and `fsdp` (FSDP is data parallel with sharded
parameters), parameters shard their `embed` axis over `fsdp` and heads, MLP width and vocabulary
over `model`. Mesh axes a config leaves out are simply not used, and a dimension that a mesh axis
does not divide stays whole, so any mesh runs any model.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from sv_jax.errors import UserError
from sv_jax.models import param_shardings
from sv_jax.models.partitioning import RULES

KNOWN_AXES = ("data", "fsdp", "model")
ROW_AXES = RULES["activation_rows"]

__all__ = ["batch_sharding", "data_parallelism", "gathers_sampling_weights", "make_mesh", "mesh_of",
           "param_shardings", "replicated", "rows_sharding", "split_over_model_only", "state_shardings"]


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


def mesh_of(config: ml_collections.ConfigDict) -> Mesh:
    """The run's one mesh, from `config.mesh` (built once: every stage of a run shares it)."""
    return _cached_mesh(tuple(config.mesh.shape), tuple(config.mesh.axes))


@functools.lru_cache(maxsize=None)
def _cached_mesh(shape: tuple[int, ...], axes: tuple[str, ...]) -> Mesh:
    return make_mesh(shape, axes)


def gathers_sampling_weights(config: ml_collections.ConfigDict) -> bool:
    """Whether the run's samplers gather their weights once a call (`mesh.sampling_weights`; an
    unresolved `auto` gathers, as it resolves where the device memory is unknown)."""
    return config.mesh.sampling_weights != "sharded"


def replicated(mesh: Mesh) -> NamedSharding:
    """Whole on every device: scalars, step counters, metrics, small heads."""
    return NamedSharding(mesh, PartitionSpec())


def rows_sharding(mesh: Mesh, ndim: int = 2, rows_axis: int = 0) -> NamedSharding:
    """Arrays whose axis `rows_axis` holds rows (`[rows, time]` rollouts, `[rows]` lengths): rows
    split over `data` and `fsdp`, the other axes whole."""
    rows = tuple(a for a in ROW_AXES if a in mesh.shape) or None
    return NamedSharding(mesh, PartitionSpec(*(rows if i == rows_axis else None for i in range(ndim))))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """`[micro_batches, rows, time]` training batches: rows split over `data` and `fsdp`."""
    return rows_sharding(mesh, ndim=3, rows_axis=1)


def data_parallelism(mesh: Mesh | None) -> int:
    """How many ways a batch's rows are split (1 without a mesh): rows a step must be a multiple of it."""
    return math.prod(mesh.shape.get(a, 1) for a in ROW_AXES) if mesh is not None else 1


def split_over_model_only(shardings: Any) -> Any:
    """`shardings` (a tree of `NamedSharding`s) with the row axes dropped: whole on every device but
    for the `model` split. The sampler's copy of the weights, gathered once per call, so that decode
    steps run without FSDP's all-gather of every layer at every step."""

    def kept(entry):
        named = entry if isinstance(entry, tuple) else (entry,)
        axes = tuple(a for a in named if a is not None and a not in ROW_AXES)
        return None if not axes else axes[0] if len(axes) == 1 else axes

    return jax.tree.map(lambda s: NamedSharding(s.mesh, PartitionSpec(*map(kept, s.spec))), shardings)


def state_shardings(state: Any, params: Any, optimizer: optax.GradientTransformation, mesh: Mesh) -> Any:
    """The shardings of a `TrainState` (arrays or `ShapeDtypeStruct`s) whose parameters are laid out
    as `params` (shardings, a tree prefix of the parameters: one sharding may stand for a subtree):
    the optimizer's per-parameter moments as their parameter, its counters and the step replicated."""
    whole = replicated(mesh)
    params = jax.tree.map(lambda sharding, subtree: jax.tree.map(lambda _: sharding, subtree), params, state.params)
    opt_state = optax.tree_map_params(optimizer, lambda _, sharding: sharding, state.opt_state, params,
                                      transform_non_params=lambda _: whole)
    return state.replace(step=whole, params=params, opt_state=opt_state)

