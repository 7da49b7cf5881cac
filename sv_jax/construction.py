"""Stage 0's core: from a question's graded samples to a difficulty level and a trajectory.

The harder the question (the fewer of π₀'s samples are right), the more wrong attempts — each
followed by a verification that catches it — precede the final right attempt and its confirming
verification. Pure functions; the `data` stage feeds them samples and writes what they return.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Hashable, Mapping, Sequence

import numpy as np

from sv_jax.trajectory import SOLVE, VERIFY, Action

VERIFICATION_STYLES = ("problem_solving", "confirmative", "mixed")
# Accuracy at or above each bound gives levels 1, 2, 3, 4; below the last, level 5. With K = 8
# samples: 4 or more right → 1, 3 → 2, 2 → 3, 1 → 4, none → 5. Only level 1 opens with a right
# attempt, so its bound sets the share of "correct" first verdicts: with π₀ right on ~43 % of its
# samples at 0.7, a bound of 5 of 8 gave 35 %, at the floor that keeps either verdict from being
# learned as a constant; 4 of 8 gives ~47 % (experiments/RESULTS.md).
DEFAULT_LEVEL_BOUNDS = (0.5, 0.375, 0.25, 0.125)
# Rounds (solve, verify pairs) per level: the seed figure's 1, 2 and 4 at levels 1, 3 and 5.
DEFAULT_ROUNDS = {1: 1, 2: 2, 3: 2, 4: 3, 5: 4}


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One graded sample: its text, its final answer (None if it has none), and whether it is right."""

    text: str
    answer: str | None
    correct: bool


def difficulty(accuracy: float, bounds: Sequence[float] = DEFAULT_LEVEL_BOUNDS) -> int:
    """Level 1 (easiest) to len(bounds) + 1 from the share of right samples."""
    return next((level for level, bound in enumerate(bounds, start=1) if accuracy >= bound), len(bounds) + 1)


def choose_style(style: str, rng: np.random.Generator, confirmative_share: float = 0.5) -> str:
    """The verification style of one verification: `mixed` picks confirmative with probability
    `confirmative_share`, else problem-solving."""
    if style not in VERIFICATION_STYLES:
        raise ValueError(f"verification style {style!r}; known: {', '.join(VERIFICATION_STYLES)}")
    if style != "mixed":
        return style
    return "confirmative" if rng.random() < confirmative_share else "problem_solving"


RouteOf = Callable[["Attempt"], Hashable]  # the approach an attempt takes (the built-in task's solution route)


def candidates(attempts: Sequence[Attempt], max_right: int = 2, route_of: RouteOf | None = None) -> list[Attempt]:
    """The attempts a trajectory may use, so the only ones worth verifying: one per distinct wrong
    answer (a trajectory never repeats a wrong answer), and up to `max_right` distinct right ones
    (with `route_of`, the first of each route: retries after a rejection want a route not tried)."""
    wrong = {a.answer: a for a in attempts if not a.correct and a.answer is not None}
    distinct = route_of or (lambda attempt: attempt)
    right = {}
    for attempt in attempts:
        if attempt.correct:
            right.setdefault(distinct(attempt), attempt)
    return list(wrong.values()) + list(right.values())[:max_right]


def build_trajectory(
    attempts: Sequence[Attempt],
    rounds: int,
    verifications: Mapping[Attempt, str],
    rng: np.random.Generator,
    route_of: RouteOf | None = None,
) -> list[Action] | None:
    """`rounds - 1` wrong attempts, each with a verification that rejects it, then a right attempt
    with one that confirms it; None when no right attempt has a verification.

    Only attempts with a verification in `verifications` (one that reached the right verdict) are
    used; wrong ones are distinct by answer, and with too few the trajectory has fewer rounds. With
    `route_of`, the right attempt takes a route no wrong attempt took where one did, else another
    route than the last wrong one's, so that SFT shows a retry that reworks the question rather than
    rerunning a rejected computation.
    Wrong attempts carry mask 0 (the model is not taught to make them), everything else mask 1.
    """
    usable = [a for a in attempts if a in verifications]
    right = [a for a in usable if a.correct]
    if not right:
        return None
    distinct_wrong = list({a.answer: a for a in usable if not a.correct}.values())
    order = rng.permutation(len(distinct_wrong))
    wrong = [distinct_wrong[i] for i in order[: max(rounds - 1, 0)]]
    if route_of is not None and wrong:
        tried = {route_of(a) for a in wrong}
        right = ([a for a in right if route_of(a) not in tried]
                 or [a for a in right if route_of(a) != route_of(wrong[-1])] or right)
    actions = []
    for attempt in wrong:
        actions.append(Action(SOLVE, attempt.text, correct=False, mask=0))
        actions.append(Action(VERIFY, verifications[attempt], correct=True, mask=1))
    final = right[int(rng.integers(len(right)))]
    actions.append(Action(SOLVE, final.text, correct=True, mask=1))
    actions.append(Action(VERIFY, verifications[final], correct=True, mask=1))
    return actions


def with_false_rejection(actions: list[Action], check: str, retry: tuple[Attempt, str] | None = None) -> list[Action]:
    """A one-round trajectory {right attempt, confirming check} opened by the same attempt and
    `check`, one that wrongly rejects it (mask 0: a slip the policy is not taught to make), so that
    SFT also shows what follows a false rejection: the right answer again, by `retry` (a right
    attempt by another route, and its confirming check) where given, else by the attempt written
    again verbatim, which also teaches "after a rejection, write the same answer" (issue 25)."""
    if len(actions) != 2 or not actions[0].correct:
        raise ValueError("a false rejection opens a one-round trajectory of a right attempt")
    opening = [actions[0], Action(VERIFY, check, correct=False, mask=0)]
    if retry is None:
        return opening + actions
    attempt, confirmation = retry
    return opening + [Action(SOLVE, attempt.text, correct=True, mask=1),
                      Action(VERIFY, confirmation, correct=True, mask=1)]
