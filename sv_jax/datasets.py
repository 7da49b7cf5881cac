"""TFDS copies of the project's JSONL files: questions, stage 0 trajectories and responses sampled
elsewhere for offline RL, built from local files only (no download) as ArrayRecord, which TFDS reads
without TensorFlow (`as_data_source`: random access, a fit for grain).

    prepare_tfds("trajectories", {"train": "workdir/data/trajectories.jsonl"}, "workdir/data/tfds")
    records = read_tfds("workdir/data/tfds", "train")  # the JSONL's dicts, in the JSONL's order
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from sv_jax.errors import UserError
from sv_jax.io import read_jsonl

_TEXT = tfds.features.Text()
FEATURES = {
    "questions": {"index": np.int64, "id": _TEXT, "question": _TEXT, "answer": _TEXT, "solution": _TEXT},
    "trajectories": {
        "index": np.int64, "id": _TEXT, "question": _TEXT, "answer": _TEXT, "difficulty": np.int32,
        "accuracy": _TEXT, "text": _TEXT,  # as text: TFDS stores floats as float32
        "solution": _TEXT,  # the right attempt standing alone (files written before it: the last attempt)
        "actions": tfds.features.Sequence({"kind": _TEXT, "text": _TEXT, "correct": np.bool_, "mask": np.int32}),
    },
    "responses": {"index": np.int64, "id": _TEXT, "completion": _TEXT},
}


class _LocalJsonl(tfds.core.GeneratorBasedBuilder):
    """A dataset whose splits are local JSONL files (`sources`: split → path)."""

    VERSION = tfds.core.Version("1.0.0")
    KIND = ""

    def __init__(self, *, sources: dict[str, str], **kwargs: Any):
        self._sources = sources
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(FEATURES[self.KIND]))

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(path) for split, path in self._sources.items()}

    def _generate_examples(self, path: str):
        for index, record in enumerate(self._records(path)):
            yield index, {"index": index, **record}

    def _records(self, path: str) -> list[dict]:
        raise NotImplementedError


class S2rQuestions(_LocalJsonl):
    KIND = "questions"

    def _records(self, path: str) -> list[dict]:
        from sv_jax.tasks.questions import read_questions

        return [{**dataclasses.asdict(q), "solution": q.solution or ""} for q in read_questions(path)]


class S2rTrajectories(_LocalJsonl):
    KIND = "trajectories"

    def _records(self, path: str) -> list[dict]:
        return [{**record, "accuracy": repr(float(record["accuracy"])),
                 "solution": record.get("solution", record["actions"][-2]["text"]),
                 "actions": [{k: a[k] for k in ("kind", "text", "correct", "mask")} for a in record["actions"]]}
                for record in read_jsonl(path, required=tuple(FEATURES[self.KIND].keys() - {"index", "solution"}))]


class S2rResponses(_LocalJsonl):
    KIND = "responses"

    def _records(self, path: str) -> list[dict]:
        return [{"id": str(record["id"]), "completion": record["completion"]}
                for record in read_jsonl(path, required=("id", "completion"))]


BUILDERS = {"questions": S2rQuestions, "trajectories": S2rTrajectories, "responses": S2rResponses}


def prepare_tfds(kind: str, sources: dict[str, epath.PathLike], folder: epath.PathLike) -> epath.Path:
    """Builds the TFDS dataset of `kind` from JSONL `sources` into `folder`, replacing what was there
    only once the new one is complete."""
    folder = epath.Path(folder)
    tfds.disable_progress_bar()
    staging = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        builder = BUILDERS[kind](sources={s: str(p) for s, p in sources.items()}, data_dir=str(staging),
                                 file_format="array_record")
        builder.download_and_prepare()
        if folder.exists():
            folder.rmtree()
        staging.rename(folder)
    finally:
        staging.rmtree(missing_ok=True)
    return folder


def read_tfds(folder: epath.PathLike, split: str) -> list[dict]:
    """Every example of `split` as the JSONL dict it came from, in the JSONL's order."""
    # the dataset's own folder, its builder's (name/) or a data_dir (name/version/); no `**`: a
    # bucket's glob would list every object below
    infos = sorted(info for pattern in ("", "*/", "*/*/")
                   for info in epath.Path(folder).glob(f"{pattern}dataset_info.json"))
    if not infos:
        raise UserError(f"{folder}: not a prepared TFDS dataset (no dataset_info.json)")
    builder = tfds.builder_from_directory(str(infos[-1].parent))
    if split not in builder.info.splits:
        raise UserError(f"{folder}: no split {split!r}; it has {', '.join(builder.info.splits)}")
    source = builder.as_data_source()[split]
    records = sorted((_to_python(source[i]) for i in range(len(source))), key=lambda r: r["index"])
    for record in records:
        del record["index"]
        if "accuracy" in record:
            record["accuracy"] = float(record["accuracy"])
        if "actions" in record:
            actions = record["actions"]  # TFDS gives a sequence of dicts as a dict of lists
            record["actions"] = [dict(zip(actions, values)) for values in zip(*actions.values())]
        if record.get("solution") == "":
            record["solution"] = None
    return records


def _to_python(value: Any) -> Any:
    """A decoded TFDS example (bytes, numpy scalars and arrays) as plain JSON values."""
    if isinstance(value, dict):
        return {k: _to_python(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_python(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return [_to_python(v) for v in value.tolist()] if value.ndim else value.item()
    if isinstance(value, np.generic):
        return value.item()
    return value
