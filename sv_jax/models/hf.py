"""Hugging Face folders (`config.json`, `*.safetensors`, tokenizer files) in and out.

Loading streams one tensor at a time from the shards onto the device, so the host never holds two
copies of the model: a layer's tensor is written into its slice of the stacked parameter, on the
device, in place. Saving writes one shard at a time into a temporary folder that replaces the target
only once everything is written. Folders may be in a bucket (`gs://...`, through
`etils.epath`): a bucket's shards are read whole into memory, and files are staged in a local
folder on the way in or out (`sv_jax.io`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save_file

from sv_jax.compilation import shared_jit
from sv_jax.distributed import barrier, to_global, to_host
from sv_jax.errors import UserError
from sv_jax.io import is_remote, local_copy, written_locally
from sv_jax.models.config import ModelConfig
from sv_jax.models.decoder import Params, param_shapes, param_shardings

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
# Tensors some checkpoints carry that the model recomputes or shares.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


@dataclasses.dataclass(frozen=True)
class TensorMapping:
    """One HF tensor and where it lives in our parameter tree: at `path`, or for a layer's tensor at
    index `layer` of the stacked parameter at `path`.

    `layout` says how the two differ: `same` (identical), `flat` (HF flattens our trailing axes,
    as for q/k/v biases), or `linear` (HF stores `[out, in]`; we store `in` axes then `out` axes, and
    `input_axes` says how many of ours are `in`).
    """

    hf_name: str
    path: tuple[str, ...]
    layout: str = "same"
    input_axes: int = 1
    layer: int | None = None

    def hf_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if self.layout == "flat":
            return (math.prod(shape),)
        if self.layout == "linear":
            return (math.prod(shape[self.input_axes :]), math.prod(shape[: self.input_axes]))
        return tuple(shape)

    def to_ours(self, tensor: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return (tensor.T if self.layout == "linear" else tensor).reshape(shape)

    def ours(self, params: Params) -> jax.Array:
        """Our array of this tensor: a layer's slice of a stacked parameter."""
        array = _get(params, self.path)
        return array if self.layer is None else array[self.layer]

    def nbytes(self, params: Params) -> int:
        array = _get(params, self.path)
        return array.nbytes if self.layer is None else array.nbytes // array.shape[0]

    def to_hf(self, array: np.ndarray) -> np.ndarray:
        if self.layout == "linear":
            return np.ascontiguousarray(array.reshape(math.prod(array.shape[: self.input_axes]), -1).T)
        return array.reshape(self.hf_shape(array.shape))


def tensor_mappings(config: ModelConfig) -> list[TensorMapping]:
    """Every tensor of an HF Llama / Qwen2 checkpoint with this architecture."""
    mappings = [TensorMapping("model.embed_tokens.weight", ("embed", "embedding"))]
    attention, mlp = ("layers", "attention"), ("layers", "mlp")  # stacked: each layer's tensor at its index
    for i in range(config.num_layers):
        hf = f"model.layers.{i}"
        layer = functools.partial(TensorMapping, layer=i)
        for name in ("q", "k", "v"):
            mappings.append(layer(f"{hf}.self_attn.{name}_proj.weight", (*attention, name, "kernel"), "linear"))
            if config.attention_bias:
                mappings.append(layer(f"{hf}.self_attn.{name}_proj.bias", (*attention, name, "bias"), "flat"))
        mappings.append(layer(f"{hf}.self_attn.o_proj.weight", (*attention, "o", "kernel"), "linear", 2))
        for name in ("gate", "up", "down"):
            mappings.append(layer(f"{hf}.mlp.{name}_proj.weight", (*mlp, name, "kernel"), "linear"))
            if config.mlp_bias:
                mappings.append(layer(f"{hf}.mlp.{name}_proj.bias", (*mlp, name, "bias")))
        mappings.append(layer(f"{hf}.input_layernorm.weight", ("layers", "attention_norm", "scale")))
        mappings.append(layer(f"{hf}.post_attention_layernorm.weight", ("layers", "mlp_norm", "scale")))
    mappings.append(TensorMapping("model.norm.weight", ("final_norm", "scale")))
    if not config.tie_word_embeddings:
        mappings.append(TensorMapping("lm_head.weight", ("lm_head", "kernel"), "linear"))
    return mappings


