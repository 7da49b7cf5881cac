"""Every jitted program of the recipe on (data, fsdp, model) meshes of 8 simulated devices: the SFT
step, the PPO update with a value head, the scoring pass and greedy sampling compute what one device
does, and parameters, Adam moments, the reference, batches and KV caches sit where the rules say."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sv_jax.models import ModelConfig, forward, init_cache, init_params, load_hf, param_shardings
from sv_jax.models.decoder import Block, RMSNorm, _attention_mask, output_logits
from sv_jax.sampling import Sampler, SamplingSpec
from sv_jax.sharding import batch_sharding, make_mesh, replicated, rows_sharding
from sv_jax.training.lm import LMStep, init_train_state, jit_lm_step, placed_train_state
from sv_jax.training.ppo import PPOStep, init_value_head, policy_outputs

AXES = ("data", "fsdp", "model")
MESHES = [(8, 1, 1), (2, 2, 2), (1, 2, 4), (1, 8, 1)]
# 8 query and 4 KV heads, vocabulary and widths that every axis size divides
CONFIG = ModelConfig(family="qwen2", vocab_size=128, hidden_size=32, intermediate_size=64, num_layers=2,
                     num_heads=8, num_kv_heads=4, head_dim=8, attention_bias=True)
ROWS, TIME = 16, 24


def params_of(config: ModelConfig, scale: float = 1.0):
    """Random parameters; scaled up, with sharp next-token distributions (greedy ties would be noise)."""
    return jax.tree.map(lambda x: x * scale, init_params(config, jax.random.key(0)))


def expected_shards(shape):
    """Per-device shard shapes, by hand from the rules: rows over data x fsdp, embed over fsdp,
    heads / KV heads / MLP width / vocabulary over model; the stacked layers' axis (first) whole."""
    data, fsdp, model = shape
    split = data * fsdp
    layers = CONFIG.num_layers
    return {
        "q": (layers, 32 // fsdp, 8 // model, 8),
        "k": (layers, 32 // fsdp, 4 // model, 8),
        "down": (layers, 64 // model, 32 // fsdp),
        "embed": (128 // model, 32 // fsdp),
        "batch": (2, ROWS // 2 // split, TIME),
        "rows": (ROWS // split, TIME),
        "cache": (layers, ROWS // split, 4 // model, 32, 8),
    }


def adamw():
    """AdamW whose epsilon keeps the first update linear in tiny gradients: with the default 1e-8 an
    update is lr * sign(gradient) there, and reduction-order noise in a 1e-9 gradient moves it."""
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-2, eps=1e-3))


def shard(array):
    return array.addressable_shards[0].data.shape


def lm_batch(rng):
    tokens = rng.integers(1, CONFIG.vocab_size, (ROWS, TIME + 1)).astype(np.int32)
    lengths = rng.integers(TIME // 2, TIME + 1, ROWS)
    real = (np.arange(TIME)[None] < lengths[:, None]).astype(np.int32)
    batch = {"inputs": tokens[:, :-1] * real, "targets": tokens[:, 1:] * real,
             "positions": np.broadcast_to(np.arange(TIME, dtype=np.int32), (ROWS, TIME)).copy(),
             "segment_ids": real, "loss_mask": real * (rng.random((ROWS, TIME)) < 0.7), "kl_mask": real}
    return {k: v.astype(np.int32).reshape(2, ROWS // 2, TIME) for k, v in batch.items()}


def ppo_batch(rng):
    batch = {k: v.reshape(ROWS, TIME) for k, v in lm_batch(rng).items() if k not in ("loss_mask", "kl_mask")}
    mask = batch["segment_ids"] * (np.arange(TIME)[None] >= 6)
    noise = lambda scale: (rng.normal(size=(ROWS, TIME)) * scale).astype(np.float32)  # noqa: E731
    return {**batch, "response_mask": mask.astype(np.int32), "old_logprobs": noise(0.1) - 4.0,
            "reference_logprobs": noise(0.1) - 4.0, "advantages": noise(1.0), "returns": noise(1.0)}


def assert_trees_close(got, want, atol):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol)


@pytest.mark.parametrize("shape", MESHES)
def test_sft_step_on_a_mesh_equals_one_device_and_shards_as_the_rules_say(shape):
    mesh = make_mesh(shape, AXES)
    optimizer = adamw()
    params, batch = params_of(CONFIG), lm_batch(np.random.default_rng(0))
    step = LMStep(CONFIG, optimizer, kl_coef=0.1)
    reference = jax.tree.map(lambda x: x * 0.9, params)
    want_state, want = jax.jit(step)(init_train_state(params, optimizer), batch, reference)

    config = CONFIG.replace(mesh=mesh)
    layout = param_shardings(config, mesh)
    state, state_layout = placed_train_state(jax.device_put(params, layout), optimizer, layout, mesh)
    reference = jax.device_put(reference, layout)
    on_mesh = jax.device_put(batch, batch_sharding(mesh))
    state, got = jit_lm_step(LMStep(config, optimizer, kl_coef=0.1), state_layout, mesh, True)(state, on_mesh, reference)

    assert float(got["loss"]) == pytest.approx(float(want["loss"]), rel=1e-5)
    assert float(got["kl"]) == pytest.approx(float(want["kl"]), rel=1e-4, abs=1e-7)
    assert_trees_close(state.params, want_state.params, atol=1e-5)
    shards = expected_shards(shape)
    attention = state.params["layers"]["attention"]
    assert shard(attention["q"]["kernel"]) == shards["q"] and shard(attention["k"]["kernel"]) == shards["k"]
    assert shard(state.params["layers"]["mlp"]["down"]["kernel"]) == shards["down"]
    assert shard(state.params["embed"]["embedding"]) == shards["embed"]
    adam = state.opt_state[1][0]  # chain(clip, adamw): adamw's scale_by_adam state
    assert shard(adam.mu["layers"]["attention"]["q"]["kernel"]) == shards["q"]
    assert shard(adam.nu["embed"]["embedding"]) == shards["embed"]
    assert shard(reference["layers"]["attention"]["k"]["kernel"]) == shards["k"]
    assert shard(on_mesh["inputs"]) == shards["batch"]


@pytest.mark.parametrize("shape", MESHES)
def test_ppo_update_and_scoring_pass_on_a_mesh_equal_one_device(shape):
    mesh = make_mesh(shape, AXES)
    optimizer = adamw()
    params = {"policy": params_of(CONFIG), "value": init_value_head(CONFIG)}
    params["value"]["kernel"] = jnp.linspace(-0.1, 0.1, CONFIG.hidden_size)
    batch = ppo_batch(np.random.default_rng(1))
    score = functools.partial(policy_outputs, temperature=0.7)
    want_scores = jax.jit(functools.partial(score, CONFIG))(params, batch)
    want_state, want = jax.jit(PPOStep(CONFIG, optimizer, 0.7, kl_coef=0.05))(init_train_state(params, optimizer), batch)

    config = CONFIG.replace(mesh=mesh)
    layout = {"policy": param_shardings(config, mesh), "value": replicated(mesh)}
    rows = rows_sharding(mesh)
    on_mesh = jax.device_put(batch, rows)
    got_scores = jax.jit(functools.partial(score, config), in_shardings=(layout, rows), out_shardings=rows)(
        jax.device_put(params, layout), on_mesh)
    assert_trees_close(got_scores, want_scores, atol=1e-5)
    assert shard(got_scores[0]) == shard(got_scores[2]) == expected_shards(shape)["rows"]

    state, state_layout = placed_train_state(params, optimizer, layout, mesh)
    update = jax.jit(PPOStep(config, optimizer, 0.7, kl_coef=0.05), in_shardings=(state_layout, rows),
                     out_shardings=(state_layout, replicated(mesh)), donate_argnums=0)
    state, got = update(state, on_mesh)
    for name in ("loss", "kl", "value_loss"):
        assert float(got[name]) == pytest.approx(float(want[name]), rel=1e-5)
    assert_trees_close(state.params, want_state.params, atol=1e-5)
    assert shard(state.params["policy"]["layers"]["attention"]["q"]["kernel"]) == expected_shards(shape)["q"]
    assert shard(state.opt_state[1][0].mu["policy"]["embed"]["embedding"]) == expected_shards(shape)["embed"]
    assert shard(on_mesh["advantages"]) == expected_shards(shape)["rows"]


@pytest.mark.parametrize("cached", [False, True])
def test_scanned_layers_equal_the_layer_applied_one_by_one(cached):
    """The decoder's scan over the stacked layers, against its body applied in a Python loop to each
    layer's slice of the stacked parameters (on a mesh; with a cache, a prefill and one decode step)."""
    mesh = make_mesh((1, 2, 4), AXES)
    config = CONFIG.replace(mesh=mesh)
    layout = param_shardings(config, mesh)
    params = jax.device_put(params_of(CONFIG, scale=4), layout)
    rng = np.random.default_rng(3)
    prompt = rng.integers(1, CONFIG.vocab_size, (ROWS, 8)).astype(np.int32)
    step = np.ones((ROWS, 1), np.int32)

    def by_hand(params, tokens, positions, cache):
        segment_ids = jnp.ones_like(tokens)
        mask, cache_index, key_segments = _attention_mask(segment_ids, cache)
        x = params["embed"]["embedding"][tokens]
        stacked = None if cache is None else (cache.keys, cache.values)
        for i in range(config.num_layers):
            layer = jax.tree.map(lambda stacked, i=i: stacked[i], params["layers"])
            (x, stacked), _ = Block(config).apply({"params": layer}, (x, stacked), i, positions, mask, cache_index)
        logits = output_logits(config, params, RMSNorm(config).apply({"params": params["final_norm"]}, x))
        if cache is not None:
            cache = cache.replace(keys=stacked[0], values=stacked[1], segment_ids=key_segments,
                                  index=cache_index + tokens.shape[1])
        return logits, cache

    def run(apply):
        def both_calls(params):
            cache = init_cache(config, ROWS, 16) if cached else None
            positions = jnp.broadcast_to(jnp.arange(8), prompt.shape)
            prefill_logits, cache = apply(params, prompt, positions, cache)
            if not cached:
                return prefill_logits, prefill_logits, cache
            decode_logits, cache = apply(params, step, jnp.full_like(step, 8), cache)
            return prefill_logits, decode_logits, cache

        return jax.jit(both_calls)(params)

    scanned = run(lambda params, tokens, positions, cache: forward(config, params, tokens, positions, cache=cache))
    assert_trees_close(scanned, run(by_hand), atol=1e-6)


@pytest.mark.parametrize("shape", MESHES)
def test_kv_cache_splits_by_rows_and_kv_heads(shape):
    mesh = make_mesh(shape, AXES)
    config = CONFIG.replace(mesh=mesh)
    params = jax.device_put(params_of(CONFIG), param_shardings(config, mesh))
    tokens = np.ones((ROWS, 8), np.int32)

    @functools.partial(jax.jit, in_shardings=(param_shardings(config, mesh), rows_sharding(mesh)))
    def prefill(params, tokens):
        return forward(config, params, tokens, cache=init_cache(config, ROWS, 32), last_only=True)

    logits, cache = prefill(params, tokens)
    assert shard(cache.keys) == shard(cache.values) == expected_shards(shape)["cache"]
    assert shard(cache.segment_ids) == (ROWS // (shape[0] * shape[1]), 32)
    assert shard(logits) == (ROWS // (shape[0] * shape[1]), 1, 128 // shape[2])


@pytest.mark.parametrize("shape,gather", [(shape, True) for shape in MESHES] + [((2, 2, 2), False)])
def test_greedy_sampling_on_a_mesh_equals_one_device(shape, gather):
    rng = np.random.default_rng(2)
    prompts = [rng.integers(1, CONFIG.vocab_size, n).tolist() for n in (3, 9, 5, 17, 2, 12, 7, 4, 30, 6)]
    spec = SamplingSpec(max_new_tokens=80, temperature=0.0, stop_sequences=((5,), (17, 3)))
    params = params_of(CONFIG, scale=8)
    want = Sampler(CONFIG, params, batch_size=8).sample(prompts, spec, num_samples=2)

    mesh = make_mesh(shape, AXES)
    config = CONFIG.replace(mesh=mesh)
    sampler = Sampler(config, jax.device_put(params, param_shardings(config, mesh)), batch_size=8,
                      gather_weights=gather)
    got = sampler.sample(prompts, spec, num_samples=2)
    assert [[s.token_ids for s in row] for row in got.values()] == [[s.token_ids for s in row] for row in want.values()]
    # gathered, the decode weights are whole but for the model split; else the FSDP shards themselves
    decoding = sampler.decode_params()
    fsdp = shape[1] if not gather else 1
    assert shard(decoding["layers"]["attention"]["q"]["kernel"]) == expected_shards((1, fsdp, shape[2]))["q"]
    assert shard(decoding["embed"]["embedding"]) == expected_shards((1, fsdp, shape[2]))["embed"]
    # each device decodes its own rows: a batch of 8 prompts x 2 samples, 16 / (data x fsdp) a device
    output = sampler._dispatch(decoding, prompts[:8], 32, spec, 2, jax.random.key(0))
    assert shard(output.tokens) == (16 // (shape[0] * shape[1]), 80)
    lengths = [len(s.token_ids) for row in want.values() for s in row]
    assert min(lengths) < 64 < max(lengths)  # rows end early and late: the compacted phases ran too


def test_hf_import_writes_each_layer_into_the_stacked_shards(qwen2_folder):
    """Loading onto a mesh fills the stacked parameters layer by layer where the rules put them, with
    the values a single-device load reads."""
    mesh = make_mesh((1, 2, 4), AXES)
    on_mesh = load_hf(qwen2_folder, mesh=mesh, with_tokenizer=False)
    single = load_hf(qwen2_folder, with_tokenizer=False)
    layout = param_shardings(on_mesh.config, mesh)
    assert on_mesh.params["layers"]["attention"]["q"]["kernel"].shape[0] == on_mesh.config.num_layers
    for array, sharding in zip(jax.tree.leaves(on_mesh.params), jax.tree.leaves(layout)):
        assert array.sharding.is_equivalent_to(sharding, array.ndim)
    jax.tree.map(np.testing.assert_array_equal, on_mesh.params, single.params)


def test_the_gathered_copy_in_the_compute_dtype_samples_what_the_float32_shards_do():
    """bfloat16 compute over float32 parameters: the copy gathered for sampling is cast to bfloat16
    (half the memory), and every use of a parameter casts to bfloat16 anyway, so the samples agree."""
    rng = np.random.default_rng(3)
    prompts = [rng.integers(1, CONFIG.vocab_size, n).tolist() for n in (3, 9, 5, 17, 2, 12, 7, 4)]
    spec = SamplingSpec(max_new_tokens=24, temperature=1.0)
    mesh = make_mesh((1, 8, 1), AXES)
    config = CONFIG.replace(mesh=mesh, dtype="bfloat16")
    params = jax.device_put(params_of(CONFIG, scale=8), param_shardings(config, mesh))
    gathered, sharded = (Sampler(config, params, batch_size=8, gather_weights=gather) for gather in (True, False))
    assert {x.dtype for x in jax.tree.leaves(gathered.decode_params())} == {jnp.dtype(jnp.bfloat16)}
    assert {x.dtype for x in jax.tree.leaves(sharded.decode_params())} == {jnp.dtype(jnp.float32)}
    got, want = (s.sample(prompts, spec, num_samples=2, seed=4) for s in (gathered, sharded))
    assert [[s.token_ids for s in row] for row in got.values()] == [[s.token_ids for s in row] for row in want.values()]
