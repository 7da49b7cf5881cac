"""What follows a first check that rejects its attempt, pooled over evaluation records.

A retry can only gain accuracy where the check was right to reject (a true catch) and the retry then
reaches the right answer; it loses it where the check rejected a right answer (a false rejection) and
the retry ends wrong. This prints both halves, and how often the second attempt repeats the first
answer, for each policy's records (`workdir/eval/<policy>.records.jsonl` of the built-in task):

    python experiments/s2r_arith/retries.py runs/s2r_arith/seed_*/eval/rl_process.records.jsonl

A policy whose first attempts improve leaves its checks the harder errors, so its rates compare
badly with an earlier policy's on other questions. `--against` (records of another policy, file by
file in the same order) also compares the two on the questions where both caught a wrong first attempt.

Only a problem-solving check reaches the right answer itself, so a retry after it can take the
check's route and number; a confirmative one leaves the retry to solve afresh. The last table splits
the true first catches by the check's style, and by whether it is the task's own check to the
character (an inexact one slipped or garbled a step).

Every check ends on `reached - target = d`, and d says where the right answer lies: a confirmative
check's reached number moves with the proposed answer (k times as fast in family 2), a
problem-solving one's reached number is its own answer. The last line asks what a retry that wrote
that number would have done: how often it is right after a true first catch, and how often it keeps
the right answer after a false one (a slipped check points elsewhere).

The evaluation's fix and repeat rates count every retry after a true catch, later rounds too. The
task has three routes (a π₀ may learn two), so once the attempts before a retry have taken every
one, the retry can only rerun one of them; the route table splits those retries by the routes
already taken (one, or several) and the retry's own (one of those, or not). The last table splits
every retry after a rejection by whether it reads its answer off the rejecting check, as
`data.correct_from_check` teaches.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sv_jax import evaluation  # noqa: E402
from sv_jax.tasks import arithmetic, builtin  # noqa: E402
from sv_jax.trajectory import SOLVE, parse  # noqa: E402

COMPARISON = re.compile(r"(-?\d+) - (-?\d+) = (-?\d+) \. " + re.escape(arithmetic.VERDICT_WRONG))


def records(paths: list[Path]) -> Iterator[dict]:
    """Every evaluation record of `paths`, file after file."""
    for path in paths:
        for line in path.read_text().splitlines():
            yield json.loads(line)


def rejected_first(attempts: list[dict]) -> bool:
    """Whether the first check rejected the first attempt, rightly or not, and a second attempt followed."""
    return len(attempts) >= 2 and attempts[0]["verdict"] is False


def caught_first(attempts: list[dict]) -> bool:
    """Whether the first check rightly rejected a wrong first attempt and a second attempt followed."""
    return rejected_first(attempts) and attempts[0]["correct"] is False


def first_check(record: dict) -> str:
    """The text of a record's first verification."""
    return parse(record["response"], builtin.CUES)[1].text


def repeats(attempts: list[dict]) -> bool:
    """Whether the second attempt gave the first one's answer (two missing answers are not a repeat)."""
    return attempts[1]["answer"] is not None and attempts[1]["answer"] == attempts[0]["answer"]


def tally(paths: list[Path]) -> dict[str, int]:
    counts = dict.fromkeys(("responses", "true_catches", "fixed", "catch_repeated", "catch_new", "catch_new_right",
                            "false_rejections", "broken", "rejection_repeated"), 0)
    for record in records(paths):
        counts["responses"] += 1
        attempts = record["attempts"]
        if not rejected_first(attempts):
            continue
        repeated = repeats(attempts)
        if attempts[0]["correct"]:
            counts["false_rejections"] += 1
            counts["broken"] += not attempts[-1]["correct"]
            counts["rejection_repeated"] += repeated
        else:
            counts["true_catches"] += 1
            counts["fixed"] += attempts[-1]["correct"]
            counts["catch_repeated"] += repeated
            counts["catch_new"] += not repeated
            counts["catch_new_right"] += not repeated and attempts[1]["correct"]
    return counts


def first_catches(path: Path) -> dict[str, tuple[bool, bool]]:
    """Per question whose first check rejected a wrong first attempt: (second attempt right, second
    attempt repeats the first answer)."""
    caught = {}
    for record in records([path]):
        attempts = record["attempts"]
        if caught_first(attempts):
            caught[record["id"]] = (bool(attempts[1]["correct"]), repeats(attempts))
    return caught