@dataclasses.dataclass
class LoadedModel:
    """What a model folder holds: the architecture, the parameters, the tokenizer (if any) and the
    full HF config dict (kept so that saving preserves keys we do not model, such as token ids)."""

    config: ModelConfig
    params: Params
    tokenizer: Any
    hf_config: dict[str, Any]


def read_hf_config(path: epath.PathLike) -> dict[str, Any]:
    folder = epath.Path(path)
    if not folder.is_dir():
        raise UserError(f"{folder}: model folder does not exist")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise UserError(f"{config_file}: not found; a model folder needs an HF config.json")
    try:
        return json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"{config_file}: unreadable: {error}") from None


def load_hf(
    path: epath.PathLike,
    dtype: str = "float32",
    param_dtype: str | None = None,
    mesh: Mesh | None = None,
    with_tokenizer: bool = True,
) -> LoadedModel:
    """Reads an HF Llama / Qwen2 folder. On `mesh` each tensor is placed as it is read, sharded by
    its logical axes (each process writes only the shards its devices hold), and the returned
    config lays activations out on the mesh; default: the default device."""
    folder = epath.Path(path)
    hf_config = read_hf_config(folder)
    config = ModelConfig.from_hf(hf_config, str(folder / "config.json"), dtype, param_dtype or dtype)
    config = config.replace(mesh=mesh)
    shapes = param_shapes(config)
    shardings = param_shardings(config, mesh) if mesh is not None else None
    expected = {m.hf_name: m for m in tensor_mappings(config)}
    params: dict[str, Any] = {}
    stacks: dict[tuple[str, ...], jax.Array] = {}  # the layers' parameters, filled in one layer at a time
    for file, tensors in _tensors_by_file(folder).items():
        for name, tensor in tensors:
            mapping = expected.pop(name, None)
            if mapping is None:
                if name.endswith(_IGNORED_SUFFIXES) or (name == "lm_head.weight" and config.tie_word_embeddings):
                    continue
                raise UserError(f"{file}: unexpected tensor {name!r} for a {config.family} model of this config.json")
            target = _get(shapes, mapping.path)
            shape = target.shape if mapping.layer is None else target.shape[1:]
            if tuple(tensor.shape) != mapping.hf_shape(shape):
                raise UserError(
                    f"{file}: tensor {name!r} has shape {tuple(tensor.shape)}, "
                    f"expected {mapping.hf_shape(shape)} from config.json"
                )
            array = mapping.to_ours(tensor, shape).astype(target.dtype)
            sharding = _get(shardings, mapping.path) if shardings else None
            if mapping.layer is None:
                _set(params, mapping.path, _placed(array, sharding))
                continue
            if mapping.path not in stacks:
                stacks[mapping.path] = shared_jit(functools.partial(jnp.zeros, target.shape, target.dtype),
                                                  out_shardings=sharding)()
            layer_sharding = None if sharding is None else NamedSharding(mesh, PartitionSpec(*sharding.spec[1:]))
            stacks[mapping.path] = _with_layer(stacks[mapping.path], _placed(array, layer_sharding),
                                               np.int32(mapping.layer))
    for where, stacked in stacks.items():
        _set(params, where, stacked)
    if expected:
        missing = sorted(expected)
        raise UserError(f"{folder}: tensor {missing[0]!r} missing from the checkpoint ({len(missing)} missing in all)")
    tokenizer = load_tokenizer(folder) if with_tokenizer else None
    return LoadedModel(config, params, tokenizer, hf_config)


def _placed(array: np.ndarray, sharding: NamedSharding | None) -> jax.Array:
    """A host array on the default device, or laid out by `sharding` (each process its own shards)."""
    return jax.device_put(array) if sharding is None else to_global(array, sharding)


@functools.partial(jax.jit, donate_argnums=0)
def _with_layer(stacked: jax.Array, layer: jax.Array, index: jax.Array) -> jax.Array:
    """`stacked [layers, ...]` with `layer` at `index`, written in place (the stack is donated)."""
    return jax.lax.dynamic_update_index_in_dim(stacked, layer, index, 0)


