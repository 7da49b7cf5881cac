"""Stage 2's numerics against hand-made arrays and NumPy references: reward placement, baselines,
GAE, and the direction of the PPO gradient."""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sv_jax.tasks import builtin
from sv_jax.training.advantages import (KeyedMeanBaseline, baseline_keys, gae, leave_one_out,
                                        leave_one_out_by_position, whiten)
from sv_jax.training.ppo import ppo_loss
from sv_jax.training.rewards import outcome_tokens, process_tokens, score_response

CUES = builtin.CUES
# A response as its sampled tokens' texts: a wrong attempt, a verification that catches it, a right
# attempt, a verification that confirms it, EOS (the empty piece).
PIECES = [" 5", " .", "\nCheck:", " no", " .", " So the answer is wrong .", "\nRetry:", " 7", " .",
          "\nCheck:", " yes", " So the answer is right .", ""]
#           a0    a0   cue  a1   a1   a1   cue  a2   a2   cue  a3   a3   eos


def grade(text):
    """(right?, answer): 7 is the right answer; the answer is the text's first number."""
    found = re.search(r"\d+", text)
    return "7" in text, found and found.group()


def test_actions_and_their_rewards():
    scored = score_response(PIECES, ended=True, cues=CUES, grade=grade)
    assert [a.kind for a in scored.actions] == ["solve", "verify", "solve", "verify"]
    np.testing.assert_array_equal(scored.token_action, [0, 0, -1, 1, 1, 1, -1, 2, 2, -1, 3, 3, -1])
    np.testing.assert_array_equal(scored.action_rewards, [-1, 1, 1, 1])
    assert scored.ended and scored.final_correct


def test_a_retry_is_a_solve_after_a_rejection():
    scored = score_response(PIECES, ended=True, cues=CUES, grade=grade)
    np.testing.assert_array_equal(scored.retries, [False, False, True, False])
    np.testing.assert_array_equal(scored.retry_tokens(), scored.token_action == 2)
    confirmed_twice = [*PIECES[:2], *PIECES[9:12], "\nRetry:", " 7", " .", *PIECES[9:]]
    assert not score_response(confirmed_twice, ended=True, cues=CUES, grade=grade).retries.any()


def test_action_credit_places_each_actions_advantage_on_its_tokens():
    scored = score_response(PIECES, ended=True, cues=CUES, grade=grade)
    advantages = np.array([-1.5, 0.5, 1.0, 0.25], np.float32)
    placed = process_tokens(scored, advantages, 15, "action")
    np.testing.assert_array_equal(placed, [-1.5, -1.5, 0, .5, .5, .5, 0, 1, 1, 0, .25, .25, 0, 0, 0])


def test_reward_to_go_sums_what_follows_each_token():
    scored = score_response(PIECES, ended=True, cues=CUES, grade=grade)
    advantages = np.array([-1.5, 0.5, 1.0, 0.25], np.float32)
    placed = process_tokens(scored, advantages, 14, "reward_to_go")
    a0, a1, a2, a3 = 0.25, 1.75, 1.25, 0.25  # to go from action 0, 1, 2, 3
    np.testing.assert_allclose(placed, [a0, a0, a1, a1, a1, a1, a2, a2, a2, a3, a3, a3, 0, 0])


def test_a_response_without_proper_end_is_penalized_everywhere_and_outcome_sits_on_the_last_token():
    cut = score_response(PIECES[:5], ended=False, cues=CUES, grade=grade)
    np.testing.assert_array_equal(process_tokens(cut, np.zeros(2), 7, "action"), [-1] * 5 + [0, 0])
    full = score_response(PIECES, ended=True, cues=CUES, grade=grade)
    np.testing.assert_array_equal(outcome_tokens(full, 14), [0] * 12 + [1, 0])


