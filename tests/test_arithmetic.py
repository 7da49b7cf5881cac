"""The built-in task: exact wording and answers, disjoint splits, slips, verdicts of both styles."""

import itertools
import operator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sv_jax.tasks import arithmetic as task


def test_questions_are_worded_as_designed():
    assert task.make_problem(1, (27, 39)).question == "A number increased by 27 is 39. What is the number?"
    assert task.make_problem(2, (27, 2, 39)).question == "27 increased by twice a number is 39. What is the number?"
    assert task.make_problem(2, (27, 3, 39)).question == "27 increased by 3 times a number is 39. What is the number?"
    assert task.make_problem(3, (5, 3, 4)).answer == 17
    assert task.make_problem(4, (50, 10, 5, 7)).answer == 42
    assert task.make_problem(5, (6, 4, 10)).answer == 14


@given(seed=st.integers(0, 2**32 - 1), family=st.sampled_from(task.FAMILIES))
def test_draws_stay_in_the_designed_ranges(seed, family):
    problem = task.make_problem(family, task.draw_numbers(family, np.random.default_rng(seed)))
    n, answer = problem.numbers, problem.answer
    if family == 1:
        assert 10 <= n[0] <= 99 and 1 <= answer <= 99
    elif family == 2:
        assert 10 <= n[0] <= 99 and 2 <= n[1] <= 9 and 1 <= answer <= 20 and n[0] + n[1] * answer == n[2]
    elif family == 3:
        assert 1 <= n[0] <= 50 and 2 <= n[1] <= 9 and 2 <= n[2] <= 12
    elif family == 4:
        a, b, c, d = n
        assert 30 <= a <= 99 and 1 <= b <= a // 2 and 1 <= c <= a - b - 1 and 1 <= d <= 50 and answer > 0
    else:
        a, b, c = n
        assert 2 <= a <= 20 and 2 <= b <= 9 and 1 <= c <= a * b - 1 and answer > 0


def test_splits_are_disjoint_reproducible_and_cover_every_family():
    train = task.draw_problems("train", 400, seed=0)
    validation = task.draw_problems("validation", 100, seed=0)
    test = task.draw_problems("test", 100, seed=0)
    questions = [{p.question for p in split} for split in (train, validation, test)]
    assert sum(map(len, questions)) == len(set.union(*questions)) == 600
    assert [p.question for p in task.draw_problems("test", 100, seed=0)] == [p.question for p in test]
    assert {p.family for p in test} == set(task.FAMILIES)
    assert all(task.split_of(p) == "test" for p in test)


@settings(max_examples=300)
@given(seed=st.integers(0, 2**32 - 1), family=st.sampled_from(task.FAMILIES), route=st.sampled_from(task.ROUTES))
def test_solutions_grade_right_and_slips_grade_wrong_by_either_route(seed, family, route):
    rng = np.random.default_rng(seed)
    problem = task.make_problem(family, task.draw_numbers(family, rng))
    solution = task.solution_text(task.solution_steps(problem, route=route))
    assert task.grade(problem, solution) and task.solution_route(problem, solution) == route
    slipped, wrong_answer = task.slipped_solution(problem, rng, route)
    assert not task.grade(problem, slipped) and task.final_answer(slipped) == wrong_answer > 0
    assert task.solution_route(problem, " " + slipped) == route


def test_the_routes_open_apart_and_share_few_steps():
    """A retry by another route reworks the question: it opens with another operation, and shares
    at most one step with `direct` (family 2's division of the same difference, say), two with
    `parts` (`over` ends on the same subtraction of the units where the rounding equals them)."""
    for problem in task.draw_problems("train", 500, seed=2):
        steps = {route: {s.text() for s in task.solution_steps(problem, route=route)} for route in task.ROUTES}
        for first, second in itertools.combinations(task.ROUTES, 2):
            assert task.solution_steps(problem, route=first)[0] != task.solution_steps(problem, route=second)[0]
            assert len(steps[first] & steps[second]) <= (2 if {first, second} == {"parts", "over"} else 1), problem
    assert [task.other_route(route) for route in task.ROUTES] == ["parts", "direct", "direct"]