def _tensors_by_file(folder: epath.Path) -> dict[epath.Path, Iterator[tuple[str, np.ndarray]]]:
    """Shard file → its (name, tensor) pairs, read lazily, after checking that every shard exists."""
    index_file = folder / INDEX_FILE
    if index_file.is_file():
        try:
            weight_map = json.loads(index_file.read_text())["weight_map"]
        except (OSError, json.JSONDecodeError, KeyError) as error:
            raise UserError(f"{index_file}: unreadable shard index: {error}") from None
        files = [folder / name for name in dict.fromkeys(weight_map.values())]
        for file in files:
            if not file.is_file():
                names = [t for t, f in weight_map.items() if folder / f == file]
                raise UserError(
                    f"{file}: shard listed in {INDEX_FILE} is missing (holds {names[0]!r} and {len(names) - 1} more)"
                )
    elif (folder / SINGLE_FILE).is_file():
        files = [folder / SINGLE_FILE]
    else:
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise UserError(f"{folder}: no *.safetensors weights found")
    return {file: _read_tensors(file) for file in files}


def _read_tensors(file: epath.Path) -> Iterator[tuple[str, np.ndarray]]:
    try:
        if is_remote(file):  # safetensors maps local files only
            yield from load_safetensors(file.read_bytes()).items()
            return
        with safe_open(file, framework="numpy") as handle:
            for name in handle.keys():
                yield name, handle.get_tensor(name)
    except (OSError, SafetensorError) as error:
        raise UserError(f"{file}: unreadable safetensors file: {error}") from None


def load_tokenizer(path: epath.PathLike):
    """The folder's tokenizer through `transformers.AutoTokenizer` (no hub: its own files only)."""
    from transformers import AutoTokenizer

    try:
        with local_copy(path, skip_suffix=".safetensors") as local:
            return AutoTokenizer.from_pretrained(str(local), local_files_only=True)
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: no usable tokenizer files: {error}".splitlines()[0]) from None


def save_hf(
    path: epath.PathLike,
    config: ModelConfig,
    params: Params,
    tokenizer: Any = None,
    hf_config: dict[str, Any] | None = None,
    max_shard_bytes: int = 4 << 30,
) -> None:
    """Writes an HF folder that transformers (and vLLM) load. `hf_config` (the loaded folder's)
    keeps keys we do not model; the architecture keys always come from `config`. On a multi-host
    mesh every process must call this; process 0 writes, and every process returns once the folder
    is in place."""
    target = epath.Path(path)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    writer = jax.process_index() == 0
    if writer:
        tmp.rmtree(missing_ok=True)
    try:
        with written_locally(tmp) if writer else contextlib.nullcontext() as folder:
            _write_weights(folder, config, params, max_shard_bytes)
            if writer:
                (folder / "config.json").write_text(json.dumps({**(hf_config or {}), **config.to_hf()}, indent=2) + "\n")
                if tokenizer is not None:
                    tokenizer.save_pretrained(str(folder))
        if writer:
            _replace_folder(tmp, target)
    finally:
        if writer:
            tmp.rmtree(missing_ok=True)
    barrier(f"save_hf {target}")


def _write_weights(folder: os.PathLike | None, config: ModelConfig, params: Params, max_shard_bytes: int) -> None:
    """Shards of at most `max_shard_bytes` into local `folder`; every process gathers each tensor
    with the others, and only the writer (the one given a folder) writes."""
    mappings = tensor_mappings(config)
    shards: list[list[TensorMapping]] = [[]]
    shard_bytes = 0
    for mapping in mappings:
        nbytes = mapping.nbytes(params)
        if shards[-1] and shard_bytes + nbytes > max_shard_bytes:
            shards.append([])
            shard_bytes = 0
        shards[-1].append(mapping)
        shard_bytes += nbytes
    names = [SINGLE_FILE] if len(shards) == 1 else [
        f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))
    ]
    weight_map = {}
    for name, shard in zip(names, shards):
        tensors = {m.hf_name: m.to_hf(np.asarray(to_host(m.ours(params)))) for m in shard}
        if folder is not None:
            save_file(tensors, os.path.join(folder, name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, name))
    if folder is not None and len(shards) > 1:
        total = sum(m.nbytes(params) for m in mappings)
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        epath.Path(folder, INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")


def _replace_folder(new: epath.Path, target: epath.Path) -> None:
    """Puts `new` at `target`; an existing `target` is removed only after `new` is in place."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        target.rename(old)
    new.rename(target)
    old.rmtree(missing_ok=True)


def _get(tree: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value
