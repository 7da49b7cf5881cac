"""Offline RL on responses sampled once from the SFT policy (the paper's third training mode): which
responses are learned, their fixed per-action baselines, and the per-action clipped objective.

Selection (host-side, on graded `Scored` responses): questions whose response accuracy lies in a
range; per question, a response holding a right attempt is a positive, cut right after the
verification of its first right attempt (nothing after a right attempt is learned); the others are
negatives, kept whole and subsampled to the number of positives; a response that does not alternate
solve / verify, or holds more than `max_actions` actions, is dropped first.

The objective treats an action (a solve or a verify; at the outcome level the whole response) as one
step: its ratio is exp(mean log π_θ − mean log π_ref over its tokens), its advantage the mean of its
tokens' advantages minus β times that mean log-ratio (no gradient through the KL part), and the loss
is PPO's clipped surrogate averaged over actions. The reference is the policy that sampled the data.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Hashable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sv_jax.trajectory import SOLVE, VERIFY
from sv_jax.training.advantages import baseline_keys
from sv_jax.training.ppo import PPOStep, policy_outputs
from sv_jax.training.rewards import Scored


QUESTIONS_A_SAMPLER_BATCH = 64  # when the stage samples its responses itself (and the memory plan's figure)


@dataclasses.dataclass(frozen=True)
class Selection:
    """The responses kept (indices into the scored list), how many of each one's tokens and actions
    are learned, its question's accuracy, and the count left after each filter (for the summary)."""

    kept: list[int]
    tokens: list[int]
    actions: list[int]
    accuracy: list[float]
    counts: dict[str, int]


