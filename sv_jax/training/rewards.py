"""Stage 2's rewards, from a sampled response to a per-token `[time]` array (DESIGN.md section 2).

Outcome level: one reward for the response's final answer. Process level: one reward per action —
a solve action by its correctness, a verify action by whether its verdict matches the truth of the
attempt it verifies — and a penalty on every token of a response with no proper end. Host-side
NumPy: rewards need the grader, which reads text.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

from sv_jax.errors import UserError
from sv_jax.evaluation import Attempt, Graded, read_attempts
from sv_jax.trajectory import CUE, SOLVE, VERIFY, Action, Cues, build, parse, verdict


@dataclasses.dataclass(frozen=True)
class RewardValues:
    right: float = 1.0  # a right final answer / solve action; a verdict that matches the truth
    wrong: float = -1.0
    no_end: float = -1.0  # every token of a response that never ends properly
    verify_bonus: float = 1.0  # factor on a verify reward when the attempt it verifies is right
    retry_bonus: float = 1.0  # factor on a solve reward when its correctness differs from the attempt before
    retry_bonus_on: str = "to_right"  # to_right: wrong → right flips only; change: either way (the paper's)
    repeat: float = 0.0  # added to a solve reward when its answer was rejected earlier in the response

    def __post_init__(self):
        if self.retry_bonus_on not in ("to_right", "change"):
            raise ValueError(f"retry_bonus_on must be to_right or change, got {self.retry_bonus_on!r}")


def reward_values(section: Any, key: str) -> RewardValues:
    """The reward settings of a config section (`key` names it in the one line a bad value gets)."""
    try:
        return RewardValues(**section.to_dict())
    except (TypeError, ValueError) as error:
        raise UserError(f"config key '{key}': {error}") from None


@dataclasses.dataclass(frozen=True)
class Scored:
    """A parsed response: its actions, each token's action (CUE for cue / EOS tokens), each action's
    reward, each solve's correctness and answer, whether it ended properly, and which actions are
    retries (a solve right after a check that rejected the attempt before it)."""

    actions: list[Action]
    token_action: np.ndarray
    action_rewards: np.ndarray
    solve_correct: list[bool]
    solve_answers: list[str | None]
    ended: bool
    retries: np.ndarray

    def retry_tokens(self) -> np.ndarray:
        """Per token: whether it belongs to a retry (a cue token, index CUE = -1, to none)."""
        return np.append(self.retries, False)[self.token_action]

    @property
    def final_correct(self) -> bool:
        return bool(self.solve_correct and self.solve_correct[-1])

    def attempts(self, cues: Cues) -> list[Attempt]:
        """The response as the evaluation reads it."""
        graded = iter(zip(self.solve_correct, self.solve_answers))
        return read_attempts(self.actions, cues, lambda _: next(graded))


def token_actions(pieces: Sequence[str], cues: Cues) -> tuple[list[Action], np.ndarray]:
    """The actions of the text that `pieces` (each sampled token's text) spell, and each token's
    action index: the action whose span holds the token's first character, else CUE."""
    text = "".join(pieces)
    actions = parse(text, cues)
    _, spans = build(actions, cues)
    starts = np.cumsum([0] + [len(p) for p in pieces[:-1]])
    owner = np.full(len(pieces), CUE, np.int32)
    for index, (start, end) in enumerate(spans):
        owner[(starts >= start) & (starts < end)] = index
    return actions, owner


def score_response(pieces: Sequence[str], ended: bool, cues: Cues, grade: Callable[[str], Graded],
                   values: RewardValues = RewardValues()) -> Scored:
    """Parses a response and gives each action its process-level reward.

    `ended`: sampling stopped on EOS or a stop phrase, not at the token limit; the response ends
    properly when it also ends on a readable verdict. A verify action is judged against the solve
    action just before it.
    """
    actions, owner = token_actions(pieces, cues)
    rewards, solve_correct, solve_answers, last_attempt, rejected = [], [], [], None, set()
    retries, said = [], None
    for action in actions:
        retries.append(action.kind == SOLVE and said is False)
        if action.kind == SOLVE:
            correct, answer = grade(action.text)
            changed = bool(solve_correct) and solve_correct[-1] != correct
            flipped = changed and (correct or values.retry_bonus_on == "change")
            reward = (values.right if correct else values.wrong) * (values.retry_bonus if flipped else 1.0)
            rewards.append(reward + (values.repeat if answer is not None and answer in rejected else 0.0))
            solve_correct.append(correct)
            solve_answers.append(answer)
            last_attempt, said = correct, None
        else:
            said = verdict(action.text, cues)
            if said is False and solve_answers:
                rejected.add(solve_answers[-1])
            matches = said is not None and last_attempt is not None and said == last_attempt
            reward = values.right if matches else values.wrong
            rewards.append(reward * (values.verify_bonus if last_attempt else 1.0))
    proper = ended and actions[-1].kind == VERIFY and verdict(actions[-1].text, cues) is not None
    return Scored(actions, owner, np.asarray(rewards, np.float32), solve_correct, solve_answers, proper,
                  np.array(retries, bool))


def outcome_tokens(scored: Scored, length: int, values: RewardValues = RewardValues()) -> np.ndarray:
    """`[length]`: the final answer's reward on the response's last token."""
    rewards = np.zeros(length, np.float32)
    if len(scored.token_action):
        rewards[len(scored.token_action) - 1] = values.right if scored.final_correct else values.wrong
    return rewards


def process_tokens(scored: Scored, advantages: np.ndarray, length: int, credit: str,
                   values: RewardValues = RewardValues()) -> np.ndarray:
    """`[length]` per-token credit from per-action `advantages` (rewards minus baselines).

    `action`: every token of an action carries its action's advantage, cue tokens 0 (the paper's
    scheme). `reward_to_go`: each token carries the sum of the advantages of its action and all
    later ones (the reward sits on an action's last token; returns sum what follows). A response with
    no proper end carries `values.no_end` on every token instead.
    """
    owner = scored.token_action
    out = np.zeros(length, np.float32)
    if not scored.ended:
        out[: len(owner)] = values.no_end
        return out
    if credit == "action":
        inside = owner >= 0
        out[: len(owner)][inside] = advantages[owner[inside]]
        return out
    if credit != "reward_to_go":
        raise ValueError(f"process credit {credit!r}; known: action, reward_to_go")
    # The return of a token: the advantages of its action and every later one; a cue token comes
    # after the reward of the action before it, so it carries what follows it (0 after the last).
    to_go = np.append(np.cumsum(advantages[::-1])[::-1], 0.0)
    next_action = np.minimum.accumulate(np.where(owner >= 0, owner, len(advantages))[::-1])[::-1]
    out[: len(owner)] = to_go[next_action]
    return out


def action_end_tokens(scored: Scored, length: int, values: RewardValues = RewardValues()) -> np.ndarray:
    """`[length]`: each action's reward on its last token (the per-token rewards GAE discounts back);
    a response with no proper end carries `values.no_end` on every token instead."""
    owner = scored.token_action
    out = np.zeros(length, np.float32)
    if not scored.ended:
        out[: len(owner)] = values.no_end
        return out
    for index, reward in enumerate(scored.action_rewards):
        tokens = np.flatnonzero(owner == index)
        if len(tokens):
            out[tokens[-1]] += reward
    return out
