"""How the built-in task's text is laid out: prompts, responses, cues and checking exercises."""

from __future__ import annotations

import numpy as np

from sv_jax.tasks import arithmetic as task
from sv_jax.trajectory import Cues

PROMPT = "Question: {question}\nAnswer:"
CHECK_PROMPT = "Question: {question}\nProposed answer: {proposed}\nCheck:"
# Shorter than the paper's cues: on a CPU every token of a trajectory costs.
CUES = Cues(verify="\nCheck: ", retry="\nRetry: ", verdict_correct=task.VERDICT_RIGHT,
            verdict_incorrect=task.VERDICT_WRONG)


def prompt(problem: task.Problem) -> str:
    return PROMPT.format(question=problem.question)


def check_exercise(problem: task.Problem, proposed: int, style: str) -> tuple[str, str]:
    """A checking exercise as (prompt, worked check): the format π₀ learns to check in, apart from
    the trajectory format, so that it checks when asked and never unprompted."""
    return CHECK_PROMPT.format(question=problem.question, proposed=proposed), " " + task.verification(problem, proposed, style)


def pretraining_document(problem: task.Problem, rng: np.random.Generator, slip_rate: float, check_share: float) -> str:
    """One document of π₀'s corpus: a solved question (slipped with probability `slip_rate`), or, with
    probability `check_share`, a checking exercise of a right or slipped answer (half each)."""
    if rng.random() < check_share:
        proposed = problem.answer if rng.random() < 0.5 else task.slipped_solution(problem, rng)[1]
        check_prompt, check = check_exercise(problem, proposed, task.STYLES[int(rng.integers(2))])
        return check_prompt + check
    if rng.random() < slip_rate:
        solution = task.slipped_solution(problem, rng)[0]
    else:
        solution = task.solution_text(task.solution_steps(problem))
    return prompt(problem) + " " + solution
