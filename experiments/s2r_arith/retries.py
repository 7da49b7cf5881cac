"""What follows a first check that rejects its attempt, pooled over evaluation records.

A retry can only gain accuracy where the check was right to reject (a true catch) and the retry then
reaches the right answer; it loses it where the check rejected a right answer (a false rejection) and
the retry ends wrong. This prints both halves, and how often the second attempt repeats the first
answer, for each policy's records (`workdir/eval/<policy>.records.jsonl` of the built-in task):

    python experiments/s2r_arith/retries.py runs/s2r_arith/seed_*/eval/rl_process.records.jsonl
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

ANSWER = re.compile(r"The answer is (-?\d+)")


def tally(paths: list[Path]) -> dict[str, int]:
    counts = dict.fromkeys(("responses", "true_catches", "fixed", "catch_repeated", "catch_new", "catch_new_right",
                            "false_rejections", "broken", "rejection_repeated"), 0)
    for path in paths:
        for line in path.read_text().splitlines():
            record = json.loads(line)
            counts["responses"] += 1
            attempts = record["attempts"]
            if len(attempts) < 2 or attempts[0]["verdict"] is not False:
                continue
            answers = ANSWER.findall(record["response"])
            repeated = len(answers) >= 2 and answers[0] == answers[1]
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
    print(describe(tally(parser.parse_args().records)))


if __name__ == "__main__":
    main()
