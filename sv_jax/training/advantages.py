"""Baselines and advantages for PPO: critic-free group and keyed baselines (host-side NumPy, on
per-response and per-action rewards) and GAE with a value estimate (jitted, per token)."""

from __future__ import annotations

from typing import Hashable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def leave_one_out(rewards: np.ndarray) -> np.ndarray:
    """`rewards [groups, k]` minus, for each sample, the mean of the other k - 1 of its group
    (RLOO's baseline: unbiased, as no sample's reward enters its own baseline)."""
    k = rewards.shape[-1]
    if k < 2:
        raise ValueError("a leave-one-out baseline needs at least 2 samples a group")
    return rewards - (rewards.sum(-1, keepdims=True) - rewards) / (k - 1)


def leave_one_out_by_position(action_rewards: Sequence[np.ndarray], group: Sequence[int]) -> list[np.ndarray]:
    """Per-action rewards of each response minus the mean reward at the same action position over
    the other responses of its group that reached that position (none: no baseline)."""
    out = []
    for i, rewards in enumerate(action_rewards):
        peers = [action_rewards[j] for j in range(len(action_rewards)) if group[j] == group[i] and j != i]
        baseline = np.array([np.mean([p[k] for p in peers if len(p) > k]) if any(len(p) > k for p in peers) else 0.0
                             for k in range(len(rewards))], np.float32)
        out.append(rewards - baseline)
    return out


class KeyedMeanBaseline:
    """A running mean of action rewards per key: the action's position, (difficulty level, position),
    or the prefix of earlier action outcomes (what usually follows "wrong, caught"). Host-side state,
    saved with a run as a plain dict."""

    def __init__(self, momentum: float = 0.9):
        self.momentum = momentum
        self.means: dict[Hashable, float] = {}

    def __call__(self, keys: Sequence[Hashable]) -> np.ndarray:
        return np.array([self.means.get(k, 0.0) for k in keys], np.float32)

    def update(self, keys: Sequence[Hashable], rewards: Sequence[float]) -> None:
        batch: dict[Hashable, list[float]] = {}
        for key, reward in zip(keys, rewards):
            batch.setdefault(key, []).append(float(reward))
        for key, values in batch.items():
            old = self.means.get(key)
            mean = float(np.mean(values))
            self.means[key] = mean if old is None else self.momentum * old + (1 - self.momentum) * mean


def baseline_keys(kind: str, outcomes: Sequence[bool], level: int = 0) -> list[Hashable]:
    """The key of each action of a response whose actions had `outcomes` (a solve right, a verify
    matching the truth): by `position`, `level_position` or `prefix` of earlier outcomes. Keys are
    plain Python values: a running baseline is saved as JSON with each checkpoint."""
    outcomes = [bool(o) for o in outcomes]  # NumPy bools are not JSON
    if kind == "position":
        return list(range(len(outcomes)))
    if kind == "level_position":
        return [(level, k) for k in range(len(outcomes))]
    if kind == "prefix":
        return [tuple(outcomes[:k]) for k in range(len(outcomes))]
    raise ValueError(f"baseline {kind!r}; known: position, level_position, prefix")


@jax.jit
def gae(rewards: jax.Array, values: jax.Array, mask: jax.Array, gamma: float = 1.0, lam: float = 0.95):
    """Generalized advantage estimation over `[batch, time]` per-token rewards and value estimates,
    within each row's `mask`: (advantages, returns). The value after a row's last token is 0."""
    mask = mask.astype(jnp.float32)
    next_mask = jnp.concatenate([mask[:, 1:], jnp.zeros_like(mask[:, :1])], axis=1)
    next_values = jnp.concatenate([values[:, 1:], jnp.zeros_like(values[:, :1])], axis=1) * next_mask
    deltas = (rewards + gamma * next_values - values) * mask

    def backward(carry, column):
        delta, continues = column
        advantage = delta + gamma * lam * continues * carry
        return advantage, advantage

    _, advantages = jax.lax.scan(backward, jnp.zeros(rewards.shape[0]), (deltas.T, next_mask.T), reverse=True)
    advantages = advantages.T * mask
    return advantages, (advantages + values) * mask


def whiten(advantages: jax.Array, mask: jax.Array) -> jax.Array:
    """Advantages scaled to mean 0, variance 1 over the masked tokens."""
    mask = mask.astype(jnp.float32)
    count = jnp.maximum(mask.sum(), 1.0)
    mean = (advantages * mask).sum() / count
    variance = (((advantages - mean) * mask) ** 2).sum() / count
    return (advantages - mean) * jax.lax.rsqrt(variance + 1e-8) * mask
