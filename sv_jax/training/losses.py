"""Token-level losses. Shapes: logits `[batch, time, vocab]`, everything else `[batch, time]`."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def token_log_probs(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """log p(target) at every position, `[batch, time]` (float32)."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]


def masked_cross_entropy(target_log_probs: jax.Array, loss_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Cross-entropy (of `token_log_probs`) summed over the positions, each weighted by `loss_mask`
    (0: not learned), and the sum of the weights.

    The caller divides the sums of the whole (global, accumulated) batch, so that every learned
    token weighs the same whatever sequence or micro-batch it sits in.
    """
    mask = loss_mask.astype(jnp.float32)
    return -jnp.sum(target_log_probs * mask), jnp.sum(mask)


def token_kl(logits: jax.Array, reference_logits: jax.Array) -> jax.Array:
    """KL(policy || reference) of the next-token distributions at every position, `[batch, time]`."""
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    log_q = jax.nn.log_softmax(reference_logits.astype(jnp.float32), axis=-1)
    return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def token_entropy(logits: jax.Array) -> jax.Array:
    """Entropy of each next-token distribution, `[batch, time]`."""
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)


def over_time_chunks(per_token: Callable[..., tuple[jax.Array, ...]], chunk: int,
                     *arrays: jax.Array) -> tuple[jax.Array, ...]:
    """`per_token(*arrays)` (a tuple of `[batch, time]` arrays from `[batch, time, ...]` inputs)
    computed `chunk` time steps at a time when the rows are longer, each chunk under
    `jax.checkpoint`: only one chunk's logits exist at a time, forward or backward. Per-token
    results do not depend on the chunking; rows `chunk` does not divide go whole."""
    time = arrays[0].shape[1]
    if chunk <= 0 or time <= chunk or time % chunk:
        return per_token(*arrays)
    chunks = time // chunk
    split = lambda x: jnp.moveaxis(x.reshape(x.shape[0], chunks, chunk, *x.shape[2:]), 1, 0)  # noqa: E731
    results = jax.lax.map(jax.checkpoint(lambda pieces: per_token(*pieces)), tuple(map(split, arrays)))
    return tuple(jnp.moveaxis(r, 0, 1).reshape(r.shape[1], time) for r in results)