def paired(paths: list[Path], others: list[Path]) -> str:
    """The second attempt after a true first catch, on the questions both policies caught (file i of
    `paths` against file i of `others`): right and repeated, for each."""
    if len(paths) != len(others):
        raise SystemExit(f"--against: {len(others)} files for {len(paths)} records files")
    ours, theirs = [], []
    for path, other in zip(paths, others):
        mine, its = first_catches(path), first_catches(other)
        ours += [mine[q] for q in mine if q in its]
        theirs += [its[q] for q in mine if q in its]
    count = lambda pairs, index: sum(pair[index] for pair in pairs)  # noqa: E731
    return (f"  on the {len(ours)} questions both caught first: second attempt right {count(ours, 0)} against "
            f"{count(theirs, 0)}, repeats the first answer {count(ours, 1)} against {count(theirs, 1)}")


def exact(problem: arithmetic.Problem, proposed: int, check: str) -> bool:
    """Whether a check is the task's own for `proposed`, by either route, to the character: a
    problem-solving one then reached the right answer."""
    return any(check.strip() == arithmetic.verification(problem, proposed, style, route)
               for style in arithmetic.STYLES for route in arithmetic.ROUTES)


def by_check(paths: list[Path]) -> Counter:
    """Over true first catches, by (the check's style, the task's own check?): how many, and how many
    second attempts were right."""
    counts: Counter = Counter()
    for record in records(paths):
        attempts = record["attempts"]
        if not caught_first(attempts):
            continue
        problem = arithmetic.problem_of(record["id"])
        check = first_check(record)
        if attempts[0]["answer"] is None:
            key = ("no answer", False)
        else:
            proposed = int(attempts[0]["answer"])
            key = arithmetic.written_style(problem, proposed, check), exact(problem, proposed, check)
        counts[(*key, "caught")] += 1
        counts[(*key, "fixed")] += bool(attempts[1]["correct"])
    return counts


def pointed_answer(problem: arithmetic.Problem, proposed: int, check: str) -> int | None:
    """The answer a rejecting check's last step points at (module docstring); None where the check
    ends on no comparison or its difference does not divide."""
    comparison = COMPARISON.search(check)
    if comparison is None:
        return None
    reached, difference = int(comparison.group(1)), int(comparison.group(3))
    if arithmetic.written_style(problem, proposed, check) == "problem_solving":
        return reached
    rate = problem.numbers[1] if problem.family == 2 else 1
    return proposed - difference // rate if difference % rate == 0 else None


def by_pointed_answer(paths: list[Path]) -> Counter:
    """Over first checks that rejected an attempt with an answer, rightly or not: how many, and how
    often the answer the check points at is the right one."""
    counts: Counter = Counter()
    for record in records(paths):
        attempts = record["attempts"]
        if not rejected_first(attempts) or attempts[0]["answer"] is None:
            continue
        problem = arithmetic.problem_of(record["id"])
        kind = "false" if attempts[0]["correct"] else "true"
        counts[kind] += 1
        pointed = pointed_answer(problem, int(attempts[0]["answer"]), first_check(record))
        counts[kind, "right"] += pointed == problem.answer
    return counts


def describe_pointed(counts: Counter) -> str:
    return (f"  the answer the first check points at: right after {counts['true', 'right']} / {counts['true']} "
            f"true catches, after {counts['false', 'right']} / {counts['false']} false rejections")


def describe_checks(counts: Counter) -> str:
    rows = ["  after a true first catch, by the check (style, the task's own or not): catches, second attempt right"]
    for style, is_exact in sorted({key[:2] for key in counts}):
        caught, fixed = counts[style, is_exact, "caught"], counts[style, is_exact, "fixed"]
        check = "exact" if is_exact else "inexact"
        rows.append(f"    {style:15s} {check:7s} {caught:4d}  {fixed:4d} ({fixed / caught:.0%})")
    return "\n".join(rows)


def by_routes_tried(paths: list[Path]) -> Counter:
    """Over every retry after a true catch, by (the routes the attempts before it took: one or several,
    the retry's route: one of those or not): how many, how many right, how many repeat an answer
    rejected earlier in the response (the evaluation's fix and repeat rates, split)."""
    counts: Counter = Counter()
    for record in records(paths):
        problem = arithmetic.problem_of(record["id"])
        routes = [arithmetic.solution_route(problem, action.text)
                  for action in parse(record["response"], builtin.CUES) if action.kind == SOLVE]
        # records keep no `verified`, which the retries do not read
        attempts = [evaluation.Attempt(a["correct"], a["verdict"], a["verdict"] is not None, a["answer"])
                    for a in record["attempts"]]
        for index, repeated in evaluation.retries_after_catches(attempts):
            tried = set(routes[:index])
            key = "several" if len(tried) > 1 else "one", "tried" if routes[index] in tried else "untried"
            counts[(*key, "retries")] += 1
            counts[(*key, "right")] += bool(attempts[index].correct)
            counts[(*key, "repeats")] += repeated
    return counts


