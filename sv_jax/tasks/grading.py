"""Grading free-form math answers with `math-verify`, time-bounded, in worker processes.

`math_verify` bounds its own time with `signal.alarm`, which only works in a process's main thread;
each worker of a process pool runs its task there, so the bound holds, and a worker stuck beyond it
cannot stall the stage: its result is waited for only `timeout_s` more, then counted wrong. Model
text is parsed, never executed. `math_verify` is imported where it is used: it imports sympy (~0.5 s a
process), which the built-in task never needs.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from typing import Sequence


def extract_answer(text: str, timeout_s: int = 5) -> str | None:
    """The final answer math-verify reads in `text` (its string form), or None if it finds none."""
    import math_verify

    parsed = math_verify.parse(text, parsing_timeout=timeout_s)
    return str(parsed[-1]) if parsed else None


def grade_one(reference: str, text: str, timeout_s: int = 5) -> tuple[bool, str | None]:
    """(Does `text`'s final answer equal `reference`?, that answer). Runs in a worker's main thread."""
    import math_verify

    answer = extract_answer(text, timeout_s)
    if answer is None:
        return False, None
    gold = math_verify.parse(reference, parsing_timeout=timeout_s)
    target = math_verify.parse(text, parsing_timeout=timeout_s)
    return bool(math_verify.verify(gold, target, timeout_seconds=timeout_s)), answer


class MathGrader:
    """`grade(references, texts)` → [(correct, answer)], spread over `workers` processes.

    Workers are spawned (not forked: the parent runs JAX's threads) once and reused; use as a
    context manager so they end with the stage.
    """

    def __init__(self, workers: int = 2, timeout_s: int = 5):
        self.timeout_s = timeout_s
        self._pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))

    def grade(self, references: Sequence[str], texts: Sequence[str]) -> list[tuple[bool, str | None]]:
        futures = [self._pool.submit(grade_one, r, t, self.timeout_s) for r, t in zip(references, texts, strict=True)]
        results = []
        for future in futures:
            try:
                results.append(future.result(timeout=3 * self.timeout_s + 5))
            except Exception:  # a time-out, or an answer math-verify chokes on, is a wrong answer
                results.append((False, None))
        return results

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)

    def __enter__(self) -> MathGrader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def grade_rows(references: Sequence[str], rows: Sequence[Sequence[str]], workers: int,
               timeout_s: int) -> list[list[tuple[bool, str | None]]]:
    """`rows[i]` (several texts answering question i) graded against `references[i]`, row by row."""
    pairs = [(reference, text) for reference, row in zip(references, rows, strict=True) for text in row]
    with MathGrader(workers, timeout_s) as grader:
        results = iter(grader.grade([r for r, _ in pairs], [t for _, t in pairs]))
    return [[next(results) for _ in row] for row in rows]
