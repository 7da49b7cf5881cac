"""The built-in task: five families of arithmetic word problems with integer answers.

Everything the recipe needs from a task is written here exactly, from the numbers a question was
drawn with: the question, step-by-step reference solutions by three routes (optionally with a *slip*,
a wrong intermediate result carried to a wrong answer), verifications of any proposed answer in both styles,
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


def evaluate(left: int, op: str, right: int) -> int:
    """What `left op right` is: the integer a step of the task must write."""
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    return left // right


class _Worksheet:
    """Steps written one at a time; a slip adds `slip` to the result of step `slip_at`, and the later
    steps compute correctly from whatever numbers they are given, carrying it on."""

    def __init__(self, slip_at: int | None = None, slip: int = 0):
        self.steps: list[Step] = []
        self.slip_at, self.slip = slip_at, slip

    def __call__(self, left: int, op: str, right: int) -> int:
        result = evaluate(left, op, right) + (self.slip if len(self.steps) == self.slip_at else 0)
        self.steps.append(Step(left, op, right, result))
        return result

    def subtract_in_parts(self, value: int, subtrahend: int) -> int:
        """`value - subtrahend` in two parts, the split written first (`49 - 9 = 40 .`), so that
        each part is copied from the step just written rather than cut from a number in the
        question: without that step π₀ subtracted the wrong units or tens 80-97 % of the time."""
        parts = _split_tens(subtrahend)
        if len(parts) == 2:
            self(subtrahend, "-", parts[1])
        for part in parts:
            value = self(value, "-", part)
        return value

    def product_by_parts(self, x: int, y: int) -> int:
        """x * y as `y - 1`, `x * (y-1)`, then `+ x`. The decrement is written out: left implicit
        (`6 * 8` for 9 bags of 6), picking the multiplier was the step an S²R SFT policy's checks of
        right answers failed most (56 of 138 failures)."""
        return self(self(x, "*", self(y, "-", 1)), "+", x)

    def subtract_by_rounding(self, value: int, subtrahend: int) -> int:
        """`value - subtrahend` with `value` first rounded up to the next ten (`83 + 7 = 90 .`), the
        subtraction from that round number, and the rounding taken back: every result stays positive,
        where rounding the subtrahend up instead would pass below zero for small differences."""
        rounding = 10 - value % 10
        return self(self(self(value, "+", rounding), "-", subtrahend), "-", rounding)

    def product_from_one_more(self, x: int, y: int) -> int:
        """x * y as `y + 1`, `x * (y+1)`, then `- x`: the parts route's product from the other side."""
        return self(self(x, "*", self(y, "+", 1)), "-", x)


# Every family is solved by three routes: `direct` (the operations as the question states them),
# `parts` (subtractions split into tens and units, products built from one factor less, family 4's
# takings summed first) and `over` (each number first made larger, then brought back: subtractions
# from the minuend rounded up to a ten, products from one factor more, family 4's new pens received
# first). With two routes a third attempt after two caught ones had none left untried, and retries
# by a tried route repeated the rejected answer 44-62 % of the time (experiments/RESULTS.md).
ROUTES = ("direct", "parts", "over")


def other_route(route: str) -> str:
    """The route a problem-solving check of an attempt by `route` solves by: `parts` checks
    `direct`, and `direct` (π₀'s surest) checks every other route."""
    return "parts" if route == "direct" else "direct"


def _subtract(sheet: _Worksheet, route: str, value: int, subtrahend: int) -> int:
    if route == "direct":
        return sheet(value, "-", subtrahend)
    if route == "parts":
        return sheet.subtract_in_parts(value, subtrahend)
    return sheet.subtract_by_rounding(value, subtrahend)