def test_the_over_route_rounds_up_and_takes_the_rounding_back():
    assert task.solution_text(task.solution_steps(task.problem_of("f1-37-83"), route="over")) == (
        "83 + 7 = 90 . 90 - 37 = 53 . 53 - 7 = 46 . The answer is 46 .")
    assert task.solution_text(task.solution_steps(task.problem_of("f3-5-6-9"), route="over")) == (
        "6 + 1 = 7 . 9 * 7 = 63 . 63 - 9 = 54 . 5 + 54 = 59 . The answer is 59 .")
    assert task.solution_text(task.solution_steps(task.problem_of("f4-80-20-30-15"), route="over")) == (
        "80 + 15 = 95 . 95 - 20 = 75 . 75 - 30 = 45 . The answer is 45 .")
    for problem in task.draw_problems("train", 500, seed=4):
        assert all(step.result > 0 for step in task.solution_steps(problem, route="over")), problem


def test_the_parts_route_subtracts_only_numbers_it_has_written():
    """A split subtrahend is written out first (`52 - 2 = 50 .`), so that no part is cut from a
    number in the question: every number the parts route subtracts from its running result (but a
    lone 1) is in an earlier step."""
    problem = task.problem_of("f1-52-123")
    assert task.solution_text(task.solution_steps(problem, route="parts")) == (
        "52 - 2 = 50 . 123 - 50 = 73 . 73 - 2 = 71 . The answer is 71 .")
    for problem in task.draw_problems("train", 500, seed=3):
        steps = task.solution_steps(problem, route="parts")
        for i, step in enumerate(steps):
            if i and step.op == "-" and step.left == steps[i - 1].result and step.right != 1:
                assert any(step.right in (s.left, s.right, s.result) for s in steps[:i]), (problem, step)


@settings(max_examples=400)
@given(seed=st.integers(0, 2**32 - 1), family=st.sampled_from(task.FAMILIES),
       style=st.sampled_from(task.STYLES), offset=st.integers(-30, 30), route=st.sampled_from(task.ROUTES))
def test_verifications_end_in_the_true_verdict(seed, family, style, offset, route):
    problem = task.make_problem(family, task.draw_numbers(family, np.random.default_rng(seed)))
    proposed = problem.answer + offset
    text = task.verification(problem, proposed, style, route)
    expected = task.VERDICT_RIGHT if offset == 0 else task.VERDICT_WRONG
    assert text.endswith(expected) and text.count("So the answer is") == 1
    assert task.written_style(problem, proposed, " " + text) == style
    assert task.written_style(problem, proposed, "0 + 0 = 0 . " + text) == "other"  # no check opens so


@settings(max_examples=200)
@given(seed=st.integers(0, 2**32 - 1), family=st.sampled_from(task.FAMILIES), style=st.sampled_from(task.STYLES),
       route=st.sampled_from(task.ROUTES))
def test_a_slipped_check_rejects_a_right_answer_by_one_wrong_step(seed, family, style, route):
    problem = task.make_problem(family, task.draw_numbers(family, np.random.default_rng(seed)))
    true_check = task.verification(problem, problem.answer, style, route).split(" . ")
    slipped = task.slipped_verification(problem, problem.answer, style, np.random.default_rng(seed), route).split(" . ")
    assert slipped[-1] == task.VERDICT_WRONG and task.written_style(
        problem, problem.answer, " " + " . ".join(slipped)) == style
    # the steps agree but for the last worked one (its result off) and the comparison it feeds
    assert slipped[:-3] == true_check[:-3] and slipped[-3] != true_check[-3]
    assert wrong_left_sides(slipped[-3]) and not wrong_left_sides(slipped[-2])


OPERATIONS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.floordiv}


def wrong_left_sides(text: str) -> set[str]:
    """`L op R` of every step `L op R = X .` of a solution whose X is not L op R."""
    wrong = set()
    for step in text.split(" . "):
        if " = " in step:
            left_side, result = step.split(" = ")
            left, op, right = left_side.split()
            true = OPERATIONS[op](int(left), int(right))
            if true != int(result):
                wrong.add(left_side)
    return wrong


def left_sides(text: str) -> set[str]:
    return {step.split(" = ")[0].strip() for step in text.split(" . ") if " = " in step}


@pytest.mark.parametrize("route", task.ROUTES)
def test_a_check_never_recomputes_the_slipped_step(route):
    """Copying a wrong attempt cannot produce its check: no step of the check has the left side of the
    attempt's slipped step, so the number the check needs there must be computed afresh."""
    rng = np.random.default_rng(0)
    for problem in task.draw_problems("train", 1000, seed=1):
        slipped, wrong = task.slipped_solution(problem, rng, route)
        (slipped_step,) = wrong_left_sides(slipped)
        for style in task.STYLES:
            assert slipped_step not in left_sides(task.verification(problem, wrong, style, route)), (slipped, style)


@pytest.mark.parametrize("route", task.ROUTES)
def test_a_problem_solving_check_takes_the_route_its_attempt_did_not(route):
    for problem in task.draw_problems("train", 200, seed=4):
        check, _, _ = task.verification_steps(problem, problem.answer, "problem_solving", route)
        assert check == task.solution_steps(problem, route=task.other_route(route))


def test_final_answer_reads_the_last_answer_sentence():
    assert task.final_answer("5 + 5 = 10 . The answer is 10 . no, The answer is 11 .") == 11
    assert task.final_answer("The answer is") is None
    assert task.final_answer("") is None


def test_asking_for_more_problems_than_exist_is_an_error():
    with pytest.raises(ValueError, match="distinct test problems"):
        task.draw_problems("test", 1000, seed=0, families=(3,))  # family 3 has ~440 test questions


def test_a_problem_is_recovered_from_its_id():
    for problem in task.draw_problems("test", 50, seed=3):
        assert task.problem_of(problem.id) == problem


@settings(max_examples=200)
@given(seed=st.integers(0, 2**32 - 1), family=st.sampled_from(task.FAMILIES),
       style=st.sampled_from(task.STYLES), offset=st.integers(-30, 30), route=st.sampled_from(task.ROUTES))
def test_a_checks_multiplications_use_only_written_numbers(seed, family, style, offset, route):
    """Both factors of every product in a check stand in the question or in an earlier step: a tiny
    model that has to work a multiplier out unwritten (`6 * 8` for 9 bags of 6) picks it wrong."""
    problem = task.make_problem(family, task.draw_numbers(family, np.random.default_rng(seed)))
    proposed = problem.answer + offset
    steps, _, _ = task.verification_steps(problem, proposed, style, route)
    written = set(problem.numbers) | {proposed}
    for step in steps:
        if step.op == "*":
            assert {step.left, step.right} <= written, (problem.question, step.text())
        written.add(step.result)


def test_a_correction_read_off_a_confirmative_rejection_is_right():
    """Every family's confirmative check ends on the attempt's error (times k in family 2), so the
    rejected answer less it is the right answer, whichever route slipped and by how much."""
    rng = np.random.default_rng(0)
    for _ in range(500):
        family = int(rng.integers(1, 6))
        problem = task.make_problem(family, task.draw_numbers(family, rng))
        for route in task.ROUTES:
            wrong = task.slipped_solution(problem, rng, route)[1]
            check = task.verification(problem, wrong, "confirmative", route)
            assert task.grade(problem, task.correction(problem, wrong, task.check_difference(check)))
    one = task.make_problem(1, (37, 83))  # 46 is right
    assert task.check_difference(task.verification(one, 53, "confirmative")) == 7
    assert task.correction(one, 53, 7) == "53 - 7 = 46 . The answer is 46 ."
    two = task.make_problem(2, (30, 2, 108))  # 39 is right: 2 * 32 = 64, 30 + 64 = 94, 94 - 108 = -14
    assert task.correction(two, 32, -14) == "14 / 2 = 7 . 32 + 7 = 39 . The answer is 39 ."