def test_bonuses_double_a_verify_of_a_right_attempt_and_a_flip_to_right():
    from sv_jax.training.rewards import RewardValues

    scored = score_response(PIECES, True, CUES, grade, RewardValues(verify_bonus=2.0, retry_bonus=2.0))
    np.testing.assert_array_equal(scored.action_rewards, [-1, 1, 2, 2])


def test_the_papers_retry_bonus_also_doubles_a_flip_to_wrong_and_a_repeat_is_penalized():
    from sv_jax.training.rewards import RewardValues

    caught, retry = PIECES[:6], PIECES[6:9]  # " 5" wrong, caught; the retry's " 7"
    wrongly_rejected = [" 7", *PIECES[1:6], "\nRetry:", " 5", " .", *PIECES[9:]]  # right, rejected, then 5
    broken = score_response(wrongly_rejected, True, CUES, grade, RewardValues(retry_bonus=2.0))
    np.testing.assert_array_equal(broken.action_rewards, [1, -1, -1, -1])  # to_right: no bonus on a flip to wrong
    broken = score_response(wrongly_rejected, True, CUES, grade, RewardValues(retry_bonus=2.0, retry_bonus_on="change"))
    np.testing.assert_array_equal(broken.action_rewards, [1, -1, -2, -1])
    repeated = [*caught, "\nRetry:", " 5", " .", "\nCheck:", " no", " .", " So the answer is wrong .", ""]
    scored = score_response(repeated, True, CUES, grade, RewardValues(repeat=-1.0))
    np.testing.assert_array_equal(scored.action_rewards, [-1, 1, -2, 1])  # the rejected 5 again: -1 - 1
    fixed = score_response([*caught, *retry, *PIECES[9:]], True, CUES, grade, RewardValues(repeat=-1.0))
    np.testing.assert_array_equal(fixed.action_rewards, [-1, 1, 1, 1])


def test_a_bad_reward_setting_names_its_config_key():
    import ml_collections

    from sv_jax.errors import UserError
    from sv_jax.training.rewards import reward_values

    with pytest.raises(UserError, match="config key 'rl.rewards': retry_bonus_on must be to_right or change"):
        reward_values(ml_collections.ConfigDict(dict(retry_bonus_on="sometimes")), "rl.rewards")


def test_leave_one_out_equals_a_hand_count():
    rewards = np.array([[1.0, -1.0, -1.0, 1.0]])
    np.testing.assert_allclose(leave_one_out(rewards), [[1 + 1 / 3, -1 - 1 / 3, -1 - 1 / 3, 1 + 1 / 3]])
    by_position = leave_one_out_by_position([np.array([1.0, 1.0]), np.array([-1.0]), np.array([1.0, -1.0, 1.0])],
                                            group=[0, 0, 0])
    np.testing.assert_allclose(by_position[0], [1 - 0.0, 1 - (-1.0)])
    np.testing.assert_allclose(by_position[2], [1 - 0.0, -1 - 1.0, 1 - 0.0])


def test_keyed_baselines_follow_position_level_and_prefix():
    assert baseline_keys("prefix", [False, True, True]) == [(), (False,), (False, True)]
    json.dumps(baseline_keys("prefix", list(np.array([-1.0, 1.0, 1.0]) > 0)))  # checkpoint metadata is JSON
    assert baseline_keys("level_position", [True, True], level=3) == [(3, 0), (3, 1)]
    baseline = KeyedMeanBaseline(momentum=0.5)
    baseline.update([0, 0, 1], [1.0, 0.0, -1.0])
    baseline.update([0], [0.0])
    np.testing.assert_allclose(baseline([0, 1, 2]), [0.25, -1.0, 0.0])


