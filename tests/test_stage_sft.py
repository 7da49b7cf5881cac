"""Stages sft and eval on the tiny preset: outputs, the correct-only baseline, and an exact resume
after the process is killed."""

import json
from pathlib import Path

import transformers

from configs import eval as eval_config
from sv_jax.evaluation import FIGURES
from sv_jax.stages import eval as eval_stage
from sv_jax.stages import sft
from tests.killing import kill_and_resume, stage_command


def test_eval_of_a_missing_policy_trains_it_through_every_stage(tmp_path):
    config = eval_config.get_config("tiny")
    config.workdir = str(tmp_path)
    figures = eval_stage.run(config)  # base → data → sft → eval
    assert set(figures) == set(FIGURES) and figures["n"] == config.eval.num_questions
    metrics = [json.loads(line) for line in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [2, 4]
    assert {"loss", "lr", "grad_norm", "tokens_per_s", "kl"} <= set(metrics[-1])
    assert (tmp_path / "sft" / "tensorboard").is_dir()
    transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "sft" / "model")
    assert json.loads((tmp_path / "eval" / "sft.json").read_text()) == figures
    records = (tmp_path / "eval" / "sft.records.jsonl").read_text().splitlines()
    assert len(records) == figures["n"]

    config.eval.policy = "sft_correct_only"
    config.sft.baseline_steps = 2
    eval_stage.run(config)
    assert (tmp_path / "sft_correct_only" / "model" / "config.json").exists()
    baseline_metrics = (tmp_path / "sft_correct_only" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in baseline_metrics] == [2]
    assert (tmp_path / "eval" / "sft_correct_only.json").exists()


# A two-round trajectory: a wrong attempt, its rejection, the right retry and its confirmation.
TWO_ROUNDS = [{"kind": "solve", "text": " 1 + 1 = 3 . The answer is 3 .", "correct": False, "mask": 0},
              {"kind": "verify", "text": " 3 vs 2 . So the answer is wrong .", "correct": True, "mask": 1},
              {"kind": "solve", "text": " 1 + 1 = 2 . The answer is 2 .", "correct": True, "mask": 1},
              {"kind": "verify", "text": " 2 vs 2 . So the answer is right .", "correct": True, "mask": 1}]


def _tiny_tokenizer():
    from sv_jax.tasks.tokenizer import train_tokenizer

    return train_tokenizer(["Question: 1 + 1\nAnswer: 1 + 1 = 2 . The answer is 2 . So the answer is right ."])


def test_correct_only_examples_are_the_final_attempt_alone():
    from sv_jax.tasks import builtin

    tokenizer, actions = _tiny_tokenizer(), TWO_ROUNDS
    s2r = sft.to_example(tokenizer, "Question: 1 + 1\nAnswer:", actions, builtin.CUES, "", "actions")
    baseline = sft.to_example(tokenizer, "Question: 1 + 1\nAnswer:", actions, builtin.CUES, "correct_only", "actions")
    assert tokenizer.decode(baseline.tokens, skip_special_tokens=True) == "Question: 1 + 1\nAnswer: 1 + 1 = 2 . The answer is 2 ."
    assert baseline.loss_mask.sum() == baseline.kl_mask.sum() + 1  # the whole response is learned, EOS too
    wrong_tokens = len(tokenizer.encode(actions[0]["text"]))
    cue_tokens = len(tokenizer.encode(builtin.CUES.verify)) * 2 + len(tokenizer.encode(builtin.CUES.retry)) + 1
    assert s2r.loss_mask.sum() == s2r.kl_mask.sum() - wrong_tokens + cue_tokens  # only the wrong attempt is masked
    with_cues = sft.to_example(tokenizer, "Question: 1 + 1\nAnswer:", actions, builtin.CUES, "", "response")
    assert with_cues.kl_mask.sum() == s2r.kl_mask.sum() + cue_tokens
    solves = sft.to_example(tokenizer, "Question: 1 + 1\nAnswer:", actions, builtin.CUES, "", "solves")
    verify_tokens = sum(len(tokenizer.encode(a["text"])) for a in actions if a["kind"] == "verify")
    assert solves.kl_mask.sum() == s2r.kl_mask.sum() - verify_tokens
    first_and_checks = sft.to_example(tokenizer, "Question: 1 + 1\nAnswer:", actions, builtin.CUES, "", "except_retries")
    retry_tokens = len(tokenizer.encode(actions[2]["text"]))
    assert first_and_checks.kl_mask.sum() == s2r.kl_mask.sum() - retry_tokens
    retry = first_and_checks.kl_mask == 0
    assert (solves.kl_mask[retry & (s2r.kl_mask == 1)] == 1).all()  # what it leaves out is the retry's tokens