def well_formed(scored: Scored, max_actions: int) -> bool:
    """Solve, verify, solve, verify, ... in pairs, at most `max_actions` in all, each action with
    tokens of its own (a response cut at the token limit may end on an empty one)."""
    kinds = [a.kind for a in scored.actions]
    paired = 0 < len(kinds) <= max_actions and kinds == [SOLVE, VERIFY] * (len(kinds) // 2)
    return paired and set(range(len(kinds))) <= set(scored.token_action.tolist())


def learned_part(scored: Scored) -> tuple[int, int]:
    """(tokens, actions) of a response that are learned: up to the end of the verification of its
    first right attempt, or all of it when no attempt is right."""
    if not any(scored.solve_correct):
        return len(scored.token_action), len(scored.actions)
    verification = 2 * scored.solve_correct.index(True) + 1
    return int(np.flatnonzero(scored.token_action == verification)[-1]) + 1, verification + 1


def select(scored: Sequence[Scored], questions: Sequence[int], accuracy_range: tuple[float, float],
           max_actions: int, rng: np.random.Generator) -> Selection:
    """The responses offline RL learns from (see the module docstring); `questions[i]` is response i's
    question. A question's accuracy is the share of all its responses whose final answer is right."""
    by_question: dict[int, list[int]] = defaultdict(list)
    for index, question in enumerate(questions):
        by_question[question].append(index)
    accuracy = {q: float(np.mean([scored[i].final_correct for i in members])) for q, members in by_question.items()}
    low, high = accuracy_range
    in_range = {q: members for q, members in by_question.items() if low <= accuracy[q] <= high}
    counts = {"responses": len(scored), "questions": len(by_question), "questions_in_range": len(in_range),
              "responses_in_range": sum(map(len, in_range.values())), "well_formed": 0, "positives": 0,
              "negatives": 0, "negatives_kept": 0}
    kept = []
    for question in sorted(in_range):
        formed = [i for i in in_range[question] if well_formed(scored[i], max_actions)]
        positives = [i for i in formed if any(scored[i].solve_correct)]
        negatives = [i for i in formed if not any(scored[i].solve_correct)]
        if len(negatives) > len(positives):
            negatives = sorted(rng.choice(negatives, len(positives), replace=False).tolist())
        counts["well_formed"] += len(formed)
        counts["positives"] += len(positives)
        counts["negatives"] += len([i for i in formed if not any(scored[i].solve_correct)])
        counts["negatives_kept"] += len(negatives)
        kept += sorted(positives + negatives)
    parts = [learned_part(scored[i]) for i in kept]
    return Selection(kept, [t for t, _ in parts], [a for _, a in parts], [accuracy[questions[i]] for i in kept],
                     counts)


def action_rewards(scored: Scored, actions: int, level: str) -> np.ndarray:
    """The rewards of a response's first `actions` actions (process level: as online process RL,
    bonuses included), or at the outcome level one reward for its last kept attempt."""
    if level == "outcome":
        last_solve = scored.solve_correct[(actions - 1) // 2]
        return np.array([1.0 if last_solve else -1.0], np.float32)
    return scored.action_rewards[:actions]


def fixed_baselines(rewards: Sequence[np.ndarray], accuracy: Sequence[float], kind: str,
                    min_count: int) -> list[np.ndarray]:
    """Each action's baseline: the mean reward of the actions sharing its key over all kept
    responses (`accuracy_position`: its question's accuracy and its position; `position`; `prefix`
    of earlier outcomes), 0 for a key fewer than `min_count` actions share."""
    keys = [_keys(kind, r, a) for r, a in zip(rewards, accuracy)]
    pooled: dict[Hashable, list[float]] = defaultdict(list)
    for response_keys, response_rewards in zip(keys, rewards):
        for key, reward in zip(response_keys, response_rewards):
            pooled[key].append(float(reward))
    means = {key: float(np.mean(values)) if len(values) >= min_count else 0.0 for key, values in pooled.items()}
    return [np.array([means[k] for k in response_keys], np.float32) for response_keys in keys]


def _keys(kind: str, rewards: np.ndarray, accuracy: float) -> list[Hashable]:
    if kind == "accuracy_position":
        return [(accuracy, position) for position in range(len(rewards))]
    return baseline_keys(kind, list(rewards > 0))


def action_loss(logprobs: jax.Array, reference_logprobs: jax.Array, advantages: jax.Array, action_ids: jax.Array,
                num_actions: int, clip: float, kl_coef: float,
                count: jax.Array | None = None) -> tuple[jax.Array, dict]:
    """The per-action clipped surrogate. All `[rows, time]`; `action_ids` numbers the batch's actions
    0 .. num_actions - 1 on their tokens, -1 elsewhere (not learned). The sum over actions is divided
    by `count`, the batch's actions by default (a micro-batch passes its whole minibatch's)."""
    learned = action_ids >= 0
    segments = jnp.where(learned, action_ids, num_actions).ravel()

    def per_action(values: jax.Array) -> jax.Array:
        summed = jax.ops.segment_sum(jnp.where(learned, values, 0.0).ravel(), segments, num_actions + 1)
        return summed[:num_actions]

    tokens = per_action(jnp.ones_like(logprobs))
    present = tokens > 0
    tokens = jnp.maximum(tokens, 1.0)
    log_ratio = per_action(logprobs - reference_logprobs) / tokens
    advantage = per_action(advantages) / tokens - kl_coef * jax.lax.stop_gradient(log_ratio)
    ratio = jnp.exp(log_ratio)
    surrogate = jnp.minimum(ratio * advantage, jnp.clip(ratio, 1 - clip, 1 + clip) * advantage)
    count = jnp.maximum(present.sum(), 1) if count is None else count
    metrics = {"clip_fraction": ((jnp.abs(ratio - 1) > clip) & present).sum() / count,
               "kl": (log_ratio * present).sum() / count}
    return -(surrogate * present).sum() / count, metrics


@dataclasses.dataclass(frozen=True)
class OfflineStep(PPOStep):
    """One update on a minibatch of stored responses: PPO's step (micro-batches, shardings) with the
    per-action objective. Batch: `inputs`, `targets`, `positions`, `segment_ids`, `action_ids`,
    `reference_logprobs` and `advantages`, all `[rows, time]`; `num_actions` bounds the action ids."""

    num_actions: int = 1

    def normalizer(self, batch) -> jax.Array:
        """The minibatch's actions (an action's tokens lie in one row, so in one micro-batch)."""
        ids = batch["action_ids"].ravel()
        tokens = jax.ops.segment_sum((ids >= 0).astype(jnp.float32), jnp.where(ids >= 0, ids, self.num_actions),
                                     self.num_actions + 1)[: self.num_actions]
        return jnp.maximum((tokens > 0).sum(), 1).astype(jnp.float32)

    def loss(self, params, micro, actions: jax.Array) -> tuple[jax.Array, dict]:
        logprobs, _, _ = policy_outputs(self.config, params, micro, self.temperature)
        total, metrics = action_loss(logprobs, micro["reference_logprobs"], micro["advantages"], micro["action_ids"],
                                     self.num_actions, self.clip, self.kl_coef, actions)
        tokens = (micro["action_ids"] >= 0).sum()  # learned tokens (the training loop's tokens_per_s)
        return total, {**metrics, "loss": total, "tokens": tokens}
