"""Stage 0 on a questions file with an HF model: math-verify grading, verifier filtering, outputs,
and the one-line errors of bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from configs import data as data_config
from sv_jax.datasets import read_tfds
from sv_jax.stages import data
from sv_jax.tasks.grading import MathGrader, grade_one
from sv_jax.trajectory import SOLVE, VERIFY, Cues, parse, verdict

REPO = Path(__file__).resolve().parent.parent
QUESTIONS = [
    {"question": "What is 7 + 5?", "answer": "12", "solution": "7 + 5 = 12, so the answer is \\boxed{12}."},
    {"question": "Half of 1?", "answer": "\\frac{1}{2}", "solution": "It is \\boxed{0.5}."},
    {"question": "What is 3 * 4?", "answer": 12, "solution": "3 * 4 = \\boxed{12}.", "id": "mul"},
    {"question": "What is 9 - 2?", "answer": "7"},  # no solution: skipped unless a sample is right
]


def write_questions(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_math_verify_grades_equivalent_answers_and_extracts_them():
    assert grade_one("12", "so the answer is \\boxed{12}.") == (True, "12")
    assert grade_one("\\frac{1}{2}", "we get $0.5$")[0]
    assert grade_one("12", "\\boxed{13}") == (False, "13")
    assert grade_one("12", "no number here") == (False, None)
    with MathGrader(workers=1, timeout_s=5) as grader:
        assert [c for c, _ in grader.grade(["12", "7"], ["\\boxed{12}", "\\boxed{8}"])] == [True, False]


def test_questions_file_runs_end_to_end_with_a_tiny_hf_model(tmp_path, qwen2_folder):
    config = data_config.get_config()
    config.workdir = str(tmp_path)
    config.model.path = str(qwen2_folder)
    config.data.update(questions=str(write_questions(tmp_path / "q.jsonl", QUESTIONS)), k=3, max_new_tokens=12,
                       batch_size=4, prompt="Question: {question}\nAnswer:")
    # A random model never writes the paper's verdict phrases; single letters it writes all the time
    # make the verdict a coin flip, so that filtering keeps some verifications and drops others.
    config.data.cues.update(verdict_correct="e", verdict_incorrect="a")
    config.data.verifier.update(tries=3, max_new_tokens=12)
    data.run(config)

    records = [json.loads(line) for line in (tmp_path / "data" / "trajectories.jsonl").read_text().splitlines()]
    summary = json.loads((tmp_path / "data" / "summary.json").read_text())
    assert summary["questions"] == 4 and summary["samples"] == 12
    assert 0 < summary["verification_keep_rate"] <= 1
    assert summary["trajectories"] == len(records) and summary["trajectories"] + sum(summary["skipped"].values()) == 4
    assert records, summary
    cues = Cues.from_config(config.data.cues)
    for record in records:
        actions = record["actions"]
        assert [(a.kind, a.text) for a in parse(record["text"], cues)] == [(a["kind"], a["text"]) for a in actions]
        solves = [a for a in actions if a["kind"] == SOLVE]
        assert solves[-1]["correct"] and all(not a["correct"] for a in solves[:-1])
        for solve, check in zip(solves, [a for a in actions if a["kind"] == VERIFY]):
            assert verdict(check["text"], cues) == solve["correct"]  # only agreeing verdicts are kept
        if record["accuracy"] == 0:  # no right sample: the reference solution is the final attempt
            question = next(q for q in QUESTIONS if q["question"] == record["question"])
            assert solves[-1]["text"] == question["solution"]
    assert read_tfds(tmp_path / "data" / "tfds", "train") == records


def run_data_stage(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sv_jax.main", "--config=configs/data.py", *args], cwd=REPO,
                          capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
                          timeout=120)


@pytest.mark.parametrize("lines, named", [
    (['{"question": "a?", "answer": "1"}', '{"question": "b?", "answer": '], "q.jsonl:2: not valid JSON"),
    (['{"question": "a?", "answer": "1"}', '{"question": "b?"}'], "q.jsonl:2: missing key 'answer'"),
    (['{"answer": "1"}'], "q.jsonl:1: missing key 'question'"),
    (['{"question": ["a"], "answer": "1"}'], "q.jsonl:1: 'question' must be a string"),
])
def test_bad_questions_file_is_one_line_and_keeps_earlier_output(tmp_path, lines, named):
    earlier = tmp_path / "data" / "trajectories.jsonl"
    earlier.parent.mkdir()
    earlier.write_text("earlier output\n")
    (tmp_path / "q.jsonl").write_text("\n".join(lines) + "\n")
    result = run_data_stage(f"--workdir={tmp_path}", f"--config.data.questions={tmp_path / 'q.jsonl'}",
                            f"--config.model.path={tmp_path}")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith(named) or named in result.stderr.strip().splitlines()[-1]
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert earlier.read_text() == "earlier output\n"


def test_unreadable_model_folder_is_one_line(tmp_path):
    (tmp_path / "q.jsonl").write_text('{"question": "a?", "answer": "1"}\n')
    result = run_data_stage(f"--workdir={tmp_path}", f"--config.data.questions={tmp_path / 'q.jsonl'}",
                            f"--config.model.path={tmp_path / 'no_model'}")
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1 and "no_model" in lines[0], result.stderr
