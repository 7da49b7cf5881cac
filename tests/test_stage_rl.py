"""Stage rl on the tiny preset: the main job end to end (every stage, both reward levels, the
table), an exact resume after the process is killed, and config errors as one line."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import transformers

from configs import rl as rl_config
from sv_jax.stages import eval as eval_stage
from sv_jax.stages import rl
from tests.killing import ENV, REPO, kill_and_resume, stage_command


def test_main_job_runs_every_stage_and_ends_with_the_table(tmp_path):
    config = rl_config.get_config("tiny")
    config.workdir = str(tmp_path)
    rl.run(config)  # base → data → sft → rl (process, then outcome) → eval of every policy
    table = json.loads((tmp_path / "eval" / "table.json").read_text())
    assert list(table) == ["base", "correct-only SFT", "S²R SFT", "S²R RL (outcome)", "S²R RL (process)"]
    assert all(row["n"] == config.eval.num_questions for row in table.values())
    assert (tmp_path / "eval" / "table.md").read_text().count("\n") == 2 + len(table)
    for name in ("rl", "rl_outcome"):
        metrics = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        assert [m["step"] for m in metrics] == [1, 2]
        assert {"reward", "acc_final", "verify_acc", "wrong_to_right", "right_to_wrong", "kl", "clip_fraction", "loss",
                "lr"} <= set(metrics[-1])
        for m in metrics:  # the final answer differs from the first exactly by the corrections
            assert m["acc_final"] - m["acc_first"] == pytest.approx(m["wrong_to_right"] - m["right_to_wrong"])
        assert (tmp_path / name / "tensorboard").is_dir()
        transformers.AutoModelForCausalLM.from_pretrained(tmp_path / name / "model")


def rl_command(workdir: Path) -> list[str]:
    return stage_command("configs/rl.py:tiny", workdir, "--config.rl.steps=6", "--config.rl.compare=()",
                         "--config.rl.report=False",
                         "--config.rl.baseline=prefix")  # a running baseline: its state must resume too


def test_killed_rl_resumes_to_the_parameters_and_metrics_of_an_uninterrupted_run(tmp_path):
    config = rl_config.get_config("tiny")
    config.workdir = str(tmp_path / "prepared")
    eval_stage.ensure_policy(config, "sft")  # base, data and sft, shared by both runs
    kill_and_resume(rl_command, tmp_path / "prepared", tmp_path, "rl", killed_after=2)
    logged = [(tmp_path / w / "rl" / "metrics.jsonl").read_text().splitlines() for w in "ab"]
    assert [json.loads(line)["reward"] for line in logged[0]] == [json.loads(line)["reward"] for line in logged[1]]


@pytest.mark.parametrize("override, named", [
    ("--config.rl.reward=final", "rl.reward"),
    ("--config.rl.compare=('outcome','bogus')", "rl.compare"),
    ("--config.rl.minibatches=3", "rl.minibatches"),
    ("--config.rl.process_credit=tokens", "rl.process_credit"),
    ("--config.rl.min_level=6", "rl.min_level"),
    ("--config.rl.steps=0", "rl.steps"),
    ("--config.sft.baseline_steps=-1", "sft.baseline_steps"),
    ("--config.base.steps=0", "base.steps"),
    ("--config.sft.kl_tokens=verdicts", "sft.kl_tokens"),
    ("--config.sft.retry_weight=0", "sft.retry_weight"),
])
def test_a_bad_rl_setting_is_one_line_naming_it(tmp_path, override, named):
    result = subprocess.run([sys.executable, "-m", "sv_jax.main", "--config=configs/rl.py:tiny",
                             f"--workdir={tmp_path}", override], cwd=REPO, env=ENV, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and named in result.stderr, result.stderr
    assert not any(tmp_path.iterdir())  # failed before any work