def _solve(problem: Problem, route: str, sheet: _Worksheet) -> int:
    """Writes `problem`'s solution by `route` on `sheet`; returns the answer it reaches."""
    if route not in ROUTES:
        raise ValueError(f"unknown solution route {route!r}; known: {', '.join(ROUTES)}")
    n = problem.numbers
    if problem.family == 1:
        b, c = n
        return _subtract(sheet, route, c, b)
    if problem.family == 2:
        a, k, c = n
        return sheet(_subtract(sheet, route, c, a), "/", k)
    if problem.family == 3:
        a = n[0]
        if route == "parts":
            return sheet(_product(problem, route, sheet), "+", a)
        return sheet(a, "+", _product(problem, route, sheet))
    if problem.family == 4:
        a, b, c, d = n
        if route == "direct":
            return sheet(sheet(sheet(a, "-", b), "-", c), "+", d)
        if route == "over":
            return sheet(sheet(sheet(a, "+", d), "-", b), "-", c)
        taken = sheet(b, "+", c)
        return sheet(sheet(a, "+", d), "-", taken)
    return _subtract(sheet, route, _product(problem, route, sheet), n[2])


def _product(problem: Problem, route: str, sheet: _Worksheet) -> int:
    """Families 3 and 5's product, of so much a bag (a week) by how many: as the question states it
    (`direct`), built from one bag (week) less (`parts`) or from one more (`over`)."""
    if problem.family == 3:
        _, count, each = problem.numbers
    else:
        each, count, _ = problem.numbers
    if route == "direct":
        return sheet(count, "*", each) if problem.family == 3 else sheet(each, "*", count)
    if route == "parts":
        return sheet.product_by_parts(each, count)
    return sheet.product_from_one_more(each, count)


def solution_steps(problem: Problem, slip_at: int | None = None, slip: int = 0, route: str = "direct") -> list[Step]:
    """The reference solution's steps by `route`; with `slip_at`, that step's result is off by `slip`."""
    sheet = _Worksheet(slip_at, slip)
    _solve(problem, route, sheet)
    return sheet.steps


def solution_text(steps: list[Step]) -> str:
    """A solve action: the steps, then the final answer."""
    return " ".join(step.text() for step in steps) + f" The answer is {steps[-1].result} ."


def solution_route(problem: Problem, text: str) -> str:
    """The route a written solution takes: the one whose first operation it opens with (`direct`
    when it opens with no other route's, a garbled start)."""
    opening = text.strip().split(" = ")[0]
    for route in ROUTES[1:]:
        step = solution_steps(problem, route=route)[0]
        if opening == f"{step.left} {step.op} {step.right}":
            return route
    return "direct"


def slipped_solution(problem: Problem, rng: np.random.Generator, route: str = "direct") -> tuple[str, int]:
    """A solution by `route` with one slip: a wrong intermediate result carried to a wrong, positive
    answer.

    The slip never falls on a step that a check of this attempt computes (family 2's division, say),
    for the right answer or for the wrong one it reaches, so no check can be passed by copying the
    attempt's wrong result.
    """
    def operations(steps: list[Step]) -> set[tuple[int, str, int]]:
        return {(s.left, s.op, s.right) for s in steps}

    def checked(answer: int) -> set[tuple[int, str, int]]:
        return set().union(*(operations(verification_steps(problem, answer, style, route)[0]) for style in STYLES))

    exact = solution_steps(problem, route=route)
    slippable = [i for i, step in enumerate(exact) if not operations([step]) & checked(problem.answer)]
    while True:
        slip_at = int(rng.choice(slippable))
        size = int(rng.integers(1, 11)) * (1 if rng.random() < 0.5 else -1)
        if problem.family == 2:
            size *= problem.numbers[1]  # keeps the division exact
        steps = solution_steps(problem, slip_at, size, route)
        answer = steps[-1].result
        if (answer > 0 and all(s.result > 0 for s in steps) and answer != problem.answer
                and not operations([steps[slip_at]]) & checked(answer)):
            return solution_text(steps), answer


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


def verification(problem: Problem, proposed: int, style: str, attempt_route: str = "direct") -> str:
    """A verify action for `proposed` (reached by `attempt_route`): a worked check, the difference of
    the two numbers it compares, and the verdict, "right" exactly when that difference is 0."""
    return _check_text(*verification_steps(problem, proposed, style, attempt_route))


