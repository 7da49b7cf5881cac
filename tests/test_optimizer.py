"""Mixed precision: bfloat16 parameters keep float32 Adam moments, and their update is the float32
update rounded once."""

import jax
import jax.numpy as jnp
import numpy as np

from sv_jax.training.optimizer import make_optimizer


def test_bfloat16_parameters_keep_float32_moments_and_take_the_float32_update():
    optimizer, _ = make_optimizer(1e-2, total_steps=10, weight_decay=0.1)
    rng = np.random.default_rng(0)
    wide = {"w": jnp.asarray(rng.normal(size=(8, 8)), jnp.float32), "b": jnp.asarray(rng.normal(size=8), jnp.float32)}
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape) * 1e-3, jnp.float32), wide)
    narrow = jax.tree.map(lambda p: p.astype(jnp.bfloat16), wide)
    narrow_state = optimizer.init(narrow)
    assert {x.dtype for x in jax.tree.leaves(narrow_state) if x.ndim} == {jnp.dtype(jnp.float32)}
    wide_state = optimizer.init(jax.tree.map(lambda p: p.astype(jnp.float32), narrow))
    for _ in range(3):  # moments that would underflow in bfloat16 (grads ~1e-3: squares ~1e-6)
        narrow_updates, narrow_state = optimizer.update(jax.tree.map(lambda g: g.astype(jnp.bfloat16), grads),
                                                        narrow_state, narrow)
        wide_updates, wide_state = optimizer.update(jax.tree.map(lambda g: g.astype(jnp.bfloat16).astype(jnp.float32),
                                                                 grads), wide_state, narrow)
        assert all(u.dtype == jnp.bfloat16 for u in jax.tree.leaves(narrow_updates))
        for n, w in zip(jax.tree.leaves(narrow_updates), jax.tree.leaves(wide_updates)):
            np.testing.assert_array_equal(np.asarray(n, np.float32), np.asarray(w.astype(jnp.bfloat16), np.float32))
    for n, w in zip(jax.tree.leaves(narrow_state), jax.tree.leaves(wide_state)):
        np.testing.assert_array_equal(np.asarray(n), np.asarray(w))


def test_weight_decay_skips_norm_scales_of_stacked_layers():
    from sv_jax.models import ModelConfig, init_params

    config = ModelConfig(family="llama", vocab_size=64, hidden_size=16, intermediate_size=32, num_layers=3,
                         num_heads=2, num_kv_heads=2, head_dim=8)
    params = init_params(config, jax.random.key(0))
    optimizer, _ = make_optimizer(1.0, total_steps=10, warmup_steps=1, weight_decay=0.5)
    state = optimizer.init(params)
    zeros = jax.tree.map(jnp.zeros_like, params)
    for _ in range(2):  # the first step's learning rate is 0 (warm-up)
        updates, state = optimizer.update(zeros, state, params)
    moved = jax.tree.map(lambda u: bool(jnp.any(u != 0)), updates)  # zero gradients: only decay moves a parameter
    assert moved["layers"]["mlp"]["gate"]["kernel"] and moved["embed"]["embedding"]
    assert not moved["layers"]["attention_norm"]["scale"] and not moved["final_norm"]["scale"]
