"""Stage offline on the tiny preset, from a responses file made by the `sample` stage on the questions
the offline stage writes (the route of responses sampled elsewhere), as JSONL or as a TFDS folder: it
selects, trains and exports, and a killed run resumes exactly.

The tiny SFT policy writes no well-formed solve / verify responses of its own, so the sampled
completions are replaced by stage 0's trajectories: each question's own (a right attempt, confirmed)
and the next two questions' (their attempts are wrong answers to this one)."""

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from configs import offline as offline_config
from configs import sample as sample_config
from sv_jax.datasets import prepare_tfds
from sv_jax.errors import UserError
from sv_jax.io import numbered_records
from sv_jax.stages import offline, sample
from tests.killing import kill_and_resume, stage_command


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A tiny workdir where base, data and sft have run, and a responses file made by the `sample`
    stage from the questions the offline stage writes, its completions then replaced (see above)."""
    config = offline_config.get_config("tiny")
    config.workdir = str(tmp_path_factory.mktemp("prepared"))
    workdir = Path(config.workdir)
    questions_only = config.copy_and_resolve_references()
    questions_only.offline.questions_only = True
    offline.run(questions_only)  # base, data and sft first, then the questions
    assert not (workdir / "offline" / "model").exists()
    sampling = sample_config.get_config()
    sampling.workdir = str(workdir / "sampled")
    sampling.model.path = str(workdir / "sft" / "model")
    sampling.sample.input = str(workdir / "offline" / "questions.jsonl")
    sampling.sample.num_samples, sampling.sample.max_new_tokens = 3, 4
    sample.run(sampling)
    records = [json.loads(line) for line in (workdir / "sampled" / "samples.jsonl").open()]
    made = [json.loads(line) for line in (workdir / "data" / "trajectories.jsonl").open()]
    trajectories = {t["id"]: t["text"] for t in made}
    ids = list(trajectories)
    for record in records:  # each question's own trajectory, then the next two questions'
        record["completion"] = trajectories[ids[(ids.index(record["id"]) + record["sample_index"]) % len(ids)]]
    responses = workdir / "responses.jsonl"
    responses.write_text("".join(json.dumps(r) + "\n" for r in records))
    config.offline.responses = str(responses)
    return config


def test_the_stage_selects_trains_and_exports_from_a_responses_file(prepared, tmp_path):
    config = prepared.copy_and_resolve_references()
    config.workdir = str(tmp_path)
    # as a TFDS folder made from the JSONL (the other tests read the JSONL itself)
    folder = prepare_tfds("responses", {"train": prepared.offline.responses}, tmp_path / "responses_tfds")
    config.offline.responses = str(folder)
    from_jsonl = numbered_records(prepared.offline.responses, ("id", "completion"))
    from_tfds = numbered_records(folder, ("id", "completion"))
    pairs = [(str(r["id"]), r["completion"]) for _, r in from_jsonl]
    assert pairs == [(r["id"], r["completion"]) for _, r in from_tfds]
    assert from_tfds[1][0] == f"{folder} [train] example 1"
    for stage in ("base", "data", "sft"):
        (tmp_path / stage).symlink_to(Path(prepared.workdir) / stage)
    offline.run(config)
    summary = json.loads((tmp_path / "offline" / "summary.json").read_text())
    questions = len((Path(prepared.workdir) / "data" / "trajectories.jsonl").read_text().splitlines())
    # every question: its own trajectory right (a positive), two others' wrong: accuracy 1/3, in range;
    # one negative of two kept
    assert summary["responses"] == 3 * questions and summary["questions_in_range"] == questions
    assert summary["positives"] == questions and summary["negatives_kept"] == questions
    metrics = [json.loads(line) for line in (tmp_path / "offline" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, len(metrics) + 1))
    assert len(metrics) == -(-2 * questions // config.offline.batch_size)
    assert metrics[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # the first step's ratios are all 1
    assert all(m["tokens_per_s"] > 0 for m in metrics)  # the step reports its learned tokens
    trained, sft = (load_file(tmp_path / name / "model" / "model.safetensors") for name in ("offline", "sft"))
    assert any(not np.array_equal(trained[name], sft[name]) for name in trained)
    written = [json.loads(line) for line in (tmp_path / "offline" / "questions.jsonl").read_text().splitlines()]
    assert len(written) == questions and {"id", "prompt"} <= set(written[0])


def test_killed_offline_rl_resumes_to_the_parameters_of_an_uninterrupted_run(prepared, tmp_path):
    def command(workdir: Path) -> list[str]:
        return stage_command("configs/offline.py:tiny", workdir,
                             f"--config.offline.responses={prepared.offline.responses}")

    kill_and_resume(command, Path(prepared.workdir), tmp_path, "offline", killed_after=2)


def test_a_bad_setting_or_response_line_is_one_line(prepared, tmp_path):
    config = prepared.copy_and_resolve_references()
    config.offline.baseline = "level"
    with pytest.raises(UserError, match="config key 'offline.baseline': 'level' is not one of accuracy_position"):
        offline.check(config)
    config = prepared.copy_and_resolve_references()
    config.workdir = str(tmp_path)
    for stage in ("base", "data", "sft"):
        (tmp_path / stage).symlink_to(Path(prepared.workdir) / stage)
    responses = tmp_path / "responses.jsonl"
    responses.write_text(json.dumps({"id": "nope", "completion": " 1 + 1 = 2 ."}) + "\n")
    config.offline.responses = str(responses)
    with pytest.raises(UserError, match=r"responses.jsonl:1: id 'nope' is not a training question's"):
        offline.run(config)
