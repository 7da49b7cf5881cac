"""Scoring self-verifying responses: accuracy of the first and final attempts, and how well the
verifications judge the attempts they follow (DESIGN.md section 2, Evaluation). Pure functions.

A response is read as attempts, each optionally followed by its verification. A verification with
no readable verdict counts as wrong; an attempt nobody verified is neither flagged nor confirmed.
Self-correction is read per rejection: after a true catch, is the retry right (`fix_rate`) or does it
write an answer already rejected (`repeat_rate`); after a false rejection, does the response end
wrong (`break_rate`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator, Sequence

import numpy as np

from sv_jax.trajectory import SOLVE, VERIFY, Action, Cues, verdict

FIGURES = ("acc_first", "acc_final", "verify_acc", "error_recall", "correct_recall", "correct_precision",
           "wrong_to_right", "right_to_wrong", "fix_rate", "repeat_rate", "break_rate", "mean_attempts",
           "mean_tokens", "n")
Graded = tuple[bool, str | None]  # an attempt's (right?, the answer the grader read in it)


@dataclasses.dataclass(frozen=True)
class Attempt:
    correct: bool
    verdict: bool | None  # True "correct", False "incorrect", None unreadable
    verified: bool  # a verification followed the attempt
    answer: str | None = None  # as the grader read it (None: no answer)


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


def read_attempts(actions: Sequence[Action], cues: Cues, grade: Callable[[str], Graded]) -> list[Attempt]:
    """Each solve action, graded, with the verdict of the verification that follows it."""
    attempts = []
    for i, action in enumerate(actions):
        if action.kind != SOLVE:
            continue
        follower = actions[i + 1] if i + 1 < len(actions) and actions[i + 1].kind == VERIFY else None
        correct, answer = grade(action.text)
        attempts.append(Attempt(correct, verdict(follower.text, cues) if follower else None, follower is not None,
                                answer))
    return attempts


def retries_after_catches(attempts: Sequence[Attempt]) -> Iterator[tuple[int, bool]]:
    """Every retry after a true catch (a wrong attempt rejected): its index, and whether it writes an
    answer rejected earlier in the response (rightly or not)."""
    rejected = set()
    for index, attempt in enumerate(attempts[:-1]):
        if attempt.verdict is not False:
            continue
        rejected.add(attempt.answer)
        if not attempt.correct:
            retry = attempts[index + 1]
            yield index + 1, retry.answer is not None and retry.answer in rejected


def self_correction(responses: Sequence[Sequence[Attempt]]) -> dict[str, float | None]:
    """fix_rate and repeat_rate over the retries that follow a true catch: right, or writing an answer
    rejected earlier in the response; break_rate over false rejections (a right attempt rejected): the
    response ends wrong. None with nothing to count."""
    retries = fixed = repeated = false_rejections = broken = 0
    for attempts in responses:
        for index, repeats in retries_after_catches(attempts):
            retries += 1
            fixed += attempts[index].correct
            repeated += repeats
        rejected_right = sum(a.verdict is False and a.correct for a in attempts)
        false_rejections += rejected_right
        broken += rejected_right * (not attempts[-1].correct)
    return {"fix_rate": _ratio(fixed, retries), "repeat_rate": _ratio(repeated, retries),
            "break_rate": _ratio(broken, false_rejections)}


def _ratio(hits: int, total: int) -> float | None:
    return hits / total if total else None


def score(responses: Sequence[Sequence[Attempt]], tokens: Sequence[int]) -> dict[str, float | int | None]:
    """The figures over responses (each a list of attempts; at least one). Ratios with nothing to
    count are None."""
    every = [a for r in responses for a in r]
    verified = [a for a in every if a.verified]
    wrong = [a for a in every if not a.correct]
    right = [a for a in every if a.correct]
    confirmed = [a for a in every if a.verdict is True]
    first = [r[0].correct for r in responses]
    final = [r[-1].correct for r in responses]
    n = len(responses)
    return {
        "acc_first": _ratio(sum(first), n),
        "acc_final": _ratio(sum(final), n),
        "verify_acc": _ratio(sum(a.verdict is not None and a.verdict == a.correct for a in verified), len(verified)),
        "error_recall": _ratio(sum(a.verdict is False for a in wrong), len(wrong)),
        "correct_recall": _ratio(sum(a.verdict is True for a in right), len(right)),
        "correct_precision": _ratio(sum(a.correct for a in confirmed), len(confirmed)),
        "wrong_to_right": _ratio(sum(not f and g for f, g in zip(first, final)), n),
        "right_to_wrong": _ratio(sum(f and not g for f, g in zip(first, final)), n),
        **self_correction(responses),
        "mean_attempts": float(np.mean([len(r) for r in responses])) if n else None,
        "mean_tokens": float(np.mean(tokens)) if n else None,
        "n": n,
    }
