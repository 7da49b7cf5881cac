"""Files in and out, on local disk or in a bucket (`gs://...`): every path goes through
`etils.epath` (orbax's own). JSONL readers name the file and line at fault; writers never half-write.

Tokenizers and safetensors read and write local files only: `local_copy` and `written_locally` give
them a local folder that mirrors a bucket folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from etils import epath

from sv_jax.errors import UserError


def is_remote(path: str | os.PathLike) -> bool:
    """Whether `path` is a URI (`gs://bucket/...`, `s3://...`) rather than a local path."""
    return "://" in os.fspath(path)


def copy_file(source: epath.PathLike, target: epath.PathLike) -> None:
    """Streams one file's bytes to `target` (either side local or in a bucket)."""
    with epath.Path(source).open("rb") as reader, epath.Path(target).open("wb") as writer:
        shutil.copyfileobj(reader, writer, 16 << 20)


@contextlib.contextmanager
def local_copy(folder: epath.PathLike, skip_suffix: str | None = None) -> Iterator[Path]:
    """`folder` as a local folder to read: itself when local, else a temporary copy of its files
    (but those ending in `skip_suffix`), removed afterwards."""
    if not is_remote(folder):
        yield Path(folder)
        return
    with tempfile.TemporaryDirectory() as local:
        for file in epath.Path(folder).iterdir():
            if file.is_file() and not (skip_suffix and file.name.endswith(skip_suffix)):
                copy_file(file, Path(local) / file.name)
        yield Path(local)


@contextlib.contextmanager
def written_locally(folder: epath.PathLike) -> Iterator[Path]:
    """A local folder to write into whose files end up in `folder`: `folder` itself when local
    (made if missing), else a temporary folder copied up file by file once the block ends."""
    if not is_remote(folder):
        Path(folder).mkdir(parents=True, exist_ok=True)
        yield Path(folder)
        return
    with tempfile.TemporaryDirectory() as local:
        yield Path(local)
        epath.Path(folder).mkdir(parents=True, exist_ok=True)
        for file in sorted(Path(local).iterdir()):
            copy_file(file, epath.Path(folder) / file.name)


def read_jsonl(path: epath.PathLike, required: tuple[str, ...] = (), any_of: tuple[str, ...] = ()) -> list[dict]:
    """Every object of a JSONL file. Each must hold all `required` keys and one of `any_of`, if given."""
    return [record for _, record in numbered_jsonl(path, required, any_of)]


def numbered_records(path: epath.PathLike, required: tuple[str, ...] = (),
                     split: str = "train") -> list[tuple[str, dict]]:
    """Each record of a JSONL file or of `split` of a prepared TFDS dataset folder, with where it is
    (`file:line`, `folder [split] example i`) for errors found later."""
    source = epath.Path(path)
    if not source.is_dir():
        return [(f"{source}:{number}", record) for number, record in numbered_jsonl(source, required)]
    from sv_jax import datasets  # TFDS loads only for a dataset folder

    located = [(f"{source} [{split}] example {i}", record)
               for i, record in enumerate(datasets.read_tfds(source, split))]
    for where, record in located:
        missing = [key for key in required if key not in record]
        if missing:
            raise UserError(f"{where}: missing key {missing[0]!r}")
    return located


def numbered_jsonl(path: epath.PathLike, required: tuple[str, ...] = (),
                   any_of: tuple[str, ...] = ()) -> list[tuple[int, dict]]:
    """`read_jsonl` with each object's line number, for errors found later that must name the line."""
    file = epath.Path(path)
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


def write_jsonl(path: epath.PathLike, records: Iterable[dict[str, Any]]) -> None:
    """Writes a temporary file beside `path` and renames it into place: readers see old or new, never half."""
    file = epath.Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("w", encoding="utf-8") as out:
            for record in records:
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
        tmp.replace(file)
    finally:
        tmp.unlink(missing_ok=True)
