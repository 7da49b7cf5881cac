"""How the built-in task's text is laid out: prompts, responses, cues and checking exercises."""

from __future__ import annotations

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


def draw_route(rng: np.random.Generator, parts_share: float) -> str:
    """`parts` with probability `parts_share`, else `direct`; draws nothing at 0, so that a corpus of
    one route is the one written before the second route existed."""
    return "parts" if parts_share > 0 and rng.random() < parts_share else "direct"


def pretraining_document(problem: task.Problem, rng: np.random.Generator, slip_rate: float,
                         check_share: float, confirmative_share: float, parts_share: float = 0.0) -> tuple[str, str]:
    """One document of π₀'s corpus as (context, continuation): a solved question (slipped with
    probability `slip_rate`), or, with probability `check_share`, a checking exercise of a right or
    slipped answer (half each), confirmative with probability `confirmative_share`, else solved
    afresh. Solutions (and the attempts checked) take the parts route with probability
    `parts_share`. The context is the question, which π₀ is given, not taught."""
    route = draw_route(rng, parts_share)
    if rng.random() < check_share:
        proposed = problem.answer if rng.random() < 0.5 else task.slipped_solution(problem, rng, route)[1]
        return check_exercise(problem, proposed, choose_style("mixed", rng, confirmative_share), route)
    if rng.random() < slip_rate:
        solution = task.slipped_solution(problem, rng, route)[0]
    else:
        solution = task.solution_text(task.solution_steps(problem, route=route))
    return prompt(problem), " " + solution


def arithmetic_drill(rng: np.random.Generator, facts: int, confirmative_share: float, parts_share: float = 0.0) -> str:
    """`facts` single-step results drawn from the steps that solutions and both checking styles of
    training questions compute (checks of slipped answers too), by either route: the arithmetic a
    real initial policy already knows, given to ours densely instead of two facts per worked solution."""
    steps: list[task.Step] = []
    while len(steps) < facts:
        problem = task.draw_problem("train", rng)
        route = draw_route(rng, parts_share)
        proposed = problem.answer if rng.random() < 0.5 else task.slipped_solution(problem, rng, route)[1]
        style = choose_style("mixed", rng, confirmative_share)
        check, reached, target = task.verification_steps(problem, proposed, style, route)
        steps += task.solution_steps(problem, route=route) + check + [task.comparison(reached, target)]
    chosen = rng.choice(len(steps), facts, replace=False)
    return " ".join(steps[i].text() for i in chosen)