def slipped_verification(problem: Problem, proposed: int, style: str, rng: np.random.Generator,
                         attempt_route: str = "direct") -> str:
    """A check that slips: its last worked step's result off by 1 to 10, carried into the comparison,
    which then rejects `proposed` whether or not it is right (the false rejections a policy's own
    checks make)."""
    steps, reached, target = verification_steps(problem, proposed, style, attempt_route)
    size = int(rng.integers(1, 11)) * (1 if rng.random() < 0.5 else -1)
    last = steps[-1]
    steps = steps[:-1] + [Step(last.left, last.op, last.right, last.result + size)]
    # the last step yields the number the check reached, except where it rebuilds the question's product
    if style == "confirmative" and problem.family in (3, 5):
        target += size
    else:
        reached += size
    return _check_text(steps, reached, target)


def check_difference(check: str) -> int | None:
    """The difference a written check ends on (`83 - 76 = 7 . So the answer is wrong .` → 7); None
    when it has no worked step."""
    found = re.findall(r"= (-?\d+) \.", check)
    return int(found[-1]) if found else None


def correction(problem: Problem, proposed: int, difference: int) -> str:
    """A retry read off a confirmative check that rejected `proposed` with `difference`: in every
    family that difference is the attempt's error (times k in family 2, whose check multiplies the
    answer by k), so `proposed` less it satisfies the conditions the check substituted it into: the
    right number one step away, where a retry that solved afresh repeated the rejected answer 44-62 %
    of the time. Taught by `data.correct_from_check`; the policy copied the difference a third of the
    time (experiments/RESULTS.md)."""
    sheet, size = _Worksheet(), abs(difference)
    if problem.family == 2:
        size = sheet(size, "/", problem.numbers[1])
    sheet(proposed, "-" if difference > 0 else "+", size)
    return solution_text(sheet.steps)


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
    operator), by either route, it opens with, the longer run of them deciding where styles open
    alike (family 3 with a = 1 and the answer equal to b); "other" when none's first one starts it
    (a garbled start)."""
    written = [step.split(" = ")[0].strip() for step in check.strip().split(" . ")]

    def opening_run(style: str, attempt_route: str) -> int:
        steps = verification_steps(problem, proposed, style, attempt_route)[0]
        expected = [f"{s.left} {s.op} {s.right}" for s in steps]
        return next((i for i, (w, e) in enumerate(zip(written, expected)) if w != e), min(len(written), len(expected)))

    runs = {(style, route): opening_run(style, route) for style in STYLES for route in ROUTES}
    best = max(runs, key=runs.get)
    return best[0] if runs[best] else "other"


def verification_steps(problem: Problem, proposed: int, style: str,
                       attempt_route: str = "direct") -> tuple[list[Step], int, int]:
    """The check's steps and the two numbers it compares. Where it computes what the attempt
    computed (the whole solution for a problem-solving check, the question's product for a
    confirmative one), it takes another route than the attempt (`other_route`)."""
    route = other_route(attempt_route)
    if style == "problem_solving":
        steps = solution_steps(problem, route=route)
        return steps, steps[-1].result, proposed
    if style != "confirmative":
        raise ValueError(f"unknown verification style {style!r}; known: {', '.join(STYLES)}")
    n, sheet = problem.numbers, _Worksheet()
    if problem.family == 1:
        b, c = n
        reached, target = sheet(proposed, "+", b), c
    elif problem.family == 2:
        a, k, c = n
        reached, target = sheet(a, "+", sheet(k, "*", proposed)), c
    elif problem.family == 4:
        a, b, c, d = n
        reached, target = sheet(sheet(sheet(proposed, "-", d), "+", c), "+", b), a
    else:  # families 3 and 5: undo the last operation, compare with the product the question gives
        a, _, c = n
        reached = sheet(proposed, "-", a) if problem.family == 3 else sheet(proposed, "+", c)
        target = _product(problem, route, sheet)
    return sheet.steps, reached, target
