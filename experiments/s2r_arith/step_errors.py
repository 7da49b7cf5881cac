"""Which written steps are wrong, in attempts and in checks, pooled over evaluation records.

A step `l op r = n .` is wrong when n is not l op r. Steps are counted by where they stand (an
attempt's worked steps, a check's, or a check's closing comparison), by operator, and by the digits
of each operand, left first: `2+3` adds a three-digit number to a two-digit one, the checks' most
frequent wrong step (experiments/RESULTS.md, "Three-digit sums in the checks").

    python experiments/s2r_arith/step_errors.py runs/s2r_arith/seed_*/eval/rl_process.records.jsonl
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from retries import records  # noqa: E402  (this script's folder is on the path when it runs)

from sv_jax.tasks import arithmetic, builtin  # noqa: E402
from sv_jax.trajectory import SOLVE, parse  # noqa: E402

STEP = re.compile(r"(-?\d+) ([-+*/]) (-?\d+) = (-?\d+) \.")


def shape(left: int, op: str, right: int) -> str:
    """`2+3`: the operands' digit counts around the operator."""
    return f"{len(str(abs(left)))}{op}{len(str(abs(right)))}"


def is_wrong(left: int, op: str, right: int, written: int) -> bool:
    """The task divides exactly, so a division with a remainder (after an earlier slip) is wrong too."""
    if op == "/" and (right == 0 or left % right != 0):
        return True
    return written != arithmetic.evaluate(left, op, right)


def step_errors(paths: list[Path]) -> Counter:
    """Per (place, shape): how many steps were written ("steps") and how many of them are wrong ("wrong")."""
    counts: Counter = Counter()
    for record in records(paths):
        for action in parse(record["response"], builtin.CUES):
            steps = [(int(left), op, int(right), int(n)) for left, op, right, n in STEP.findall(action.text)]
            for index, step in enumerate(steps):
                place = "attempt" if action.kind == SOLVE else "comparison" if index == len(steps) - 1 else "check"
                key = place, shape(*step[:3])
                counts[(*key, "steps")] += 1
                counts[(*key, "wrong")] += is_wrong(*step)
    return counts


def describe(counts: Counter) -> str:
    rows = ["place       shape   wrong / steps"]
    keys = sorted({key[:2] for key in counts}, key=lambda key: (key[0], -counts[(*key, "steps")], key[1]))
    for place, form in keys:
        steps, wrong = counts[place, form, "steps"], counts[place, form, "wrong"]
        rows.append(f"{place:11s} {form:6s} {wrong:5d} / {steps:5d} ({wrong / steps:.0%})")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", nargs="+", type=Path, help="eval records (JSONL), pooled")
    print(describe(step_errors(parser.parse_args().records)))


if __name__ == "__main__":
    main()
