"""PPO as a whole: a toy run raises its reward, outcome-level PPO with one epoch and a
leave-one-out baseline is RLOO (its gradient is RLOO's, scaled by a constant), and neither packing
nor gradient accumulation changes an update."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sv_jax.models import ModelConfig, init_params, param_shardings
from sv_jax.sampling import Sampler, SamplingSpec
from sv_jax.sharding import make_mesh, replicated, rows_sharding
from sv_jax.training.advantages import leave_one_out
from sv_jax.training.lm import init_train_state, placed_train_state
from sv_jax.training.optimizer import make_optimizer
from sv_jax.training.ppo import PPOStep, init_value_head, policy_outputs, ppo_loss
from sv_jax.training.rollout import Packing, pack_rows, place, row_ladder

CONFIG = ModelConfig(family="llama", vocab_size=16, hidden_size=32, intermediate_size=48, num_layers=2,
                     num_heads=4, num_kv_heads=2, head_dim=8)
PROMPTS = [[1, 2], [3, 4, 5], [6], [7, 8]]
TARGET = 9  # the toy reward: the share of a response's tokens that are this one
K, NEW = 8, 6


def rollout(sampler, seed):
    samples = [s for row in sampler.sample(PROMPTS, SamplingSpec(max_new_tokens=NEW), K, seed).values() for s in row]
    rewards = np.array([np.mean(np.array(s.token_ids) == TARGET) for s in samples], np.float32)
    batch = pack_rows([p for p in PROMPTS for _ in range(K)], [s.token_ids for s in samples], 16)
    advantages = leave_one_out(rewards.reshape(-1, K)).reshape(-1)
    batch["advantages"] = place([np.full(NEW, a) for a in advantages], batch["offsets"], 16)
    del batch["offsets"]
    return {name: jnp.asarray(value) for name, value in batch.items()}, rewards


def test_a_short_ppo_run_raises_the_mean_reward():
    optimizer, _ = make_optimizer(3e-3, 30, 0, clip_norm=1.0)
    state = init_train_state({"policy": init_params(CONFIG, jax.random.key(0))}, optimizer)
    step = jax.jit(PPOStep(CONFIG, optimizer, temperature=1.0, kl_coef=0.1))
    reference = {"policy": state.params["policy"]}
    sampler = Sampler(CONFIG, state.params["policy"], batch_size=len(PROMPTS))
    means = []
    for iteration in range(30):
        sampler.params = state.params["policy"]
        batch, rewards = rollout(sampler, iteration)
        means.append(rewards.mean())
        batch["old_logprobs"] = policy_outputs(CONFIG, state.params, batch, 1.0)[0]
        batch["reference_logprobs"] = policy_outputs(CONFIG, reference, batch, 1.0)[0]
        for _ in range(2):
            state, metrics = step(state, batch)
    assert np.mean(means[:5]) < 0.15 and np.mean(means[-5:]) > 2 * np.mean(means[:5]) + 0.1, means
    assert float(metrics["kl"]) > 0


def test_one_unclipped_epoch_with_leave_one_out_is_rloo():
    params = {"policy": init_params(CONFIG, jax.random.key(1))}
    batch, _ = rollout(Sampler(CONFIG, params["policy"], batch_size=len(PROMPTS)), 0)
    batch["advantages"] = batch["advantages"] * 3.0 + 0.5 * batch["response_mask"]  # rewards that vary a lot
    mask = batch["response_mask"].astype(jnp.float32)
    old = jax.lax.stop_gradient(policy_outputs(CONFIG, params, batch, 1.0)[0])

    def ppo(p):
        return ppo_loss(policy_outputs(CONFIG, p, batch, 1.0)[0], old, batch["advantages"], mask, clip=1e9)[0]

    def rloo(p):  # -mean over responses of (R - mean of the others' R) * log pi(response)
        sequence_logprob = (policy_outputs(CONFIG, p, batch, 1.0)[0] * mask).sum(-1)
        advantage = (batch["advantages"] * mask).sum(-1) / mask.sum(-1)  # each row's one value
        return -(advantage * sequence_logprob).mean()

    scale = mask.shape[0] / mask.sum()  # PPO averages over tokens, RLOO over responses
    for got, want in zip(jax.tree.leaves(jax.grad(ppo)(params)), jax.tree.leaves(jax.grad(rloo)(params))):
        np.testing.assert_allclose(got, scale * want, rtol=2e-4, atol=1e-7)


def test_a_packed_minibatch_gives_the_padded_ones_loss_and_gradient():
    params = {"policy": init_params(CONFIG, jax.random.key(2))}
    optimizer, _ = make_optimizer(1e-3, 10, 0)
    batch, _ = rollout(Sampler(CONFIG, params["policy"], batch_size=len(PROMPTS)), 0)
    batch["old_logprobs"] = policy_outputs(CONFIG, params, batch, 1.0)[0] - 0.05 * batch["response_mask"]
    batch["reference_logprobs"] = batch["old_logprobs"] + 0.1 * batch["response_mask"]
    step = jax.jit(PPOStep(CONFIG, optimizer, temperature=1.0, kl_coef=0.1))
    host = {name: np.asarray(value) for name, value in batch.items()}
    packing = Packing.of(host["segment_ids"], range(len(host["inputs"])), row_ladder(len(host["inputs"]), 1, 4))
    assert packing.real.shape[0] < len(host["inputs"])  # 32 responses in fewer rows
    padded_state, padded = step(init_train_state(params, optimizer), batch)
    packed_state, packed = step(init_train_state(params, optimizer), packing.pack(host))
    for name in ("loss", "kl", "grad_norm"):
        np.testing.assert_allclose(packed[name], padded[name], rtol=1e-5, atol=1e-7)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), packed_state.params, padded_state.params)


@pytest.mark.parametrize("mesh_shape", [None, (8,)])
def test_micro_batches_accumulate_to_the_unaccumulated_update(mesh_shape):
    params = {"policy": init_params(CONFIG, jax.random.key(3)), "value": init_value_head(CONFIG)}
    params["value"]["kernel"] = jnp.linspace(-0.2, 0.2, CONFIG.hidden_size)
    optimizer, _ = make_optimizer(1e-3, 10, 0, clip_norm=1.0)
    batch, _ = rollout(Sampler(CONFIG, params["policy"], batch_size=len(PROMPTS)), 0)
    # the micro-batches (rows 0, 2, ... and 1, 3, ...) learn unequal token counts: a per-slice mean would differ
    batch["response_mask"] = batch["response_mask"].at[0:16:2].set(0).at[1, :4].set(0)
    batch["old_logprobs"] = policy_outputs(CONFIG, params, batch, 1.0)[0] - 0.3 * batch["response_mask"]
    batch["reference_logprobs"] = batch["old_logprobs"] + 0.1 * batch["response_mask"]
    batch["returns"] = batch["advantages"] + 0.5
    mesh = make_mesh(mesh_shape, ("data",)) if mesh_shape else None
    config = CONFIG.replace(mesh=mesh)
    results = []
    for micro_batches in (1, 2):
        step = PPOStep(config, optimizer, temperature=1.0, clip=0.1, kl_coef=0.1, entropy_coef=0.01,
                       micro_batches=micro_batches)
        if mesh is None:
            results.append(jax.jit(step)(init_train_state(params, optimizer), batch))
            continue
        layout = {"policy": param_shardings(config, mesh), "value": replicated(mesh)}
        state, state_layout = placed_train_state(params, optimizer, layout, mesh)
        update = jax.jit(step, in_shardings=(state_layout, rows_sharding(mesh)),
                         out_shardings=(state_layout, replicated(mesh)))
        results.append(update(state, jax.device_put(batch, rows_sharding(mesh))))
    (whole_state, whole), (accumulated_state, accumulated) = results
    assert set(accumulated) == set(whole) == {"clip_fraction", "kl", "entropy", "value_loss", "loss", "grad_norm"}
    assert float(whole["clip_fraction"]) > 0
    for name in whole:
        np.testing.assert_allclose(accumulated[name], whole[name], rtol=1e-6, atol=1e-6, err_msg=name)
    # Adam's first step is lr * g / (|g| + eps): where |g| is near eps, the last bit of g moves the
    # parameter by ~1e-6 (seen without LLVM's optimizations), so parameters match to the mesh tests' 1e-5.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-5), accumulated_state.params,
                 whole_state.params)