def describe_routes(counts: Counter) -> str:
    rows = ["  retries after a true catch, by the routes taken before (one / several) and the retry's: retries, "
            "right, repeats"]
    for before, retry in (("one", "tried"), ("one", "untried"), ("several", "tried"), ("several", "untried")):
        n, right, repeats_ = (counts[before, retry, figure] for figure in ("retries", "right", "repeats"))
        rows.append(f"    {before:7s} {retry:7s} {n:4d}  {right:4d} ({right / max(n, 1):.0%})  "
                    f"{repeats_:4d} ({repeats_ / max(n, 1):.0%})")
    return "\n".join(rows)


def reads_off_check(problem: arithmetic.Problem, rejected: str | None, check: str, retry: str) -> bool:
    """Whether `retry` opens as the correction read off `check` would (`data.correct_from_check`):
    with the rejected answer moved by the check's difference (divided by k first in family 2)."""
    difference = arithmetic.check_difference(check)
    if rejected is None or not difference:
        return False
    opening = arithmetic.correction(problem, int(rejected), difference).split(" = ")[0]
    return retry.strip().split(" = ")[0] == opening


def by_reading(paths: list[Path]) -> Counter:
    """Over every retry after a rejection (true catch or false), by whether it reads its answer off the
    check that rejected: how many, right, repeating a rejected answer, and how many stand in a response
    that ends wrong (counted per retry: a response with two such retries counts twice)."""
    counts: Counter = Counter()
    for record in records(paths):
        problem = arithmetic.problem_of(record["id"])
        actions = parse(record["response"], builtin.CUES)
        attempts = record["attempts"]
        rejected = set()
        for index, attempt in enumerate(attempts[:-1]):
            if attempt["verdict"] is not False or 2 * index + 2 >= len(actions):
                continue
            rejected.add(attempt["answer"])
            retry = attempts[index + 1]
            key = ("false" if attempt["correct"] else "true",
                   "read" if reads_off_check(problem, attempt["answer"], actions[2 * index + 1].text,
                                             actions[2 * index + 2].text) else "afresh")
            counts[(*key, "retries")] += 1
            counts[(*key, "right")] += bool(retry["correct"])
            counts[(*key, "repeats")] += retry["answer"] is not None and retry["answer"] in rejected
            counts[(*key, "ends wrong")] += not attempts[-1]["correct"]
    return counts


def describe_reading(counts: Counter) -> str:
    rows = ["  retries after a rejection (true / false), read off the check or solved afresh: retries, right, "
            "repeats, whose response ends wrong"]
    for kind in ("true", "false"):
        for how in ("read", "afresh"):
            n, right, repeats_, wrong = (counts[kind, how, figure] for figure in ("retries", "right", "repeats",
                                                                                 "ends wrong"))
            rows.append(f"    {kind:5s} {how:6s} {n:4d}  {right:4d} ({right / max(n, 1):.0%})  "
                        f"{repeats_:4d} ({repeats_ / max(n, 1):.0%})  {wrong:4d}")
    return "\n".join(rows)


def describe(c: dict[str, int]) -> str:
    share = lambda part, whole: f"{c[part]} / {c[whole]} ({c[part] / max(c[whole], 1):.0%})"  # noqa: E731
    rejected = c["true_catches"] + c["false_rejections"]
    return (f"{c['responses']} responses; {rejected} first checks rejected, "
            f"{c['true_catches'] / max(rejected, 1):.0%} of them rightly\n"
            f"  after a true catch: final right {share('fixed', 'true_catches')}, second attempt repeats the "
            f"answer {share('catch_repeated', 'true_catches')}, "
            f"a new answer right {share('catch_new_right', 'catch_new')}\n"
            f"  after a false rejection: final wrong {share('broken', 'false_rejections')}, second attempt "
            f"repeats the right answer {share('rejection_repeated', 'false_rejections')}\n"
            f"  wrong → right − right → wrong: {(c['fixed'] - c['broken']) / max(c['responses'], 1):+.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", nargs="+", type=Path, help="eval records (JSONL), pooled")
    parser.add_argument("--against", nargs="+", type=Path, default=[],
                        help="another policy's records of the same questions, file by file")
    args = parser.parse_args()
    print(describe(tally(args.records)))
    print(describe_checks(by_check(args.records)))
    print(describe_pointed(by_pointed_answer(args.records)))
    print(describe_routes(by_routes_tried(args.records)))
    print(describe_reading(by_reading(args.records)))
    if args.against:
        print(paired(args.records, args.against))


if __name__ == "__main__":
    main()
