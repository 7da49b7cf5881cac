"""Stage 0's construction: difficulty levels and the seed figure's trajectory shapes and masks."""

import numpy as np
import pytest

from sv_jax.construction import (DEFAULT_ROUNDS, Attempt, build_trajectory, candidates, choose_style, difficulty,
                                 with_false_rejection)
from sv_jax.tasks import arithmetic as task
from sv_jax.tasks import builtin
from sv_jax.trajectory import SOLVE, VERIFY, build, parse, verdict

PROBLEM = task.make_problem(4, (75, 34, 21, 31))  # answer 51


def attempts(right: int, wrong: int) -> list[Attempt]:
    """`right` correct samples and `wrong` slipped ones with distinct wrong answers."""
    rng = np.random.default_rng(0)
    samples, seen = [], set()
    while len(samples) < wrong:
        text, answer = task.slipped_solution(PROBLEM, rng)
        if answer not in seen:
            seen.add(answer)
            samples.append(Attempt(text, str(answer), False))
    correct = task.solution_text(task.solution_steps(PROBLEM))
    return samples + [Attempt(correct, str(PROBLEM.answer), True)] * right


def verify(samples: list[Attempt], style: str = "problem_solving") -> dict[Attempt, str]:
    return {a: task.verification(PROBLEM, int(a.answer), style) for a in samples}


@pytest.mark.parametrize("right, level", [(8, 1), (5, 1), (4, 1), (3, 2), (2, 3), (1, 4), (0, 5)])
def test_accuracy_sets_the_level(right, level):
    assert difficulty(right / 8) == level  # of the default k = 8 samples


@pytest.mark.parametrize("level, right, wrong, kinds", [
    (1, 8, 0, "sv"),
    (3, 2, 6, "svsv"),
    (5, 0, 8, "svsvsvsv"),
])
def test_levels_give_the_seed_figure_shapes(level, right, wrong, kinds):
    samples = attempts(right, wrong)
    assert difficulty(right / len(samples)) == level
    if not right:  # as stage 0 does: a question no sample solved ends on its reference solution
        samples += attempts(1, 0)
    rng = np.random.default_rng(1)
    verifications = {a: task.verification(PROBLEM, int(a.answer), choose_style("mixed", rng)) for a in samples}
    actions = build_trajectory(samples, DEFAULT_ROUNDS[level], verifications, rng)
    assert "".join(a.kind[0] for a in actions) == kinds
    solves = [a for a in actions if a.kind == SOLVE]
    verifications = [a for a in actions if a.kind == VERIFY]
    assert [task.grade(PROBLEM, a.text) for a in solves] == [False] * (len(solves) - 1) + [True]
    assert [a.mask for a in solves] == [0] * (len(solves) - 1) + [1]
    assert all(a.mask == 1 for a in verifications)
    cues = builtin.CUES
    assert [verdict(a.text, cues) for a in verifications] == [False] * (len(verifications) - 1) + [True]
    text, _ = build(actions, cues)
    assert [(a.kind, a.text) for a in parse(text, cues)] == [(a.kind, a.text) for a in actions]


def test_too_few_distinct_wrong_answers_give_fewer_rounds():
    samples = attempts(1, 1) + attempts(0, 1)  # two wrong samples with the same answer
    actions = build_trajectory(samples, 4, verify(samples), np.random.default_rng(0))
    assert [a.kind for a in actions] == [SOLVE, VERIFY, SOLVE, VERIFY]


def test_no_right_sample_means_no_trajectory():
    samples = attempts(0, 3)
    assert build_trajectory(samples, 4, verify(samples), np.random.default_rng(0)) is None


def test_attempts_without_a_kept_verification_are_not_used():
    samples = attempts(2, 3)
    kept = verify([samples[0], samples[-1]])  # one wrong attempt and the right one were verified
    actions = build_trajectory(samples, 4, kept, np.random.default_rng(0))
    assert [a.text for a in actions if a.kind == SOLVE] == [samples[0].text, samples[-1].text]
    assert build_trajectory(samples, 4, verify(samples[:3]), np.random.default_rng(0)) is None


def test_candidates_are_distinct_wrong_answers_and_a_few_right_attempts():
    samples = attempts(3, 2) + attempts(0, 1) + [Attempt("no answer", None, False)]
    assert candidates(samples, max_right=2) == samples[:2] + [samples[2]]


