"""Scoring self-verifying responses: accuracy of the first and final attempts, and how well the
verifications judge the attempts they follow (DESIGN.md section 2, Evaluation). Pure functions.

A response is read as attempts, each optionally followed by its verification. A verification with
no readable verdict counts as wrong; an attempt nobody verified is neither flagged nor confirmed.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from sv_jax.trajectory import SOLVE, VERIFY, Action, Cues, verdict

FIGURES = ("acc_first", "acc_final", "verify_acc", "error_recall", "correct_recall", "correct_precision",
           "wrong_to_right", "right_to_wrong", "mean_attempts", "mean_tokens", "n")


@dataclasses.dataclass(frozen=True)
class Attempt:
    correct: bool
    verdict: bool | None  # True "correct", False "incorrect", None unreadable
    verified: bool  # a verification followed the attempt


def truncate(actions: Sequence[Action], cues: Cues, max_attempts: int) -> list[Action]:
    """The response as if sampling had stopped after the first "correct" verdict or the
    `max_attempts`-th attempt's verification (sampling is causal, so cutting afterwards is the same)."""
    kept, attempts = [], 0
    for action in actions:
        if action.kind == SOLVE:
            if attempts == max_attempts:
                break
            attempts += 1
        kept.append(action)
        if action.kind == VERIFY and verdict(action.text, cues) is True:
            break
    return kept


def read_attempts(actions: Sequence[Action], cues: Cues, is_correct: Callable[[str], bool]) -> list[Attempt]:
    """Each solve action, graded, with the verdict of the verification that follows it."""
    attempts = []
    for i, action in enumerate(actions):
        if action.kind != SOLVE:
            continue
        follower = actions[i + 1] if i + 1 < len(actions) and actions[i + 1].kind == VERIFY else None
        attempts.append(Attempt(is_correct(action.text), verdict(follower.text, cues) if follower else None,
                                follower is not None))
    return attempts


def score(responses: Sequence[Sequence[Attempt]], tokens: Sequence[int]) -> dict[str, float | int | None]:
    """The figures over responses (each a list of attempts; at least one). Ratios with nothing to
    count are None."""
    def ratio(hits: int, total: int) -> float | None:
        return hits / total if total else None

    every = [a for r in responses for a in r]
    verified = [a for a in every if a.verified]
    wrong = [a for a in every if not a.correct]
    right = [a for a in every if a.correct]
    confirmed = [a for a in every if a.verdict is True]
    first = [r[0].correct for r in responses]
    final = [r[-1].correct for r in responses]
    n = len(responses)
    return {
        "acc_first": ratio(sum(first), n),
        "acc_final": ratio(sum(final), n),
        "verify_acc": ratio(sum(a.verdict is not None and a.verdict == a.correct for a in verified), len(verified)),
        "error_recall": ratio(sum(a.verdict is False for a in wrong), len(wrong)),
        "correct_recall": ratio(sum(a.verdict is True for a in right), len(right)),
        "correct_precision": ratio(sum(a.correct for a in confirmed), len(confirmed)),
        "wrong_to_right": ratio(sum(not f and g for f, g in zip(first, final)), n),
        "right_to_wrong": ratio(sum(f and not g for f, g in zip(first, final)), n),
        "mean_attempts": float(np.mean([len(r) for r in responses])) if n else None,
        "mean_tokens": float(np.mean(tokens)) if n else None,
        "n": n,
    }
