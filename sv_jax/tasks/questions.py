"""Questions from local files: a questions JSONL, or a TFDS dataset prepared from one (no download).

JSONL, one object a line: `{"question": str, "answer": str | number, "id"?: str, "solution"?: str}`.
A folder is read as a prepared TFDS dataset (ArrayRecord, read without TensorFlow).
"""

from __future__ import annotations

import dataclasses

from etils import epath

from sv_jax.errors import UserError
from sv_jax.io import numbered_jsonl


@dataclasses.dataclass(frozen=True)
class Question:
    id: str
    question: str
    answer: str
    solution: str | None = None


def read_questions(path: epath.PathLike, split: str = "train") -> list[Question]:
    """Every question of a JSONL file, or of `split` of a prepared TFDS dataset folder."""
    source = epath.Path(path)
    if source.is_dir():
        from sv_jax import datasets

        return [_question(record, f"{source} [{split}] example {i}", i) for i, record in
                enumerate(datasets.read_tfds(source, split))]
    return [_question(record, f"{source}:{number}", number)
            for number, record in numbered_jsonl(source, required=("question", "answer"))]


def _question(record: dict, where: str, index: int) -> Question:
    """One record checked: text where text is expected (a numeric answer is fine, kept as text)."""
    def text(key: str, required: bool) -> str | None:
        value = record.get(key)
        if value is None:
            if required:
                raise UserError(f"{where}: missing key {key!r}")
            return None
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        numeric_answer = key == "answer" and isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (isinstance(value, str) or numeric_answer):
            raise UserError(f"{where}: {key!r} must be a string, got {type(value).__name__}")
        if required and not str(value).strip():
            raise UserError(f"{where}: {key!r} is empty")
        return str(value)

    return Question(
        id=text("id", False) or f"q{index}",
        question=text("question", True),
        answer=text("answer", True),
        solution=text("solution", False) or None,
    )