def test_styles_are_chosen_as_configured():
    rng = np.random.default_rng(0)
    assert {choose_style("confirmative", rng) for _ in range(10)} == {"confirmative"}
    assert {choose_style("mixed", rng) for _ in range(50)} == {"confirmative", "problem_solving"}
    assert {choose_style("mixed", rng, confirmative_share=1.0) for _ in range(50)} == {"confirmative"}
    confirmative = [choose_style("mixed", rng, confirmative_share=0.8) == "confirmative" for _ in range(2000)]
    assert abs(np.mean(confirmative) - 0.8) < 0.03  # 3.4 standard deviations
    with pytest.raises(ValueError):
        choose_style("vibes", rng)


def test_a_false_rejection_opens_a_one_round_trajectory_unlearned():
    samples = attempts(8, 0)
    actions = build_trajectory(samples, 1, verify(samples), np.random.default_rng(0))
    check = task.slipped_verification(PROBLEM, PROBLEM.answer, "confirmative", np.random.default_rng(0))
    opened = with_false_rejection(actions, check)
    assert [(a.kind, a.correct, a.mask) for a in opened] == [
        (SOLVE, True, 1), (VERIFY, False, 0), (SOLVE, True, 1), (VERIFY, True, 1)]
    assert opened[0].text == opened[2].text and opened[1].text == check
    with pytest.raises(ValueError):
        with_false_rejection(opened, check)  # only a one-round trajectory


def route_of(attempt: Attempt) -> str:
    return task.solution_route(PROBLEM, attempt.text)


def test_with_routes_the_right_attempt_after_a_rejection_takes_the_other_route():
    by_parts = Attempt(task.solution_text(task.solution_steps(PROBLEM, route="parts")), str(PROBLEM.answer), True)
    wrong = attempts(0, 1)  # slipped by the direct route
    samples = wrong + attempts(3, 0) + [by_parts]
    assert candidates(samples, route_of=route_of) == wrong + [samples[1], by_parts]  # one right attempt a route
    verifications = {a: task.verification(PROBLEM, int(a.answer), "problem_solving", route_of(a)) for a in samples}
    for seed in range(20):
        actions = build_trajectory(samples, 2, verifications, np.random.default_rng(seed), route_of)
        assert actions[2].text == by_parts.text
    finals = {build_trajectory(samples, 2, verifications, np.random.default_rng(seed))[2].text for seed in range(20)}
    assert finals == {by_parts.text, samples[1].text}  # without routes, either right attempt


def by_route(route: str, slipped_with: int | None = None) -> Attempt:
    """A right solution of PROBLEM by `route`, or one slipped with seed `slipped_with`."""
    if slipped_with is None:
        return Attempt(task.solution_text(task.solution_steps(PROBLEM, route=route)), str(PROBLEM.answer), True)
    text, answer = task.slipped_solution(PROBLEM, np.random.default_rng(slipped_with), route)
    return Attempt(text, str(answer), False)


def test_with_routes_the_right_attempt_takes_a_route_no_wrong_attempt_took():
    right = [by_route(route) for route in task.ROUTES]
    wrong = [by_route("direct", 0), by_route("parts", 1)]
    samples = wrong + right
    assert candidates(samples, 3, route_of) == samples and candidates(samples, route_of=route_of) == samples[:4]
    verifications = {a: task.verification(PROBLEM, int(a.answer), "problem_solving", route_of(a)) for a in samples}
    finals = {build_trajectory(samples, 3, verifications, np.random.default_rng(seed), route_of)[4].text
              for seed in range(20)}
    assert finals == {right[2].text}  # by `over`, whichever wrong attempt came last
    finals = {build_trajectory(wrong + right[:2], 3, verifications, np.random.default_rng(seed), route_of)[4].text
              for seed in range(20)}
    assert finals == {right[0].text, right[1].text}  # none untried: another route than the last wrong one's


def test_a_false_rejection_can_be_followed_by_a_retry_by_another_route():
    samples = attempts(1, 0)
    actions = build_trajectory(samples, 1, verify(samples), np.random.default_rng(0))
    check = task.slipped_verification(PROBLEM, PROBLEM.answer, "confirmative", np.random.default_rng(0))
    by_parts = Attempt(task.solution_text(task.solution_steps(PROBLEM, route="parts")), str(PROBLEM.answer), True)
    confirmation = task.verification(PROBLEM, PROBLEM.answer, "confirmative", "parts")
    opened = with_false_rejection(actions, check, (by_parts, confirmation))
    assert [(a.kind, a.text, a.correct, a.mask) for a in opened] == [
        (SOLVE, samples[0].text, True, 1), (VERIFY, check, False, 0), (SOLVE, by_parts.text, True, 1),
        (VERIFY, confirmation, True, 1)]