def test_gae_equals_a_numpy_reference():
    rng = np.random.default_rng(0)
    rewards, values = rng.normal(size=(2, 6)).astype(np.float32), rng.normal(size=(2, 6)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], np.float32)
    gamma, lam = 0.9, 0.8
    expected = np.zeros_like(rewards)
    for b in range(2):
        n = int(mask[b].sum())
        running = 0.0
        for t in reversed(range(n)):
            next_value = values[b, t + 1] if t + 1 < n else 0.0
            running = rewards[b, t] + gamma * next_value - values[b, t] + gamma * lam * running
            expected[b, t] = running
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    np.testing.assert_allclose(advantages, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(returns, (expected + values) * mask, rtol=1e-5, atol=1e-6)
    whitened = whiten(advantages, mask)
    assert float((whitened * mask).sum()) == pytest.approx(0.0, abs=1e-4)


def test_ppo_gradient_raises_positive_and_lowers_negative_advantage_tokens():
    logprobs = jnp.log(jnp.array([[0.3, 0.5, 0.2]]))
    advantages = jnp.array([[1.0, -1.0, 0.0]])
    mask = jnp.ones((1, 3))
    grad = jax.grad(lambda lp: ppo_loss(lp, logprobs, advantages, mask)[0])(logprobs)
    assert grad[0, 0] < 0 < grad[0, 1] and grad[0, 2] == 0  # descent raises token 0, lowers token 1


def test_kl_term_is_zero_when_policy_and_reference_agree():
    logprobs = jnp.log(jnp.array([[0.3, 0.5]]))
    _, metrics = ppo_loss(logprobs, logprobs, jnp.zeros((1, 2)), jnp.ones((1, 2)), reference_logprobs=logprobs,
                          kl_coef=0.1)
    assert float(metrics["kl"]) == 0.0
    _, metrics = ppo_loss(logprobs, logprobs, jnp.zeros((1, 2)), jnp.ones((1, 2)),
                          reference_logprobs=logprobs - 0.3, kl_coef=0.1)
    assert float(metrics["kl"]) > 0


def test_kl_weights_scale_each_tokens_kl_in_the_loss_but_not_in_the_metric():
    logprobs = jnp.log(jnp.array([[0.3, 0.5]]))
    reference = logprobs - jnp.array([[0.3, 0.6]])
    k3 = np.exp(-np.array([0.3, 0.6])) + np.array([0.3, 0.6]) - 1
    arguments = dict(reference_logprobs=reference, kl_coef=0.1)
    plain, metrics = ppo_loss(logprobs, logprobs, jnp.zeros((1, 2)), jnp.ones((1, 2)), **arguments)
    weighted, weighted_metrics = ppo_loss(logprobs, logprobs, jnp.zeros((1, 2)), jnp.ones((1, 2)), **arguments,
                                          kl_weights=jnp.array([[1.0, 4.0]]))
    assert float(plain) == pytest.approx(0.1 * k3.mean(), rel=1e-5)
    assert float(weighted) == pytest.approx(0.1 * (k3[0] + 4 * k3[1]) / 2, rel=1e-5)
    assert float(weighted_metrics["kl"]) == pytest.approx(float(metrics["kl"]))


def test_rollout_rows_put_each_responses_credit_on_its_sampled_tokens():
    from sv_jax.training.rollout import pack_rows, place, reward_to_go

    rows = pack_rows([[11, 12, 13], [21]], [[14, 15], [22, 23, 24]], length=6)
    np.testing.assert_array_equal(rows["inputs"], [[11, 12, 13, 14, 15, 0], [21, 22, 23, 24, 0, 0]])
    np.testing.assert_array_equal(rows["targets"], [[12, 13, 14, 15, 0, 0], [22, 23, 24, 0, 0, 0]])
    np.testing.assert_array_equal(rows["response_mask"], [[0, 0, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]])
    np.testing.assert_array_equal(rows["segment_ids"], [[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]])
    credit = place([np.array([0.5, -1.0]), np.array([1.0, 2.0, 3.0])], rows["offsets"], 6)
    np.testing.assert_array_equal(credit, [[0, 0, 0.5, -1.0, 0, 0], [1, 2, 3, 0, 0, 0]])
    np.testing.assert_array_equal(reward_to_go(credit, rows["response_mask"]), [[0, 0, -0.5, -1, 0, 0], [6, 5, 3, 0, 0, 0]])


def test_packing_lays_responses_back_to_back_and_unpacks_exactly():
    from sv_jax.training.rollout import Packing, pack_rows

    rows = pack_rows([[11, 12], [21], [31, 32, 33]], [[13, 14], [22, 23, 24, 25], [34]], length=8)
    packing = Packing.of(rows["segment_ids"], [0, 1, 2], ladder=(1, 4))  # 4, 5 and 4 slots in rows of 8
    packed = packing.pack({name: value for name, value in rows.items() if name != "offsets"})
    assert packed["inputs"].shape == (4, 8) and packing.filled == 2  # two rows filled, padded to the rung of 4
    # first-fit, longest first: response 1 alone (5 + 4 > 8), then 0 and 2 share a row
    np.testing.assert_array_equal(packed["inputs"][:2], [[21, 22, 23, 24, 25, 0, 0, 0], [11, 12, 13, 14, 31, 32, 33, 34]])
    np.testing.assert_array_equal(packed["positions"][:2], [[0, 1, 2, 3, 4, 0, 0, 0], [0, 1, 2, 3, 0, 1, 2, 3]])
    np.testing.assert_array_equal(packed["segment_ids"][:2], [[1, 1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 2, 2, 2, 2]])
    np.testing.assert_array_equal(packed["response_mask"][1], [0, 1, 1, 0, 0, 0, 1, 0])
    assert not packed["segment_ids"][2:].any()
    for name in ("inputs", "targets", "response_mask"):
        np.testing.assert_array_equal(packing.unpack(packed[name]), rows[name] * (rows["segment_ids"] > 0))


def test_a_row_ladder_holds_every_packing_in_a_few_row_counts_the_devices_divide():
    from sv_jax.training.rollout import Packing, row_ladder

    assert row_ladder(128, 1, 4) == (32, 64, 96, 128)
    assert row_ladder(128, 8, 2) == (64, 128)
    assert row_ladder(20, 8, 4) == (8, 16, 24)  # rounded up to the devices, duplicates merged
    assert row_ladder(4, 8, 2) == (8,)
    rng = np.random.default_rng(0)
    for responses, multiple, rungs in ((32, 1, 2), (32, 8, 2), (128, 8, 4), (30, 6, 3)):
        ladder = row_ladder(responses, multiple, rungs)
        assert len(ladder) <= rungs and all(rows % multiple == 0 for rows in ladder)
        filled, taken = set(), set()
        for _ in range(40):  # responses of random lengths, so their packings fill many different row counts
            lengths = rng.integers(1, 17, responses)
            segment_ids = (np.arange(16) < lengths[:, None]).astype(np.int32)
            packing = Packing.of(segment_ids, range(responses), ladder)
            filled.add(packing.filled)
            taken.add(len(packing.real))
            assert packing.filled <= len(packing.real) < packing.filled + ladder[0] + multiple
        assert len(filled) > len(ladder) >= len(taken)


def test_outcome_credit_is_rloo_on_every_token_and_process_credit_is_per_position():
    from sv_jax.training.rewards import RewardValues
    from sv_jax.training.rollout import outcome_credit, process_credit

    right = score_response(PIECES, ended=True, cues=CUES, grade=grade)  # wrong, caught, right, confirmed
    unfinished = score_response(PIECES[:5], ended=False, cues=CUES, grade=grade)
    credit = outcome_credit([right, unfinished], 2, RewardValues(), "leave_one_out", None, [0, 0])
    np.testing.assert_array_equal(credit[0], np.full(13, 2.0))  # +1 against the other's -1
    np.testing.assert_array_equal(credit[1], np.full(5, -2.0))
    credit = process_credit([right, right], 2, RewardValues(), "leave_one_out", "action", None, [0, 0])
    np.testing.assert_array_equal(credit[0], np.zeros(13))  # the same rewards as its peer: no advantage


def test_a_branch_starts_where_a_first_verification_rejected_its_attempt():
    from sv_jax.training.rollout import retry_point

    caught = score_response(PIECES, ended=True, cues=CUES, grade=grade)
    assert retry_point(caught, CUES) == 6  # the wrong attempt, the verify cue and the verification
    confirmed = score_response(PIECES[7:], ended=True, cues=CUES, grade=grade)
    assert retry_point(confirmed, CUES) is None
    unverified = score_response(PIECES[:2], ended=False, cues=CUES, grade=grade)
    assert retry_point(unverified, CUES) is None


def branch_group():
    """Two branch rows after one caught wrong attempt: a right retry and a wrong one, their rollout
    and batch."""
    from sv_jax.stages.rl import Rollout
    from sv_jax.training.rollout import pack_rows

    given = PIECES[:6]  # the wrong attempt and the verification that caught it, as both rows' start
    right_retry = PIECES[6:]  # right, confirmed: rewards [.., +1, +1]
    wrong_retry = [PIECES[6], " 5", *PIECES[8:]]  # wrong, wrongly confirmed: [.., -1, -1]
    scored = [score_response(given + retry, ended=True, cues=CUES, grade=grade)
              for retry in (right_retry, wrong_retry)]
    prompt, start = [1, 2, 3], list(range(10, 16))
    sampled = [list(range(20, 27))] * 2
    rollout = Rollout([prompt + start] * 2, sampled, [6, 6], scored, [0, 0], [None, None], fresh=0)
    return rollout, pack_rows(rollout.prompts, rollout.sampled, 16)


def test_a_branch_group_learns_only_its_sampled_retries_against_each_other():
    from configs import rl as rl_config
    from sv_jax.stages.rl import token_advantages
    from sv_jax.training.rewards import RewardValues

    settings = rl_config.settings()
    settings.samples_per_question = 2
    advantages = token_advantages(settings, "process", *branch_group(), None, RewardValues(), None)["advantages"]
    # targets 8..14 are the sampled tokens: cue, attempt, attempt, cue, verification x2, EOS
    np.testing.assert_array_equal(advantages[0], [0] * 8 + [0, 2, 2, 0, 2, 2, 0] + [0])
    np.testing.assert_array_equal(advantages[1], [0] * 8 + [0, -2, -2, 0, -2, -2, 0] + [0])


@pytest.mark.parametrize("kl_in", ["loss", "reward"])
def test_retry_kl_weighs_the_kl_on_a_retrys_sampled_tokens(kl_in):
    from configs import rl as rl_config
    from sv_jax.stages.rl import token_advantages
    from sv_jax.training.rewards import RewardValues

    settings = rl_config.settings()
    settings.samples_per_question, settings.retry_kl, settings.kl_in, settings.kl_coef = 2, 4.0, kl_in, 0.5
    rollout, batch = branch_group()
    batch["old_logprobs"], batch["reference_logprobs"] = np.full((2, 16), -1.0), np.full((2, 16), -1.25)
    out = token_advantages(settings, "process", rollout, batch, None, RewardValues(), None)
    # targets 8..14 are the sampled tokens: cue, attempt (the retry) x2, cue, verification x2, EOS
    np.testing.assert_array_equal(out["kl_weights"], [[1] * 9 + [4, 4] + [1] * 5] * 2)
    settings.retry_kl = 1.0
    plain = token_advantages(settings, "process", rollout, batch, None, RewardValues(), None)["advantages"]
    # as a reward penalty, -0.5 x 0.25 a token, summed to go: the retry's two tokens count 4 times
    to_go = np.cumsum((-0.125 * (out["kl_weights"] - 1) * batch["response_mask"])[:, ::-1], axis=1)[:, ::-1]
    expected = plain + (to_go * batch["response_mask"] if kl_in == "reward" else 0)
    np.testing.assert_allclose(out["advantages"], expected, atol=1e-6)
