"""Token-level losses. Shapes: logits `[batch, time, vocab]`, everything else `[batch, time]`."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def token_log_probs(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """log p(target) at every position, `[batch, time]` (float32)."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]


def masked_cross_entropy(logits: jax.Array, targets: jax.Array, loss_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Cross-entropy summed over the positions, each weighted by `loss_mask` (0: not learned), and
    the sum of the weights.

    The caller divides the sums of the whole (global, accumulated) batch, so that every learned
    token weighs the same whatever sequence or micro-batch it sits in.
    """
    mask = loss_mask.astype(jnp.float32)
    return -jnp.sum(token_log_probs(logits, targets) * mask), jnp.sum(mask)


def token_kl(logits: jax.Array, reference_logits: jax.Array, mask: jax.Array) -> jax.Array:
    """Summed KL(policy || reference) of the next-token distributions over positions where mask is 1."""
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    log_q = jax.nn.log_softmax(reference_logits.astype(jnp.float32), axis=-1)
    kl = jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)
    return jnp.sum(kl * mask.astype(jnp.float32))
