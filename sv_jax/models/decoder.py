"""A pure-functional Llama / Qwen2 decoder in Flax linen, with an explicit KV cache.

Parameters are a plain pytree (`init_params`); every one is declared with logical axis names
(`logical_axes`), which `sv_jax.sharding` rules map onto a device mesh. The layers run under `nn.scan`
over one stacked subtree, `params["layers"]`, whose leaves have a leading `[num_layers]` axis: the
compiled program holds one layer, whatever the depth. A decode step may instead run them unrolled
over a cache per layer (`ModelConfig.decode_layers`, the default on CPU). The cache is a value passed in and returned,
never hidden module state, so prefill and decode are ordinary jittable calls.

Sequence layout. `segment_ids [batch, time]` marks real tokens (> 0) and padding (0); tokens attend
only to earlier tokens of the same segment, so padded and packed batches both work. `positions`
are the rotary positions, independent of where a token sits in the array (left padding is fine).
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from sv_jax.models.config import ModelConfig
from sv_jax.models.partitioning import constrain, mesh_spec
from sv_jax.models.rope import apply_rotary, inverse_frequencies

Params = dict[str, Any]

# Logical axes of activations (names in `partitioning.RULES`): rows split over the data-parallel
# axes everywhere, heads / MLP width / vocabulary over `model`.
HIDDEN = ("activation_rows", None, None)  # [batch, time, embed]
QUERY = ("activation_rows", None, "activation_heads", None)  # [batch, time, heads, head_dim]
KEY_VALUE = ("activation_rows", "activation_kv_heads", None, None)  # [batch, kv_heads, time | slots, head_dim]
MLP_HIDDEN = ("activation_rows", "activation_mlp")  # [batch * time, mlp]
LOGITS = ("activation_rows", None, "activation_vocab")  # [batch, time, vocab]
CACHE_ROWS = ("activation_rows", None)  # [batch, slots]
# The stacked layers' axis, first in every `params["layers"]` leaf and in the cache; no rule shards it.
LAYERS = "layers"
CACHE = (LAYERS,) + KEY_VALUE  # [layers, batch, kv_heads, slots, head_dim]


@flax.struct.dataclass
class KVCache:
    """Keys and values of every layer for `max_len` slots; slots `< index` are filled.

    keys / values: `[layers, batch, kv_heads, max_len, head_dim]` (head-major, so that a decode step
      reads each head's keys contiguously), or a tuple of one `[batch, kv_heads, max_len, head_dim]`
      a layer: the decoder then runs its layers unrolled, and takes them as `unstacked_layers`.
    segment_ids: `[batch, max_len]`, 0 where a slot holds padding or nothing yet.
    index: scalar int32, the slot the next token is written to (the same for every row).
    """

    keys: jax.Array
    values: jax.Array
    segment_ids: jax.Array
    index: jax.Array


def init_cache(config: ModelConfig, batch: int, max_len: int) -> KVCache:
    """An empty cache; allocate it once per (batch, length) bucket. On `config.mesh` (inside jit) its
    rows split over the data-parallel axes and its KV heads over `model`."""
    shape = (config.num_layers, batch, config.num_kv_heads, max_len, config.head_dim)
    empty = lambda: constrain(jnp.zeros(shape, config.dtype), CACHE, config.mesh)  # noqa: E731
    return KVCache(
        keys=empty(),
        values=empty(),
        segment_ids=constrain(jnp.zeros((batch, max_len), jnp.int32), CACHE_ROWS, config.mesh),
        index=jnp.zeros((), jnp.int32),
    )


def _normal(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """N(0, 0.02²) draws with the same bits whether `init_params` runs eagerly or under jit: without
    the barrier XLA fuses the scale into the draw and a quarter of the values move by one ulp."""
    return jax.lax.optimization_barrier(jax.random.normal(key, shape, dtype)) * 0.02


def _init(axes: tuple[str, ...], initializer=_normal):
    return nn.with_logical_partitioning(initializer, axes)


class RMSNorm(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", _init(("embed",), nn.initializers.ones), (x.shape[-1],), self.config.param_dtype)
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.config.rms_norm_eps)
        return scale.astype(self.config.dtype) * normed.astype(self.config.dtype)


CAUSAL_BLOCK = 128  # query block of causal attention without a cache; see `attention`


def attention(query: jax.Array, keys: jax.Array, values: jax.Array, mask: jax.Array, causal: bool) -> jax.Array:
    """Softmax attention of `query [batch, time, heads, head_dim]` over `keys` / `values
    [batch, kv_heads, slots, head_dim]` where `mask [batch, time, slots]`; each group of
    heads // kv_heads query heads shares one key / value head.

    `causal` says the keys are the queries' own tokens (no cache): queries then go in blocks of
    CAUSAL_BLOCK that read only the keys up to their block's last token, which skips the masked upper
    triangle (a training step's attention at 384 tokens: 3.3x faster with the normalisation below).
    """
    time = query.shape[1]
    if not causal or time <= CAUSAL_BLOCK:
        return _attend(query, keys, values, mask)
    blocks = []
    for start in range(0, time, CAUSAL_BLOCK):
        end = min(start + CAUSAL_BLOCK, time)
        blocks.append(_attend(query[:, start:end], keys[:, :, :end], values[:, :, :end], mask[:, start:end, :end]))
    return jnp.concatenate(blocks, axis=1)


def _attend(query: jax.Array, keys: jax.Array, values: jax.Array, mask: jax.Array) -> jax.Array:
    """`attention` over every slot. Scores and softmax in float32."""
    batch, time, heads, head_dim = query.shape
    kv_heads = keys.shape[1]
    groups = heads // kv_heads
    grouped = query.reshape(batch, time, kv_heads, groups, head_dim).transpose(0, 2, 3, 1, 4)
    grouped = grouped * jnp.asarray(head_dim**-0.5, query.dtype)
    # Groups and time share one matmul dimension: 4-d einsums run several times faster on CPU, and
    # for one new token (a decode step) 30-60x faster than an elementwise product and sum.
    flat = grouped.reshape(batch, kv_heads, groups * time, head_dim)
    wide = None if query.dtype == jnp.float32 else jnp.float32  # an f32 request on f32 inputs is slow
    scores = jnp.einsum("bkmd,bksd->bkms", flat, keys, preferred_element_type=wide)
    scores = scores.reshape(batch, kv_heads, groups, time, -1).astype(jnp.float32)
    scores = jnp.where(mask[:, None, None], scores, -1e30)
    # The softmax is normalised after the value product, on [.., head_dim] instead of [.., slots]:
    # one pass fewer over the scores forward and backward.
    weights = jnp.exp(scores - jax.lax.stop_gradient(scores.max(axis=-1, keepdims=True)))
    flat_weights = weights.astype(values.dtype).reshape(batch, kv_heads, groups * time, -1)
    out = jnp.einsum("bkms,bksd->bkmd", flat_weights, values).reshape(batch, kv_heads, groups, time, head_dim)
    out = out / weights.sum(axis=-1, keepdims=True)
    return out.astype(query.dtype).transpose(0, 3, 1, 2, 4).reshape(batch, time, heads, head_dim)


class Attention(nn.Module):
    """Grouped-query attention with rotary positions; writes into and reads from its layer's slice of
    the stacked cache."""

    config: ModelConfig

    def _projection(self, heads: int, heads_axis: str, name: str) -> nn.DenseGeneral:
        c = self.config
        return nn.DenseGeneral(
            (heads, c.head_dim),
            use_bias=c.attention_bias,
            dtype=c.dtype,
            param_dtype=c.param_dtype,
            kernel_init=_init(("embed", heads_axis, "head_dim")),
            bias_init=_init((heads_axis, "head_dim"), nn.initializers.zeros),
            name=name,
        )

    @nn.compact
    def __call__(self, x, positions, mask, cache, layer, cache_index):
        c = self.config
        inv_freq = inverse_frequencies(c.head_dim, c.rope_theta, c.rope_scaling)
        query = apply_rotary(self._projection(c.num_heads, "heads", "q")(x), positions, inv_freq)
        query = constrain(query, QUERY, c.mesh)
        key = apply_rotary(self._projection(c.num_kv_heads, "kv_heads", "k")(x), positions, inv_freq)
        value = self._projection(c.num_kv_heads, "kv_heads", "v")(x)
        key, value = (constrain(a.transpose(0, 2, 1, 3), KEY_VALUE, c.mesh) for a in (key, value))
        causal = cache is None
        if not causal and layer is None:  # this layer's own cache: written in place, read whole
            cache = tuple(constrain(jax.lax.dynamic_update_slice(own, new.astype(own.dtype), (0, 0, cache_index, 0)),
                                    KEY_VALUE, c.mesh) for own, new in zip(cache, (key, value)))
            key, value = cache
        elif not causal:
            # Only this call's tokens are written, into the whole stacked cache that the layer scan
            # carries: XLA then updates it in place (a cache passed through the scan as its xs / ys
            # would be copied whole every decode step). The layer's slots are read back from it.
            start = (layer, 0, 0, cache_index, 0)
            cache = tuple(constrain(jax.lax.dynamic_update_slice(stacked, new[None].astype(stacked.dtype), start),
                                    CACHE, c.mesh) for stacked, new in zip(cache, (key, value)))
            key, value = (constrain(jax.lax.dynamic_index_in_dim(stacked, layer, keepdims=False), KEY_VALUE, c.mesh)
                          for stacked in cache)
        attended = constrain(attention(query, key, value, mask, causal), QUERY, c.mesh)
        out = nn.DenseGeneral(
            c.hidden_size,
            axis=(-2, -1),
            use_bias=False,
            dtype=c.dtype,
            param_dtype=c.param_dtype,
            kernel_init=_init(("heads", "head_dim", "embed")),
            name="o",
        )(attended)
        return out, cache


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config

        def dense(features: int, axes: tuple[str, str], name: str) -> nn.Dense:
            return nn.Dense(
                features,
                use_bias=c.mlp_bias,
                dtype=c.dtype,
                param_dtype=c.param_dtype,
                kernel_init=_init(axes),
                bias_init=_init(axes[1:], nn.initializers.zeros),
                name=name,
            )

        # Batch and time flattened into one matmul dimension: XLA's CPU backend runs the backward pass
        # of 2-d matmuls ~1.5x faster than that of `[batch, time, features]` ones.
        flat = x.reshape(-1, x.shape[-1])
        hidden = nn.silu(dense(c.intermediate_size, ("embed", "mlp"), "gate")(flat))
        hidden = constrain(hidden * dense(c.intermediate_size, ("embed", "mlp"), "up")(flat), MLP_HIDDEN, c.mesh)
        return dense(c.hidden_size, ("mlp", "embed"), "down")(hidden).reshape(x.shape)


class Block(nn.Module):
    """One decoder layer, the body of the layer scan: carry `(hidden, cache)` → the same, where cache
    is the stacked `(keys, values)` or None; `layer` is this layer's index in it."""

    config: ModelConfig

    @nn.compact
    def __call__(self, carry, layer, positions, mask, cache_index):
        x, cache = carry
        attended, cache = Attention(self.config, name="attention")(
            RMSNorm(self.config, name="attention_norm")(x), positions, mask, cache, layer, cache_index
        )
        x = constrain(x + attended, HIDDEN, self.config.mesh)
        x = x + MLP(self.config, name="mlp")(RMSNorm(self.config, name="mlp_norm")(x))
        return (constrain(x, HIDDEN, self.config.mesh), cache), None


class Decoder(nn.Module):
    """tokens `[batch, time]` → logits `[batch, time, vocab]` (float32), and the updated cache.

    With `last_only`, logits `[batch, 1, vocab]` of the last column only; with `hidden_only`, the
    final hidden states `[batch, time, hidden]` instead of logits (`output_logits` projects them,
    a chunk of time at a time if need be).
    """

    config: ModelConfig

    @nn.compact
    def __call__(
        self,
        tokens: jax.Array,
        positions: jax.Array,
        segment_ids: jax.Array,
        cache: KVCache | None = None,
        last_only: bool = False,
        hidden_only: bool = False,
    ) -> tuple[jax.Array, KVCache | None]:
        c = self.config
        embed = nn.Embed(
            c.vocab_size,
            c.hidden_size,
            dtype=c.dtype,
            param_dtype=c.param_dtype,
            embedding_init=_init(("vocab", "embed")),
            name="embed",
        )
        x = constrain(embed(tokens), HIDDEN, c.mesh)
        mask, cache_index, key_segments = _attention_mask(segment_ids, cache)
        block = Block if c.remat == "none" else nn.remat(Block, policy=_REMAT_POLICY[c.remat], prevent_cse=False)
        if cache is not None and isinstance(cache.keys, tuple):  # unstacked layers, a cache each
            written = []
            for i, layer_cache in enumerate(zip(cache.keys, cache.values)):
                (x, layer_cache), _ = block(c, name=f"layers_{i}")((x, layer_cache), None, positions, mask, cache_index)
                written.append(layer_cache)
            stacked = tuple(zip(*written))  # (every layer's keys, every layer's values)
        else:
            layers = nn.scan(
                block,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast),
                length=c.num_layers,
                metadata_params={nn.PARTITION_NAME: LAYERS},
            )(c, name="layers")
            stacked = None if cache is None else (cache.keys, cache.values)
            (x, stacked), _ = layers((x, stacked), jnp.arange(c.num_layers), positions, mask, cache_index)
        if last_only:  # a prefill needs the next-token logits only: skip `[batch, time, vocab]`
            x = x[:, -1:]
        x = RMSNorm(c, name="final_norm")(x)
        if hidden_only:
            return constrain(x, HIDDEN, c.mesh), None
        if c.tie_word_embeddings:
            logits = embed.attend(x)
        else:
            logits = nn.DenseGeneral(
                c.vocab_size,
                use_bias=False,
                dtype=c.dtype,
                param_dtype=c.param_dtype,
                kernel_init=_init(("embed", "vocab")),
                name="lm_head",
            )(x)
        if cache is not None:
            cache = KVCache(
                keys=stacked[0],
                values=stacked[1],
                segment_ids=constrain(key_segments, CACHE_ROWS, c.mesh),
                index=cache_index + tokens.shape[1],
            )
        return constrain(logits.astype(jnp.float32), LOGITS, c.mesh), cache


# `nn.remat` policies by `ModelConfig.remat` (without CSE barriers: the scan already keeps XLA from
# merging the recomputation into the forward pass)
_REMAT_POLICY = {"full": None, "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


def _attention_mask(segment_ids: jax.Array, cache: KVCache | None):
    """Mask `[batch, time, keys]`: causal by slot, same segment, never padding.

    Without a cache the keys are the tokens themselves; with one, they are all the cache's slots
    after this call's tokens are written at `cache.index`.
    """
    time = segment_ids.shape[1]
    if cache is None:
        cache_index = jnp.zeros((), jnp.int32)
        key_segments = segment_ids
    else:
        cache_index = cache.index
        key_segments = jax.lax.dynamic_update_slice(cache.segment_ids, segment_ids, (0, cache_index))
    query_slots = cache_index + jnp.arange(time)
    key_slots = jnp.arange(key_segments.shape[1])
    causal = key_slots[None, :] <= query_slots[:, None]
    same_segment = segment_ids[:, :, None] == key_segments[:, None, :]
    mask = causal[None] & same_segment & (key_segments[:, None, :] > 0)
    return mask, cache_index, key_segments


def _example_inputs(batch: int = 1, time: int = 1):
    tokens = jnp.zeros((batch, time), jnp.int32)
    return tokens, tokens, jnp.ones_like(tokens)


class _LayersOneByOne(nn.Module):
    """The layers as the separate modules `layers_0`, `layers_1`, ... of the decoder before its layers
    ran under a scan; only for `init_params`, which draws each layer with the same key as then."""

    config: ModelConfig

    @nn.compact
    def __call__(self, *inputs):
        for i in range(self.config.num_layers):
            Block(self.config, name=f"layers_{i}")(*inputs)


def decodes_unrolled(config: ModelConfig) -> bool:
    """Whether decode steps run the layers unrolled (`ModelConfig.decode_layers`; `auto`: on CPU)."""
    if config.decode_layers != "auto":
        return config.decode_layers == "unrolled"
    platform = jax.default_backend() if config.mesh is None else config.mesh.devices.flat[0].platform
    return platform == "cpu"


def unstacked_layers(params: Params) -> Params:
    """`params` with its stacked layers as the separate subtrees `layers_0`, `layers_1`, ..., as a
    decoder with a cache per layer takes them."""
    unstacked = {name: tree for name, tree in params.items() if name != "layers"}
    num_layers = jax.tree.leaves(params["layers"])[0].shape[0]
    for i in range(num_layers):
        unstacked[f"layers_{i}"] = jax.tree.map(lambda x: x[i], params["layers"])
    return unstacked


def init_params(config: ModelConfig, rng: jax.Array) -> Params:
    """Random parameters (normal, std 0.02; norms at 1), as a plain pytree without axis metadata.

    Each layer is drawn as it was before the layers were stacked (`_LayersOneByOne`): a seed gives the
    same model as it did then, and `nn.scan`'s own draw of the layers is dropped."""
    config = config.replace(mesh=None)
    params = nn.meta.unbox(Decoder(config).init(rng, *_example_inputs())["params"])
    x = jnp.zeros((1, 1, config.hidden_size), config.dtype)
    positions, mask = jnp.zeros((1, 1), jnp.int32), jnp.ones((1, 1, 1), bool)
    layers = nn.meta.unbox(_LayersOneByOne(config).init(rng, (x, None), 0, positions, mask, 0)["params"])
    each = [layers[f"layers_{i}"] for i in range(config.num_layers)]
    params["layers"] = jax.tree.map(lambda *layer: jnp.stack(layer), *each)
    return params


def param_shapes(config: ModelConfig) -> Params:
    """`jax.ShapeDtypeStruct` of every parameter, without allocating any."""
    return _fresh_containers(_traced_param_shapes(config.replace(mesh=None)))


def logical_axes(config: ModelConfig) -> Params:
    """The pytree of `PartitionSpec`s of logical axis names ('embed', 'heads', ...) of every parameter."""
    return _fresh_containers(_traced_logical_axes(config.replace(mesh=None)))


# Tracing the model's init for these costs ~0.2 s, and a run asks for them dozens of times.
@functools.lru_cache(maxsize=32)
def _traced_param_shapes(config: ModelConfig) -> Params:
    return jax.eval_shape(lambda: init_params(config, jax.random.key(0)))


@functools.lru_cache(maxsize=32)
def _traced_logical_axes(config: ModelConfig) -> Params:
    boxed = jax.eval_shape(lambda: Decoder(config).init(jax.random.key(0), *_example_inputs())["params"])
    return nn.get_partition_spec(boxed)


def _fresh_containers(tree: Params) -> Params:
    """The same leaves in new dicts: a caller may change its tree without changing the cached one."""
    return jax.tree.map(lambda leaf: leaf, tree, is_leaf=lambda x: isinstance(x, PartitionSpec))


def param_shardings(config: ModelConfig, mesh: Mesh) -> Params:
    """A `NamedSharding` for every parameter on `mesh`, from its logical axes (`partitioning.RULES`)."""
    return jax.tree.map(lambda names, shape: NamedSharding(mesh, mesh_spec(names, shape.shape, mesh)),
                        logical_axes(config), param_shapes(config), is_leaf=lambda x: isinstance(x, PartitionSpec))


def forward(
    config: ModelConfig,
    params: Params,
    tokens: jax.Array,
    positions: jax.Array | None = None,
    segment_ids: jax.Array | None = None,
    cache: KVCache | None = None,
    last_only: bool = False,
    hidden_only: bool = False,
) -> tuple[jax.Array, KVCache | None]:
    """Logits `[batch, time, vocab]` for `tokens [batch, time]` (or the final hidden states, see
    `Decoder`); positions default to 0..time-1."""
    if segment_ids is None:
        segment_ids = jnp.ones_like(tokens)
    if positions is None:
        positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    return Decoder(config).apply({"params": params}, tokens, positions, segment_ids, cache, last_only, hidden_only)


def output_kernel(config: ModelConfig, params: Params) -> jax.Array:
    """The output projection `[hidden, vocab]` in the compute dtype: `lm_head`'s kernel, or the
    tied embedding transposed (both then lie as `[embed, vocab]` on a mesh)."""
    dtype = jnp.dtype(config.dtype)
    if config.tie_word_embeddings:
        return params["embed"]["embedding"].astype(dtype).T
    return params["lm_head"]["kernel"].astype(dtype)


def project(config: ModelConfig, hidden: jax.Array, kernel: jax.Array) -> jax.Array:
    """Float32 logits `[batch, time, vocab']` of hidden states `[batch, time, hidden]` through an
    output kernel `[hidden, vocab']` (`output_kernel` or a slice of its vocabulary)."""
    hidden = hidden.astype(jnp.dtype(config.dtype))
    logits = jax.lax.dot_general(hidden, kernel, (((hidden.ndim - 1,), (0,)), ((), ())))
    return constrain(logits.astype(jnp.float32), LOGITS, config.mesh)


def output_logits(config: ModelConfig, params: Params, hidden: jax.Array) -> jax.Array:
    """Float32 logits `[batch, time, vocab]` of final hidden states `[batch, time, hidden]`: the
    decoder's own output projection, the same products in the same dtypes, for callers that
    project a chunk of time at a time."""
    return project(config, hidden, output_kernel(config, params))
