"""PPO's per-token objective: the clipped surrogate on per-token advantages, a KL to the frozen
reference policy (as a loss term; as a reward penalty it is folded into the rewards instead), an
optional entropy bonus and value loss, averaged over the response tokens of the batch; and the
jitted update step that applies it to a minibatch of rollout rows, accumulated over micro-batches."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from sv_jax.models import ModelConfig, Params, forward, param_shardings
from sv_jax.sharding import replicated, rows_sharding
from sv_jax.training.lm import Batch, TrainState
from sv_jax.training.token_stats import token_statistics


def ppo_loss(logprobs: jax.Array, old_logprobs: jax.Array, advantages: jax.Array, mask: jax.Array,
             clip: float = 0.2, reference_logprobs: jax.Array | None = None, kl_coef: float = 0.0,
             entropy: jax.Array | None = None, entropy_coef: float = 0.0,
             count: jax.Array | None = None, kl_weights: jax.Array | None = None) -> tuple[jax.Array, dict]:
    """All `[batch, time]`: log-probs of the sampled tokens under the policy being trained and
    under the policy that sampled them, advantages, and the mask of learned tokens. The KL estimate
    is k3 (`exp(d) - d - 1` with `d = reference - policy`): non-negative, zero when they agree; the
    loss weighs each token's by `kl_weights` (1 by default), the `kl` metric does not.
    Sums over tokens are divided by `count`, the learned tokens of the batch by default; a micro-batch
    passes its whole minibatch's, so that its loss and metrics add up to the minibatch's."""
    mask = mask.astype(jnp.float32)
    count = jnp.maximum(mask.sum(), 1.0) if count is None else count
    ratio = jnp.exp(logprobs - old_logprobs)
    surrogate = jnp.minimum(ratio * advantages, jnp.clip(ratio, 1 - clip, 1 + clip) * advantages)
    loss = -(surrogate * mask).sum() / count
    metrics = {"clip_fraction": ((jnp.abs(ratio - 1) > clip) * mask).sum() / count}
    if reference_logprobs is not None:
        diff = reference_logprobs - logprobs
        per_token = (jnp.exp(diff) - diff - 1) * mask
        weighted = per_token if kl_weights is None else per_token * kl_weights
        loss = loss + kl_coef * weighted.sum() / count
        metrics["kl"] = per_token.sum() / count
    if entropy is not None:
        mean_entropy = (entropy * mask).sum() / count
        loss = loss - entropy_coef * mean_entropy
        metrics["entropy"] = mean_entropy
    return loss, metrics


def policy_outputs(config: ModelConfig, params: Params, batch: Batch, temperature: float,
                   with_entropy: bool = False) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
    """Per-token log-probs of `batch["targets"]` under the temperature-scaled policy (the
    distribution the rollout sampled from), their entropies if asked, and the value head's
    estimates if `params` has one. `params`: `{"policy": decoder params, "value"?: head}`.
    Logits are never whole (`token_statistics`)."""
    hidden, _ = forward(config, params["policy"], batch["inputs"], batch["positions"], batch["segment_ids"],
                        hidden_only=True)
    stats = token_statistics(config, params["policy"], hidden, batch["targets"], temperature, with_entropy)
    values = None
    if "value" in params:
        values = hidden.astype(jnp.float32) @ params["value"]["kernel"] + params["value"]["bias"]
    return stats["log_probs"], stats.get("entropy"), values


def init_value_head(config: ModelConfig) -> Params:
    """A linear value head on the final hidden state, starting at 0 everywhere."""
    return {"kernel": jnp.zeros((config.hidden_size,), jnp.float32), "bias": jnp.zeros((), jnp.float32)}


@dataclasses.dataclass(frozen=True)
class PPOStep:
    """One PPO update on a minibatch of rollout rows (jit it with the step static).

    The batch holds `[rows, time]` arrays: `inputs`, `targets`, `positions`, `segment_ids`,
    `response_mask` (1 on sampled tokens), `old_logprobs`, `reference_logprobs`, `advantages`,
    `returns` when the state has a value head, and optionally `kl_weights` (each token's factor on
    the KL term). Its rows are split into `micro_batches` slices whose gradients are summed (a
    `lax.scan`: the memory of one slice), each slice's loss normalised by the whole minibatch's
    response tokens, so that accumulation changes nothing but memory.
    """

    config: ModelConfig
    optimizer: Any  # optax.GradientTransformation (hashable)
    temperature: float
    clip: float = 0.2
    kl_coef: float = 0.0  # KL to the reference as a loss term (0 when it is a reward penalty)
    entropy_coef: float = 0.0
    value_coef: float = 0.5
    micro_batches: int = 1

    def loss(self, params: Params, micro: Batch, tokens: jax.Array) -> tuple[jax.Array, dict]:
        """One micro-batch's share of the minibatch's loss and metrics (`tokens`: its response tokens)."""
        mask = micro["response_mask"].astype(jnp.float32)
        logprobs, entropy, values = policy_outputs(self.config, params, micro, self.temperature, self.entropy_coef > 0)
        total, metrics = ppo_loss(logprobs, micro["old_logprobs"], micro["advantages"], mask, self.clip,
                                  micro["reference_logprobs"], self.kl_coef, entropy, self.entropy_coef, tokens,
                                  micro.get("kl_weights"))
        if values is not None:
            value_loss = 0.5 * (((values - micro["returns"]) ** 2) * mask).sum() / tokens
            total = total + self.value_coef * value_loss
            metrics["value_loss"] = value_loss
        return total, {**metrics, "loss": total}

    def split(self, array: jax.Array) -> jax.Array:
        """`[rows, ...]` to `[micro_batches, rows / micro_batches, ...]`, slice i holding rows i,
        i + micro_batches, ...: each device's block of rows feeds every slice equally."""
        split = array.reshape(-1, self.micro_batches, *array.shape[1:]).swapaxes(0, 1)
        if self.config.mesh is None:
            return split
        return jax.lax.with_sharding_constraint(split, rows_sharding(self.config.mesh, split.ndim, rows_axis=1))

    def normalizer(self, batch: Batch) -> jax.Array:
        """What the minibatch's loss is averaged over: its response tokens."""
        return jnp.maximum(batch["response_mask"].astype(jnp.float32).sum(), 1.0)

    def __call__(self, state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
        tokens = self.normalizer(batch)

        def accumulate(grads, micro):
            (_, metrics), micro_grads = jax.value_and_grad(self.loss, has_aux=True)(state.params, micro, tokens)
            return jax.tree.map(jnp.add, grads, micro_grads), metrics

        zeros = jax.tree.map(jnp.zeros_like, state.params)
        if self.config.mesh is not None:  # the accumulated gradients sharded as the parameters
            mesh = self.config.mesh
            zeros = jax.lax.with_sharding_constraint(zeros, {name: param_shardings(self.config, mesh)
                                                             if name == "policy" else replicated(mesh)
                                                             for name in zeros})
        grads, metrics = jax.lax.scan(accumulate, zeros, jax.tree.map(self.split, batch))
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {**jax.tree.map(lambda m: m.sum(0), metrics), "grad_norm": optax.tree.norm(grads)}
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics
