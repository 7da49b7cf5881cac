"""The built-in task: five families of arithmetic word problems with integer answers.

Everything the recipe needs from a task is written here exactly, from the numbers a question was
drawn with: the question, a step-by-step reference solution (optionally with a *slip*, a wrong
intermediate result carried to a wrong answer), verifications of any proposed answer in both styles,
and an exact grader.

Verifications never repeat the attempt's own steps, so that they cannot be passed by copying its
intermediate numbers: a *problem-solving* check solves the question again by another route and
compares the answers; a *confirmative* check substitutes the proposed answer back into the
question's conditions, working backwards, and compares with a number the question states.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re

import numpy as np

FAMILIES = (1, 2, 3, 4, 5)
SPLITS = {"train": (0, 80), "validation": (80, 90), "test": (90, 100)}  # share of the hash space, in %
VERDICT_RIGHT = "So the answer is right ."
VERDICT_WRONG = "So the answer is wrong ."
STYLES = ("problem_solving", "confirmative")
_ANSWER = re.compile(r"The answer is (-?\d+) \.")


@dataclasses.dataclass(frozen=True)
class Problem:
    family: int
    numbers: tuple[int, ...]  # as drawn, in the order the family's question names them
    question: str
    answer: int

    @property
    def id(self) -> str:
        return f"f{self.family}-" + "-".join(map(str, self.numbers))


def make_problem(family: int, numbers: tuple[int, ...]) -> Problem:
    """The problem of `family` with these numbers (DESIGN.md section 4 wording)."""
    if family == 1:
        b, c = numbers
        question, answer = f"A number increased by {b} is {c}. What is the number?", c - b
    elif family == 2:
        a, k, c = numbers
        times = "twice" if k == 2 else f"{k} times"
        question, answer = f"{a} increased by {times} a number is {c}. What is the number?", (c - a) // k
    elif family == 3:
        a, b, c = numbers
        question = (f"Tom has {a} apples. He buys {b} bags with {c} apples each. "
                    "How many apples does Tom have now?")
        answer = a + b * c
    elif family == 4:
        a, b, c, d = numbers
        question = (f"A shop had {a} pens. It sold {b} pens in the morning and {c} pens in the afternoon, "
                    f"then received {d} new pens. How many pens does the shop have now?")
        answer = a - b - c + d
    elif family == 5:
        a, b, c = numbers
        question = f"Sam saves {a} dollars a week for {b} weeks and then spends {c} dollars. How many dollars does Sam have left?"
        answer = a * b - c
    else:
        raise ValueError(f"no family {family}")
    return Problem(family, tuple(numbers), question, answer)


def problem_of(problem_id: str) -> Problem:
    """The problem a `Problem.id` names (`f3-50-9-9`)."""
    family, *numbers = problem_id.removeprefix("f").split("-")
    return make_problem(int(family), tuple(int(n) for n in numbers))


def draw_numbers(family: int, rng: np.random.Generator) -> tuple[int, ...]:
    """Numbers from the ranges of DESIGN.md section 4."""
    pick = lambda low, high: int(rng.integers(low, high + 1))  # noqa: E731 - inclusive ranges, as written there
    if family == 1:
        b, x = pick(10, 99), pick(1, 99)
        return b, b + x
    if family == 2:
        a, k, x = pick(10, 99), pick(2, 9), pick(1, 20)
        return a, k, a + k * x
    if family == 3:
        return pick(1, 50), pick(2, 9), pick(2, 12)
    if family == 4:
        a = pick(30, 99)
        b = pick(1, a // 2)
        return a, b, pick(1, a - b - 1), pick(1, 50)
    a, b = pick(2, 20), pick(2, 9)
    return a, b, pick(1, a * b - 1)


def split_of(problem: Problem) -> str:
    """train / validation / test, fixed by a hash of the question, so the draws never overlap."""
    bucket = int(hashlib.sha256(problem.question.encode()).hexdigest(), 16) % 100
    return next(name for name, (low, high) in SPLITS.items() if low <= bucket < high)


def draw_problem(split: str, rng: np.random.Generator, families: tuple[int, ...] = FAMILIES) -> Problem:
    """One problem of `split`, its family drawn uniformly."""
    while True:
        family = families[int(rng.integers(len(families)))]
        problem = make_problem(family, draw_numbers(family, rng))
        if split_of(problem) == split:
            return problem


def draw_problems(split: str, count: int, seed: int, families: tuple[int, ...] = FAMILIES) -> list[Problem]:
    """`count` distinct problems of `split`, families in turn, reproducible from `seed`.

    Family 3 has about 4,400 distinct questions in all; a count no family mix can reach is an error.
    """
    rng = np.random.default_rng([seed, list(SPLITS).index(split)])
    problems: dict[str, Problem] = {}
    for attempt in range(100 * count):
        if len(problems) == count:
            break
        family = families[attempt % len(families)]
        problem = make_problem(family, draw_numbers(family, rng))
        if split_of(problem) == split:
            problems.setdefault(problem.question, problem)
    if len(problems) < count:
        raise ValueError(f"only {len(problems)} distinct {split} problems found, {count} asked for")
    return list(problems.values())


# -- solutions ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Step:
    left: int
    op: str
    right: int
    result: int

    def text(self) -> str:
        return f"{self.left} {self.op} {self.right} = {self.result} ."


def _apply(left: int, op: str, right: int) -> int:
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    return left // right


def _chain(start: int, operations: list[tuple[str, int]], slip_at: int | None = None, slip: int = 0) -> list[Step]:
    """Steps `start op1 x1 = r1 . r1 op2 x2 = r2 ...`; a slip adds `slip` to one step's result and
    the later steps carry the wrong value on, computed correctly from it."""
    steps, value = [], start
    for i, (op, operand) in enumerate(operations):
        result = _apply(value, op, operand) + (slip if i == slip_at else 0)
        steps.append(Step(value, op, operand, result))
        value = result
    return steps


def solution_steps(problem: Problem, slip_at: int | None = None, slip: int = 0) -> list[Step]:
    """The reference solution's steps; with `slip_at`, that step's result is off by `slip`."""
    n = problem.numbers
    if problem.family == 1:
        b, c = n
        return _chain(c, [("-", b)], slip_at, slip)
    if problem.family == 2:
        a, k, c = n
        return _chain(c, [("-", a), ("/", k)], slip_at, slip)
    if problem.family == 3:
        a, b, c = n
        (product,) = _chain(b, [("*", c)], slip_at, slip)
        return [product] + _chain(a, [("+", product.result)], slip_at - 1 if slip_at else None, slip)
    if problem.family == 4:
        a, b, c, d = n
        return _chain(a, [("-", b), ("-", c), ("+", d)], slip_at, slip)
    a, b, c = n
    return _chain(a, [("*", b), ("-", c)], slip_at, slip)


def solution_text(steps: list[Step]) -> str:
    """A solve action: the steps, then the final answer."""
    return " ".join(step.text() for step in steps) + f" The answer is {steps[-1].result} ."


def slipped_solution(problem: Problem, rng: np.random.Generator) -> tuple[str, int]:
    """A solution with one slip: a wrong intermediate result carried to a wrong, positive answer.

    The slip never falls on a step that a check of this problem also computes (family 2's division,
    say), so no check can be passed by copying the attempt's wrong result.
    """
    checked = {(s.left, s.op, s.right) for style in STYLES for s in verification_steps(problem, problem.answer, style)[0]}
    slippable = [i for i, s in enumerate(solution_steps(problem)) if (s.left, s.op, s.right) not in checked]
    while True:
        slip_at = int(rng.choice(slippable))
        size = int(rng.integers(1, 11)) * (1 if rng.random() < 0.5 else -1)
        if problem.family == 2:
            size *= problem.numbers[1]  # keeps the division exact
        steps = solution_steps(problem, slip_at, size)
        if steps[-1].result > 0 and all(s.result > 0 for s in steps) and steps[-1].result != problem.answer:
            return solution_text(steps), steps[-1].result


def final_answer(text: str) -> int | None:
    """The last `The answer is N .` of a solve action, or None if it has none."""
    found = _ANSWER.findall(text)
    return int(found[-1]) if found else None


def grade(problem: Problem, text: str) -> bool:
    return graded(problem, text)[0]


def graded(problem: Problem, text: str) -> tuple[bool, str | None]:
    """(Is `text`'s final answer right?, that answer as text; None if it has none)."""
    answer = final_answer(text)
    return answer == problem.answer, None if answer is None else str(answer)


# -- verifications -----------------------------------------------------------------------------

def _split_tens(value: int) -> list[int]:
    """27 → [20, 7]; 50 → [40, 10]; 10 → [5, 5]; 7 → [6, 1]: a problem-solving check subtracts in two
    parts, so that none of its steps is the attempt's single subtraction (1 cannot be split)."""
    tens, units = value - value % 10, value % 10
    if value < 10:
        return [value - 1, 1] if value > 1 else [value]
    if units:
        return [tens, units]
    return [tens - 10, 10] if tens > 10 else [5, 5]


def _verdict(same: bool) -> str:
    return VERDICT_RIGHT if same else VERDICT_WRONG


def _product_by_parts(x: int, y: int) -> list[Step]:
    """x * y as `y - 1`, `x * (y-1)`, then `+ x`: another route than the attempt's `x * y`. The
    decrement is written out: left implicit (`6 * 8` for 9 bags of 6), picking the multiplier was
    the step an S²R SFT policy's checks of right answers failed most (56 of 138 failures)."""
    (decrement,) = _chain(y, [("-", 1)])
    (partial,) = _chain(x, [("*", decrement.result)])
    return [decrement, partial] + _chain(partial.result, [("+", x)])


def verification(problem: Problem, proposed: int, style: str) -> str:
    """A verify action for `proposed`: a worked check, the difference of the two numbers it compares,
    and the verdict, "right" exactly when that difference is 0."""
    return _check_text(*verification_steps(problem, proposed, style))


def slipped_verification(problem: Problem, proposed: int, style: str, rng: np.random.Generator) -> str:
    """A check that slips: its last worked step's result off by 1 to 10, carried into the comparison,
    which then rejects `proposed` whether or not it is right (the false rejections a policy's own
    checks make)."""
    steps, reached, target = verification_steps(problem, proposed, style)
    size = int(rng.integers(1, 11)) * (1 if rng.random() < 0.5 else -1)
    last = steps[-1]
    steps = steps[:-1] + [Step(last.left, last.op, last.right, last.result + size)]
    # the last step yields the number the check reached, except where it rebuilds the question's product
    if style == "confirmative" and problem.family in (3, 5):
        target += size
    else:
        reached += size
    return _check_text(steps, reached, target)


def _check_text(steps: list[Step], reached: int, target: int) -> str:
    """The worked steps, the comparison of the two numbers they reached, and its verdict."""
    body = " ".join(s.text() for s in steps + [comparison(reached, target)])
    return f"{body} {_verdict(reached == target)}"


def comparison(reached: int, target: int) -> Step:
    """The check's last step, `reached - target = d`: a tiny model reads a verdict off `= 0 .` at
    once, where comparing `61 vs 61` stayed at chance after 2,100 steps of pretraining."""
    return Step(reached, "-", target, reached - target)


def written_style(problem: Problem, proposed: int, check: str) -> str:
    """The style a written check of `proposed` follows: the one whose operations (operands and
    operator) it opens with, the longer run of them deciding where both styles open alike (family 3
    with a = 1 and the answer equal to b); "other" when neither's first one starts it (a garbled start)."""
    written = [step.split(" = ")[0].strip() for step in check.strip().split(" . ")]

    def opening_run(style: str) -> int:
        expected = [f"{s.left} {s.op} {s.right}" for s in verification_steps(problem, proposed, style)[0]]
        return next((i for i, (w, e) in enumerate(zip(written, expected)) if w != e), min(len(written), len(expected)))

    runs = {style: opening_run(style) for style in STYLES}
    best = max(STYLES, key=runs.get)
    return best if runs[best] else "other"


def verification_steps(problem: Problem, proposed: int, style: str) -> tuple[list[Step], int, int]:
    """The check's steps and the two numbers it compares."""
    n = problem.numbers
    if style == "problem_solving":
        if problem.family == 1:
            b, c = n
            steps = _chain(c, [("-", part) for part in _split_tens(b)])
        elif problem.family == 2:
            a, k, c = n
            steps = _chain(c, [("-", part) for part in _split_tens(a)] + [("/", k)])
        elif problem.family == 3:
            a, b, c = n
            product = _product_by_parts(c, b)
            steps = product + _chain(product[-1].result, [("+", a)])
        elif problem.family == 4:
            a, b, c, d = n
            steps = _chain(b, [("+", c)]) + _chain(a, [("+", d), ("-", b + c)])
        else:
            a, b, c = n
            product = _product_by_parts(a, b)
            steps = product + _chain(product[-1].result, [("-", part) for part in _split_tens(c)])
        return steps, steps[-1].result, proposed
    if style != "confirmative":
        raise ValueError(f"unknown verification style {style!r}; known: {', '.join(STYLES)}")
    if problem.family == 1:
        b, c = n
        steps = _chain(proposed, [("+", b)])
        reached, target = steps[-1].result, c
    elif problem.family == 2:
        a, k, c = n
        steps = _chain(k, [("*", proposed)]) + _chain(a, [("+", k * proposed)])
        reached, target = steps[-1].result, c
    elif problem.family == 4:
        a, b, c, d = n
        steps = _chain(proposed, [("-", d), ("+", c), ("+", b)])
        reached, target = steps[-1].result, a
    else:  # families 3 and 5: undo the last operation, compare with the product the question gives
        a, b, c = n
        undo = _chain(proposed, [("-", a)]) if problem.family == 3 else _chain(proposed, [("+", c)])
        product = _product_by_parts(c, b) if problem.family == 3 else _product_by_parts(a, b)
        steps = undo + product
        reached, target = undo[0].result, product[-1].result
    return steps, reached, target
