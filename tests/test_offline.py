"""Offline RL's selection, fixed baselines and per-action objective (`sv_jax.training.offline`),
against hand-picked responses and hand counts."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sv_jax.models import ModelConfig, init_params
from sv_jax.trajectory import SOLVE, VERIFY, Action
from sv_jax.training.lm import init_train_state
from sv_jax.training.offline import OfflineStep, action_loss, fixed_baselines, learned_part, select
from sv_jax.training.ppo import policy_outputs
from sv_jax.training.rewards import Scored


def response(*attempts: bool, kinds: str = "") -> Scored:
    """A response of solve / verify pairs, one per attempt (right or wrong), 2 tokens an action and a
    cue token between actions; `kinds` overrides the action kinds ("s" / "v")."""
    kinds = [SOLVE if k == "s" else VERIFY for k in kinds] or [SOLVE, VERIFY] * len(attempts)
    actions = [Action(kind, f"{kind} {i}") for i, kind in enumerate(kinds)]
    owner = np.concatenate([[i, i, -1] for i in range(len(actions))]).astype(np.int32)
    rewards = np.array([1.0 if (attempts[i // 2] if i // 2 < len(attempts) else False) else -1.0
                        for i in range(len(actions))], np.float32)
    retries = np.array([kind == SOLVE and i > 0 for i, kind in enumerate(kinds)])
    return Scored(actions, owner, rewards, list(attempts), [str(a) for a in attempts], True, retries)


def test_a_positive_is_cut_after_the_verification_of_its_first_right_attempt():
    assert learned_part(response(False, True, True)) == (3 * 3 + 2, 4)  # wrong, check, right, check
    assert learned_part(response(True)) == (5, 2)
    assert learned_part(response(False, False)) == (12, 4)  # a negative: whole


def test_selection_keeps_exactly_the_hand_picked_responses():
    responses = [
        # question 0: 2 of 5 right (0.4): two positives, two of the three negatives kept
        response(True), response(False, True), response(False), response(False, False), response(False),
        # question 1: 0 of 2 right: out of range
        response(False), response(False),
        # question 2: 2 of 6 right (1/3): one positive, the other right one does not alternate, one
        # negative holds 12 actions, one of the three well-formed negatives kept
        response(True), response(True, kinds="ss"), response(*[False] * 6),
        response(False), response(False, False), response(False),
    ]
    questions = [0] * 5 + [1] * 2 + [2] * 6
    chosen = select(responses, questions, (0.1, 0.7), 10, np.random.default_rng(0))
    kept_negatives = [i for i in chosen.kept if not any(responses[i].solve_correct)]
    assert [i for i in chosen.kept if i not in kept_negatives] == [0, 1, 7]
    assert len(kept_negatives) == 3 and set(kept_negatives[:2]) < {2, 3, 4} and kept_negatives[2] in (10, 11, 12)
    assert chosen.counts == {"responses": 13, "questions": 3, "questions_in_range": 2, "responses_in_range": 11,
                             "well_formed": 9, "positives": 3, "negatives": 6, "negatives_kept": 3}
    assert chosen.accuracy == [0.4] * 4 + [1 / 3] * 2
    assert chosen.actions[:2] == [2, 4]  # response 1 is cut after the check of its right retry


def test_the_fixed_baseline_is_the_mean_reward_of_each_accuracy_and_position_over_enough_actions():
    rewards = [np.array([1.0, 1.0]), np.array([-1.0, 1.0, 1.0, 1.0]), np.array([-1.0, -1.0]), np.array([1.0, 1.0])]
    accuracy = [0.5, 0.5, 0.5, 0.25]
    baselines = fixed_baselines(rewards, accuracy, "accuracy_position", min_count=2)
    # (0.5, 0): 1, -1, -1 -> -1/3; (0.5, 1): 1, 1, -1 -> 1/3; (0.5, 2) and (0.5, 3): one action each -> 0;
    # (0.25, 0) and (0.25, 1): one action each -> 0
    want = [[-1 / 3, 1 / 3], [-1 / 3, 1 / 3, 0, 0], [-1 / 3, 1 / 3], [0, 0]]
    for got, expected in zip(baselines, want):
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    by_position = fixed_baselines(rewards, accuracy, "position", min_count=4)
    np.testing.assert_allclose(by_position[1], [0.0, 0.5, 0.0, 0.0])  # positions 0, 1: 4 actions each
    np.testing.assert_allclose(fixed_baselines(rewards, accuracy, "position", min_count=5)[1], [0.0] * 4)


def test_the_action_loss_is_a_clipped_surrogate_on_each_actions_mean_log_ratio():
    """Two actions in one row, by hand: mean log-ratios 0.1 and -0.5, advantages 2 and -1, clip 0.2."""
    logprobs = jnp.array([[-1.0, -1.2, 0.0, -2.0, -2.0]])
    reference = jnp.array([[-1.1, -1.3, 0.0, -1.5, -1.5]])
    advantages = jnp.array([[2.0, 2.0, 9.0, -1.0, -1.0]])
    ids = jnp.array([[0, 0, -1, 1, 1]])
    loss, metrics = action_loss(logprobs, reference, advantages, ids, num_actions=3, clip=0.2, kl_coef=0.0)
    first = min(np.exp(0.1) * 2, np.clip(np.exp(0.1), 0.8, 1.2) * 2)
    second = min(np.exp(-0.5) * -1, np.clip(np.exp(-0.5), 0.8, 1.2) * -1)
    assert float(loss) == pytest.approx(-(first + second) / 2, rel=1e-6)
    assert float(metrics["clip_fraction"]) == pytest.approx(0.5)
    with_kl, _ = action_loss(logprobs, reference, advantages, ids, num_actions=3, clip=0.2, kl_coef=0.15)
    first = min(np.exp(0.1) * (2 - 0.015), np.clip(np.exp(0.1), 0.8, 1.2) * (2 - 0.015))
    second = min(np.exp(-0.5) * (-1 + 0.075), np.clip(np.exp(-0.5), 0.8, 1.2) * (-1 + 0.075))
    assert float(with_kl) == pytest.approx(-(first + second) / 2, rel=1e-6)


CONFIG = ModelConfig(family="qwen2", vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2,
                     num_heads=4, num_kv_heads=2, head_dim=8)


def test_at_step_0_every_ratio_is_1_and_the_update_raises_positive_actions_and_lowers_negative_ones():
    """Two responses in one row each: a positive-advantage action and a negative one. The reference
    is the policy itself, so every ratio starts at 1; one small step raises the log-probs of the
    positive action's tokens and lowers the negative one's."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 64, (2, 13)).astype(np.int32)
    ids = np.full((2, 12), -1, np.int32)
    ids[0, 4:9], ids[1, 3:10] = 0, 1
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "segment_ids": np.ones((2, 12), np.int32),
             "positions": np.tile(np.arange(12, dtype=np.int32), (2, 1)), "action_ids": ids,
             "advantages": np.where(ids == 0, 1.0, np.where(ids == 1, -1.0, 0.0)).astype(np.float32)}
    params = {"policy": init_params(CONFIG, jax.random.key(0))}
    before, _, _ = policy_outputs(CONFIG, params, batch, 1.0)
    batch["reference_logprobs"] = np.asarray(before)
    optimizer = optax.sgd(0.5)
    step = OfflineStep(CONFIG, optimizer, temperature=1.0, clip=0.2, kl_coef=0.15, num_actions=4, micro_batches=2)
    state, metrics = jax.jit(step)(init_train_state(params, optimizer), batch)
    assert float(metrics["kl"].sum()) == pytest.approx(0.0, abs=1e-7)  # ratio 1: log-ratio 0
    assert float(metrics["clip_fraction"].sum()) == 0.0
    after, _, _ = policy_outputs(CONFIG, state.params, batch, 1.0)
    change = np.asarray(after - before)
    assert change[ids == 0].mean() > 0 > change[ids == 1].mean()
