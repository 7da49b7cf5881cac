"""How the built-in task's text is laid out: prompts, responses, cues and checking exercises."""

from __future__ import annotations

import collections
import functools

import numpy as np

from sv_jax.construction import choose_style
from sv_jax.tasks import arithmetic as task
from sv_jax.trajectory import Cues

PROMPT = "Question: {question}\nAnswer:"
CHECK_PROMPT = "Question: {question}\nProposed answer: {proposed}\nCheck:"
# Shorter than the paper's cues: on a CPU every token of a trajectory costs. Actions start with a space
# (" 12 - 5 = 7 ..."), as π₀ writes them after "Answer:"; the verify cue ends as the checking
# exercises' prompt does, so a verification in a trajectory reads like the checks π₀ learned.
CUES = Cues(verify="\nCheck:", retry="\nRetry:", verdict_correct=task.VERDICT_RIGHT,
            verdict_incorrect=task.VERDICT_WRONG)


def prompt(problem: task.Problem) -> str:
    return PROMPT.format(question=problem.question)


def check_prompt(problem: task.Problem, proposed: int) -> str:
    """Asks for a check of `proposed` without naming a style: π₀ picks one itself."""
    return CHECK_PROMPT.format(question=problem.question, proposed=proposed)


def check_exercise(problem: task.Problem, proposed: int, style: str, attempt_route: str = "direct") -> tuple[str, str]:
    """A checking exercise as (prompt, worked check of an answer reached by `attempt_route`): the
    format π₀ learns to check in, apart from the trajectory format, so that it checks when asked
    and never unprompted."""
    return check_prompt(problem, proposed), " " + task.verification(problem, proposed, style, attempt_route)


def draw_route(rng: np.random.Generator, route_shares: tuple[float, ...]) -> str:
    """`parts` or `over` with their probabilities in `route_shares`, else `direct`: one draw, none
    when all are 0, so that a corpus without a route is the one written before that route existed."""
    if not any(route_shares):
        return "direct"
    draw = rng.random()
    for route, bound in zip(task.ROUTES[1:], np.cumsum(route_shares)):
        if draw < bound:
            return route
    return "direct"


def learned_routes(route_shares: tuple[float, ...]) -> tuple[str, ...]:
    """The routes a corpus drawn with `route_shares` writes solutions by (`direct` always: every
    other route's checks take it)."""
    return ("direct",) + tuple(route for route, share in zip(task.ROUTES[1:], route_shares) if share > 0)


def pretraining_document(problem: task.Problem, rng: np.random.Generator, slip_rate: float,
                         check_share: float, confirmative_share: float,
                         route_shares: tuple[float, ...] = ()) -> tuple[str, str]:
    """One document of π₀'s corpus as (context, continuation): a solved question (slipped with
    probability `slip_rate`), or, with probability `check_share`, a checking exercise of a right or
    slipped answer (half each), confirmative with probability `confirmative_share`, else solved
    afresh. Solutions (and the attempts checked) take the routes after `direct` with the
    probabilities `route_shares`. The context is the question, which π₀ is given, not taught."""
    route = draw_route(rng, route_shares)
    if rng.random() < check_share:
        proposed = problem.answer if rng.random() < 0.5 else task.slipped_solution(problem, rng, route)[1]
        return check_exercise(problem, proposed, choose_style("mixed", rng, confirmative_share), route)
    if rng.random() < slip_rate:
        solution = task.slipped_solution(problem, rng, route)[0]
    else:
        solution = task.solution_text(task.solution_steps(problem, route=route))
    return prompt(problem), " " + solution


def arithmetic_drill(rng: np.random.Generator, facts: int, confirmative_share: float,
                     route_shares: tuple[float, ...] = (), shape_power: float = 1.0) -> str:
    """`facts` single-step results drawn from the steps that solutions and both checking styles of
    training questions compute (checks of slipped answers too), by the routes drawn: the arithmetic a
    real initial policy already knows, given to ours densely instead of two facts per worked solution.

    With `shape_power` below 1, steps of a shape (operator, operand digits, a sign) that make up a
    share s of those steps are kept with odds proportional to s^(shape_power - 1), so a shape's share
    of the drill goes as s^shape_power: rare shapes, two-digit plus three-digit sums among them (0.5 %
    of the steps, and the checks' most error-prone), come more often."""
    keep = _shape_keep_odds(confirmative_share, route_shares, shape_power) if shape_power != 1.0 else None
    steps: list[task.Step] = []
    while len(steps) < facts:
        drawn = _steps_of_one_question(rng, confirmative_share, route_shares)
        steps += drawn if keep is None else [s for s in drawn if rng.random() < keep.get(_shape(s), 1.0)]
    chosen = rng.choice(len(steps), facts, replace=False)
    return " ".join(steps[i].text() for i in chosen)


def _steps_of_one_question(rng: np.random.Generator, confirmative_share: float,
                           route_shares: tuple[float, ...]) -> list[task.Step]:
    """A training question's solution steps by a drawn route, and a check's steps of a right or
    slipped answer (half each) in a drawn style, with its comparison."""
    problem = task.draw_problem("train", rng)
    route = draw_route(rng, route_shares)
    proposed = problem.answer if rng.random() < 0.5 else task.slipped_solution(problem, rng, route)[1]
    style = choose_style("mixed", rng, confirmative_share)
    check, reached, target = task.verification_steps(problem, proposed, style, route)
    return task.solution_steps(problem, route=route) + check + [task.comparison(reached, target)]


def _shape(step: task.Step) -> tuple[str, int, int, bool]:
    """A step's operator, its operands' digit counts, and whether a negative number is in it."""
    return step.op, len(str(abs(step.left))), len(str(abs(step.right))), min(step.left, step.right, step.result) < 0


# Shapes rarer than this are weighted as if they were this common: a handful of odd steps (a
# three-digit sum of two three-digit numbers) must not make every common step a rare keep.
_RAREST_WEIGHTED_SHARE = 0.005


@functools.cache
def _shape_keep_odds(confirmative_share: float, route_shares: tuple[float, ...],
                     shape_power: float) -> dict[tuple, float]:
    """Each shape's odds of being kept, s^(shape_power - 1) for its share s among the steps of 4,000
    questions drawn with a fixed seed, scaled so that the rarest weighted shapes are always kept."""
    rng = np.random.default_rng(0)
    counts = collections.Counter(_shape(step) for _ in range(4000)
                                 for step in _steps_of_one_question(rng, confirmative_share, route_shares))
    total = sum(counts.values())
    weight = {shape: max(count / total, _RAREST_WEIGHTED_SHARE) ** (shape_power - 1) for shape, count in counts.items()}
    top = max(weight.values())
    return {shape: w / top for shape, w in weight.items()}
