"""The jitted language-model training step: masked cross-entropy, optional KL to a reference
policy, gradient accumulation inside the step.

A batch is a dict of `[micro_batches, batch, time]` int32 arrays: `inputs`, `targets` (the next
token of each input), `positions`, `segment_ids` (0 on padding; packing gives each example its own
id), `loss_mask` (the target's weight in the loss: 0 where it is not learned, usually 1) and
`kl_mask` (1 where the KL term applies).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from sv_jax.compilation import shared_jit
from sv_jax.models import ModelConfig, Params, forward, param_shardings
from sv_jax.sharding import batch_sharding, replicated, state_shardings
from sv_jax.training.losses import masked_cross_entropy
from sv_jax.training.token_stats import token_statistics

Batch = dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Params
    opt_state: optax.OptState


def init_train_state(params: Params, optimizer: optax.GradientTransformation) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))


def placed_train_state(params: Params, optimizer: optax.GradientTransformation, param_layout: Params,
                       mesh: Mesh) -> tuple[TrainState, TrainState]:
    """A fresh train state from a copy of `params` (left as they are: often the frozen reference),
    made on `mesh` with its parameters laid out as `param_layout` and each optimizer moment as its
    parameter; and that layout (a `TrainState` of shardings), for the step's `in_shardings`."""
    init = functools.partial(init_train_state, optimizer=optimizer)
    layout = state_shardings(jax.eval_shape(init, params), param_layout, optimizer, mesh)
    return shared_jit(init, in_shardings=(param_layout,), out_shardings=layout)(params), layout


@dataclasses.dataclass(frozen=True)
class LMStep:
    """Everything static about the step; hashable, so it can be a static argument of `jax.jit`."""

    config: ModelConfig
    optimizer: Any  # optax.GradientTransformation (a NamedTuple of functions: hashable)
    kl_coef: float = 0.0

    def losses(self, params: Params, micro: Batch, reference_params: Params | None):
        """Sums over one micro-batch: cross-entropy, learned tokens, KL, KL tokens. Logits are
        never whole (`token_statistics`)."""
        with_kl = self.kl_coef != 0.0 and reference_params is not None

        def hidden_states(weights: Params) -> jax.Array:
            return forward(self.config, weights, micro["inputs"], micro["positions"], micro["segment_ids"],
                           hidden_only=True)[0]

        reference = (reference_params, jax.lax.stop_gradient(hidden_states(reference_params))) if with_kl else None
        stats = token_statistics(self.config, params, hidden_states(params), micro["targets"], reference=reference)
        ce_sum, ce_count = masked_cross_entropy(stats["log_probs"], micro["loss_mask"])
        if not with_kl:
            return ce_sum, ce_count, jnp.zeros(()), jnp.zeros(())
        kl_mask = micro["kl_mask"].astype(jnp.float32)
        return ce_sum, ce_count, jnp.sum(stats["kl"] * kl_mask), kl_mask.sum()

    def __call__(self, state: TrainState, batch: Batch, reference_params: Params | None = None):
        """One optimizer update from all micro-batches: the loss is normalised by the learned tokens
        (their summed weights) of the whole batch (and the KL by its KL tokens), so accumulation
        changes nothing but memory."""
        learned_tokens = jnp.maximum(batch["loss_mask"].astype(jnp.float32).sum(), 1.0)
        kl_tokens = jnp.maximum(batch["kl_mask"].astype(jnp.float32).sum(), 1.0)

        def micro_gradients(carry, micro):
            def loss(params):
                ce_sum, ce_count, kl_sum, kl_count = self.losses(params, micro, reference_params)
                objective = ce_sum / learned_tokens + self.kl_coef * kl_sum / kl_tokens
                return objective, (ce_sum, kl_sum)

            grads, (ce_sum, kl_sum) = jax.grad(loss, has_aux=True)(state.params)
            grad_total, ce_total, kl_total = carry
            return (jax.tree.map(jnp.add, grad_total, grads), ce_total + ce_sum, kl_total + kl_sum), None

        zeros = jax.tree.map(jnp.zeros_like, state.params)
        if self.config.mesh is not None:  # the accumulated gradients sharded as the parameters
            zeros = jax.lax.with_sharding_constraint(zeros, param_shardings(self.config, self.config.mesh))
        (grads, ce_sum, kl_sum), _ = jax.lax.scan(micro_gradients, (zeros, 0.0, 0.0), batch)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": ce_sum / learned_tokens,
            "kl": kl_sum / kl_tokens,
            "grad_norm": optax.tree.norm(grads),
            "tokens": (batch["segment_ids"] > 0).sum(),
        }
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


def jit_lm_step(step: LMStep, layout: TrainState, mesh: Mesh, with_reference: bool = False):
    """`step` jitted with its layout: the state as `layout` (donated: updated in place), the
    `[micro_batches, rows, time]` batch split by rows, the reference policy (a third argument
    `with_reference`) laid out as the parameters, metrics replicated."""
    reference = (layout.params,) if with_reference else ()
    return shared_jit(step, donate_argnums=0, in_shardings=(layout, batch_sharding(mesh), *reference),
                      out_shardings=(layout, replicated(mesh)))
