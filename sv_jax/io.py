"""JSONL in and out: readers that name the file and line at fault, writers that never half-write."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from sv_jax.errors import UserError


def read_jsonl(path: str | os.PathLike, required: tuple[str, ...] = (), any_of: tuple[str, ...] = ()) -> list[dict]:
    """Every object of a JSONL file. Each must hold all `required` keys and one of `any_of`, if given."""
    return [record for _, record in numbered_jsonl(path, required, any_of)]


def numbered_jsonl(path: str | os.PathLike, required: tuple[str, ...] = (),
                   any_of: tuple[str, ...] = ()) -> list[tuple[int, dict]]:
    """`read_jsonl` with each object's line number, for errors found later that must name the line."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{file}: file not found")
    records = []
    with file.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise UserError(f"{file}:{number}: not valid JSON: {error.msg}") from None
            if not isinstance(record, dict):
                raise UserError(f"{file}:{number}: expected a JSON object, got {type(record).__name__}")
            missing = [key for key in required if key not in record]
            if missing:
                raise UserError(f"{file}:{number}: missing key {missing[0]!r}")
            if any_of and not any(key in record for key in any_of):
                raise UserError(f"{file}:{number}: needs one of the keys {', '.join(map(repr, any_of))}")
            records.append((number, record))
    return records


def write_jsonl(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> None:
    """Writes a temporary file beside `path` and renames it into place: readers see old or new, never half."""
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("w", encoding="utf-8") as out:
            for record in records:
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
        tmp.replace(file)
    finally:
        tmp.unlink(missing_ok=True)
