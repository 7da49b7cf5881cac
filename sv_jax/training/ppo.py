"""PPO's per-token objective: the clipped surrogate on per-token advantages, a KL to the frozen
reference policy (as a loss term; as a reward penalty it is folded into the rewards instead), and an
optional entropy bonus. Averaged over the response tokens of the batch."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def ppo_loss(logprobs: jax.Array, old_logprobs: jax.Array, advantages: jax.Array, mask: jax.Array,
             clip: float = 0.2, reference_logprobs: jax.Array | None = None, kl_coef: float = 0.0,
             entropy: jax.Array | None = None, entropy_coef: float = 0.0) -> tuple[jax.Array, dict]:
    """All `[batch, time]`: log-probs of the sampled tokens under the policy being trained and
    under the policy that sampled them, advantages, and the mask of learned tokens. The KL estimate
    is k3 (`exp(d) - d - 1` with `d = reference - policy`): non-negative, zero when they agree."""
    mask = mask.astype(jnp.float32)
    count = jnp.maximum(mask.sum(), 1.0)
    ratio = jnp.exp(logprobs - old_logprobs)
    surrogate = jnp.minimum(ratio * advantages, jnp.clip(ratio, 1 - clip, 1 + clip) * advantages)
    loss = -(surrogate * mask).sum() / count
    metrics = {"clip_fraction": ((jnp.abs(ratio - 1) > clip) * mask).sum() / count}
    if reference_logprobs is not None:
        diff = reference_logprobs - logprobs
        kl = ((jnp.exp(diff) - diff - 1) * mask).sum() / count
        loss = loss + kl_coef * kl
        metrics["kl"] = kl
    if entropy is not None:
        mean_entropy = (entropy * mask).sum() / count
        loss = loss - entropy_coef * mean_entropy
        metrics["entropy"] = mean_entropy
    return loss, metrics


def token_entropy(logits: jax.Array) -> jax.Array:
    """Entropy of each next-token distribution, `[batch, time]`."""
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)
