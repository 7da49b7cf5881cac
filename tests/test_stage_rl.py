"""Stage rl on the tiny preset (the main job end to end: tests/test_main_job.py): an exact resume after
the process is killed, a fixed few compiled programs whatever the responses' lengths, branches of
retries, and config errors as one line."""

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from configs import rl as rl_config
from sv_jax.stages import eval as eval_stage
from sv_jax.models import load_hf
from sv_jax.stages import rl
from sv_jax.training.rewards import RewardValues
from sv_jax.training.rollout import retry_point
from tests.killing import ENV, REPO, kill_and_resume, stage_command


def rl_command(workdir: Path) -> list[str]:
    return stage_command("configs/rl.py:tiny", workdir, "--config.rl.steps=6", "--config.rl.compare=()",
                         "--config.rl.report=False",
                         "--config.rl.baseline=prefix")  # a running baseline: its state must resume too


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A tiny workdir where base, data and sft have run: where RL starts."""
    config = rl_config.get_config("tiny")
    config.workdir = str(tmp_path_factory.mktemp("prepared"))
    eval_stage.ensure_policy(config, "sft")
    return config


def test_killed_rl_resumes_to_the_parameters_and_metrics_of_an_uninterrupted_run(tmp_path, prepared):
    kill_and_resume(rl_command, Path(prepared.workdir), tmp_path, "rl", killed_after=2)
    logged = [(tmp_path / w / "rl" / "metrics.jsonl").read_text().splitlines() for w in "ab"]
    assert [json.loads(line)["reward"] for line in logged[0]] == [json.loads(line)["reward"] for line in logged[1]]


def test_fifty_steps_compile_at_most_four_scoring_and_update_programs(tmp_path, prepared):
    config = copy.deepcopy(prepared)
    config.workdir = str(tmp_path / "run")
    shutil.copytree(prepared.workdir, config.workdir)
    # 32 responses a step, cut short (8 tokens) so that their prompts' lengths decide how many share a row
    config.rl.update(steps=50, compare=(), report=False, questions_per_step=8, samples_per_question=4,
                     max_new_tokens=8)
    rl.train_policy(config, config.rl.reward)
    metrics = [json.loads(line) for line in (tmp_path / "run" / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 50
    # the packed rows vary from step to step (rounded up to a multiple of the data-parallel devices alone,
    # they compiled 8 programs here), and land on the ladder's rungs
    assert len({m["packed_rows"] for m in metrics}) > 2 * config.rl.row_buckets
    assert len({m["scoring_rows"] for m in metrics}) <= config.rl.row_buckets
    assert metrics[-1]["programs"] <= 4 and [m["programs"] for m in metrics] == sorted(m["programs"] for m in metrics)


def test_a_branch_resamples_retries_from_where_a_first_check_rejected_its_attempt(prepared):
    config = copy.deepcopy(prepared)
    config.rl.branches = 3
    k = config.rl.samples_per_question
    rollouts = rl.Rollouts(config, load_hf(eval_stage.ensure_policy(config, "sft")))
    question, prompt = rollouts.questions[0], rollouts.prompts[0]
    response = rollouts.tokenizer.encode(" 5 .\nCheck: 5 - 2 = 3 . So the answer is wrong .\nRetry: 7 .",
                                         add_special_tokens=False)
    values = RewardValues()
    scored = rollouts.score([question] * k, [[]] * k, [response] * k, values)
    rollout = rl.Rollout([prompt] * k, [response] * k, [0] * k, scored, [0] * k, [question] * k, fresh=k)
    at = retry_point(scored[0], rollouts.cues)
    assert at is not None and 0 < at < len(response)

    branched = rollouts.branch(rollout, step=0, values=values)
    assert len(branched.sampled) == k + config.rl.branches * k and branched.fresh == k
    for row in range(k, len(branched.sampled)):
        assert branched.given[row] == at and branched.prompts[row] == prompt + response[:at]
        assert at + len(branched.sampled[row]) <= config.rl.max_new_tokens  # one response's budget in all
        first, check = branched.scored[row].actions[:2]  # the whole response is judged, its start included
        assert first.text == scored[0].actions[0].text and check.text.startswith(scored[0].actions[1].text)
    confirmed = rollouts.score([question] * k, [[]] * k, [response[:at - 1]] * k, values)  # no verdict
    unbranched = rl.Rollout([prompt] * k, [response] * k, [0] * k, confirmed, [0] * k, [question] * k, fresh=k)
    assert rollouts.branch(unbranched, step=0, values=values) is unbranched


@pytest.mark.parametrize("override, named", [
    ("--config.rl.reward=final", "rl.reward"),
    ("--config.rl.compare=('outcome','bogus')", "rl.compare"),
    ("--config.rl.minibatches=3", "rl.minibatches"),
    ("--config.rl.micro_batches=3", "rl.micro_batches"),
    ("--config.rl.micro_batches=-1", "rl.micro_batches"),
    ("--config.rl.row_buckets=0", "rl.row_buckets"),
    ("--config.rl.process_credit=tokens", "rl.process_credit"),
    ("--config.rl.min_level=6", "rl.min_level"),
    ("--config.rl.branches=-1", "rl.branches"),
    ("--config.rl.retry_kl=-1", "rl.retry_kl"),
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