def test_retry_weight_multiplies_the_loss_of_the_right_retry_alone():
    from sv_jax.tasks import builtin

    tokenizer = _tiny_tokenizer()
    plain, weighted = (sft.to_example(tokenizer, "Question: 1 + 1\nAnswer:", TWO_ROUNDS, builtin.CUES, "", "actions", w)
                       for w in (1, 3))
    retry_tokens = len(tokenizer.encode(TWO_ROUNDS[2]["text"]))
    assert (weighted.loss_mask == 3).sum() == retry_tokens
    assert weighted.loss_mask.sum() == plain.loss_mask.sum() + 2 * retry_tokens
    assert ((weighted.loss_mask == 0) == (plain.loss_mask == 0)).all()  # the wrong attempt stays unlearned


def test_one_round_share_adds_the_last_round_of_multi_round_trajectories_for_s2r_only():
    import ml_collections

    one_round = [{"kind": "solve", "text": "a", "mask": 1}, {"kind": "verify", "text": "b", "mask": 1}]
    two_rounds = [{"kind": "solve", "text": "w", "mask": 0}, {"kind": "verify", "text": "x", "mask": 1}] + one_round
    records = [{"actions": one_round}, {"actions": two_rounds}, {"actions": two_rounds}]

    def pairs(share, baseline="", records=records):
        settings = ml_collections.ConfigDict(dict(one_round_share=share, baseline=baseline))
        return [actions for _, actions in sft.training_actions(records, settings, seed=0)]

    assert pairs(0.0) == [one_round, two_rounds, two_rounds]
    assert pairs(1.0) == [one_round, two_rounds, two_rounds, one_round, one_round]
    assert pairs(1.0, baseline="correct_only") == [one_round, one_round, one_round]
    assert 440 < len(pairs(0.5, records=[{"actions": two_rounds}] * 1000)) - 1000 < 560
    # a trajectory ending on a correction read off a check: its last round alone takes the solution
    corrected = [{"actions": two_rounds, "solution": "s"}]
    standalone = [{"kind": "solve", "text": "s", "mask": 1}, one_round[1]]
    assert pairs(1.0, records=corrected) == [two_rounds, standalone]
    assert pairs(0.0, baseline="correct_only", records=corrected) == [standalone]


def test_rows_shrink_to_the_longest_example_and_keep_the_tokens_a_step():
    import ml_collections
    import numpy as np

    from sv_jax.training.batches import Example

    def shape(lengths, seq_len, pack=True):
        examples = [Example(np.zeros(n + 1, np.int32), np.ones(n + 1, np.int32), np.ones(n + 1, np.int32)) for n in lengths]
        return sft.row_shape(examples, ml_collections.ConfigDict(dict(batch_size=32, seq_len=seq_len, pack=pack)))

    assert shape([40, 70], 512) == (128, 128)  # correct-only: short examples, 4x the rows
    assert shape([40, 490], 512) == (32, 512)  # S²R: a four-round trajectory needs the whole row
    assert shape([40, 64], 512) == (256, 64)
    assert shape([40, 70], 384) == (128, 96)
    assert shape([40, 70], 512, pack=False) == (32, 512)


def sft_command(workdir: Path) -> list[str]:
    return stage_command("configs/sft.py:tiny", workdir, "--config.sft.steps=12", "--config.sft.checkpoint_every=2")


def test_killed_sft_resumes_to_the_parameters_of_an_uninterrupted_run(tmp_path):
    config = eval_config.get_config("tiny")
    config.workdir = str(tmp_path / "prepared")
    sft.read_trajectories(config)  # base and data, shared by both runs
    kill_and_resume(sft_command, tmp_path / "prepared", tmp_path, "sft", killed_after=1)
