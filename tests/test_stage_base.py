"""Stage `base` on a tiny config: every output it promises, and a π₀ that transformers can load."""

import json

import numpy as np
import pytest
import transformers

from configs import base as base_config
from sv_jax.errors import UserError
from sv_jax.models import load_hf
from sv_jax.stages import base
from sv_jax.tasks import builtin
from sv_jax.training.optimizer import linear_cooldown


def test_tiny_base_run_writes_model_metrics_checkpoints_and_eval(tmp_path):
    config = base_config.get_config()
    config.workdir = str(tmp_path)
    config.base.update(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                       seq_len=64, short_seq_len=32, long_every=2, batch_size=2, micro_batches=1, steps=4, checkpoint_every=2, log_every=2, eval_questions=6,
                       validate_every=2, validate_from=4, validation_questions=3)
    base.run(config)
    folder = tmp_path / "base"
    model = load_hf(folder / "model")
    assert model.config.family == "llama" and model.config.vocab_size >= len(model.tokenizer)
    assert transformers.AutoTokenizer.from_pretrained(folder / "model").decode(
        model.tokenizer.encode("Question: 12 + 3")) == "Question: 12 + 3"
    assert [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()] == [2, 4]
    assert sorted(p.name for p in (folder / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "4"]
    validation = [json.loads(line) for line in (folder / "validation.jsonl").read_text().splitlines()]
    assert [(v["step"], v["n"]) for v in validation] == [(4, 3)]  # asked from step 4 on, never competent
    figures = json.loads((folder / "eval.json").read_text())
    assert figures["n"] == 6 and 0 <= figures["accuracy"] <= 1 and 0 <= figures["check_accuracy"] <= 1


def test_a_stopped_run_cools_down_linearly_and_resumes_as_done(tmp_path):
    config = base_config.get_config("tiny")
    config.workdir = str(tmp_path)
    config.base.update(steps=10, stop_accuracy=0.0, stop_check_accuracy=0.0, cooldown_steps=4, log_every=1,
                       checkpoint_every=4)
    base.run(config)
    folder = tmp_path / "base"
    assert [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    cooldown = [json.loads(line) for line in (folder / "cooldown" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in cooldown] == [1, 2, 3, 4]
    rates = [m["lr"] for m in cooldown]  # the rate each update used: the next one's would be 0
    assert rates[0] > 0 and np.allclose(rates, rates[0] * np.array([1, 0.75, 0.5, 0.25]))
    model = (folder / "model" / "model.safetensors").read_bytes()
    base.run(config)  # both phases resume from their final checkpoints and train nothing more
    assert len((folder / "cooldown" / "metrics.jsonl").read_text().splitlines()) == 4
    assert (folder / "model" / "model.safetensors").read_bytes() == model


def test_linear_cooldown_falls_from_its_start_value_to_zero_and_stays():
    schedule = linear_cooldown(2e-3, start_step=100, steps=4)
    assert np.allclose([schedule(c) for c in (100, 101, 103, 104, 110)], [2e-3, 1.5e-3, 0.5e-3, 0.0, 0.0])


def test_packed_rows_are_whole_documents_joined_by_eos(tmp_path):
    from sv_jax.tasks import arithmetic as task
    from sv_jax.tasks.tokenizer import train_tokenizer

    rng = np.random.default_rng(0)
    tokenizer = train_tokenizer(["".join(builtin.pretraining_document(task.draw_problem("train", rng), rng, 0.5, 0.5, 0.5))
                                 for _ in range(100)])
    settings = base_config.get_config().base
    settings.update(batch_size=2, short_seq_len=128, micro_batches=1)
    batch = base.packed_batch(tokenizer, np.random.default_rng(1), settings)
    assert batch["inputs"].shape == (1, 2, 128)
    np.testing.assert_array_equal(batch["inputs"][0, :, 1:], batch["targets"][0, :, :-1])
    text = tokenizer.decode(batch["inputs"][0, 0])
    assert text.startswith("Question: ") and tokenizer.eos_token in text


def test_questions_carry_no_loss_and_long_batches_hold_as_many_tokens(tmp_path):
    from sv_jax.tasks import arithmetic as task
    from sv_jax.tasks.tokenizer import train_tokenizer

    rng = np.random.default_rng(0)
    tokenizer = train_tokenizer(["".join(builtin.pretraining_document(task.draw_problem("train", rng), rng, 0.5, 0.5, 0.5))
                                 for _ in range(100)])
    settings = base_config.get_config().base
    settings.update(batch_size=8, short_seq_len=64, seq_len=256, drill_share=0.0, check_share=0.0, micro_batches=2)
    short = base.packed_batch(tokenizer, np.random.default_rng(1), settings)
    long = base.packed_batch(tokenizer, np.random.default_rng(1), settings, long_rows=True)
    assert short["inputs"].shape == (2, 4, 64) and long["inputs"].shape == (2, 1, 256)
    row, learned = short["targets"][0, 0], short["loss_mask"][0, 0]
    question_ids = tokenizer.encode("Question:", add_special_tokens=False)
    starts = [i for i in range(len(row) - len(question_ids)) if list(row[i:i + len(question_ids)]) == question_ids]
    assert starts and all(learned[i] == 0 for i in starts)
    assert learned.sum() > 0 and not learned.all()


def test_the_corpus_solves_and_checks_by_each_route_at_its_share():
    from sv_jax.tasks import arithmetic as task

    def documents(route_shares: tuple[float, float]) -> list[tuple[task.Problem, str, str]]:
        rng = np.random.default_rng(0)
        problems = [task.draw_problem("train", rng) for _ in range(600)]
        return [(p, *builtin.pretraining_document(p, rng, 0.3, 0.5, 0.0, route_shares)) for p in problems]

    for parts, over in ((0.0, 0.0), (0.5, 0.0), (1.0, 0.0), (1 / 3, 1 / 3), (0.0, 1.0)):
        written = documents((parts, over))
        solved = [task.solution_route(p, text) for p, context, text in written if "Check:" not in context]
        # a check of a parts or over attempt solves by the direct route, of a direct one by parts
        checks = [task.verification_steps(p, p.answer, "problem_solving", "parts")[0][0].text() in text
                  for p, context, text in written if "Check:" in context]
        for route, share in (("parts", parts), ("over", over), ("direct", 1 - parts - over)):
            assert abs(np.mean([r == route for r in solved]) - share) < 0.1, (route, share)
        assert abs(np.mean(checks) - (parts + over)) < 0.1


def test_route_shares_outside_their_range_name_both_config_keys():
    config = base_config.get_config()
    config.base.parts_route_share, config.base.over_route_share = 0.6, 0.5
    with pytest.raises(UserError, match="'base.parts_route_share' .*'base.over_route_share'"):
        base.check(config)
    assert builtin.learned_routes((0.5, 0.0)) == ("direct", "parts")
    assert builtin.learned_routes((0.0, 0.3)) == ("direct", "over")


def test_drills_at_a_lower_shape_power_hold_rare_steps_more_often_and_only_true_facts():
    import re
    from sv_jax.tasks import arithmetic as task

    def two_plus_three_share(shape_power: float) -> float:
        rng = np.random.default_rng(0)
        steps = [re.fullmatch(r"(-?\d+) ([-+*/]) (-?\d+) = (-?\d+)", fact.strip()).groups()
                 for _ in range(1500)
                 for fact in builtin.arithmetic_drill(rng, 8, 0.75, (0.5, 0.0), shape_power).split(" .")
                 if fact.strip()]
        assert len(steps) == 1500 * 8
        assert all(task.evaluate(int(left), op, int(right)) == int(result) for left, op, right, result in steps)
        return np.mean([op == "+" and len(left) == 2 and len(right) == 3 for left, op, right, _ in steps])

    natural, tempered = two_plus_three_share(1.0), two_plus_three_share(0.5)
    assert 0.002 < natural < 0.01 and tempered > 2.5 * natural


class _BytesTokenizer:
    """Text as its UTF-8 bytes: enough for a sampler stub to read its prompts back."""

    eos_token_id = None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(text.encode())

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return bytes(ids).decode()

    def __len__(self) -> int:
        return 256


class _RouteSampler:
    """Right by the direct route on families 1, 4 and 5, by the parts route on family 2 alone, by
    neither on family 3; a wrong attempt is checked and retried right, which must not count: the
    first attempt is graded."""

    def __init__(self, problems):
        self.by_question = {p.question: p for p in problems}

    def sample(self, prompts, spec):
        from types import SimpleNamespace

        from sv_jax.tasks import arithmetic as task
        rows = {}
        for i, ids in enumerate(prompts):
            text = bytes(ids).decode()
            problem = self.by_question[text.split("Question: ")[1].split("\n")[0]]
            direct = task.solution_text(task.solution_steps(problem, route="direct"))
            by_direct = text.endswith(direct.split(" =")[0] + " =")
            if problem.family != 3 and by_direct != (problem.family == 2):
                completion = " " + task.solution_text(task.solution_steps(
                    problem, route="direct" if by_direct else "parts")).split(" =", 1)[1]
            else:
                completion = (f" 1 . The answer is {problem.answer + 1} .{builtin.CUES.verify} 1 - 0 = 1 ."
                              f"{builtin.CUES.retry} {direct}")
            rows[i] = [SimpleNamespace(token_ids=list(completion.encode()))]
        return rows


def test_routes_are_measured_from_each_routes_first_step_and_by_the_first_attempt():
    from sv_jax.tasks import arithmetic as task
    problems = task.draw_problems("test", 40, seed=0)
    figures = base.measure_routes(_RouteSampler(problems), _BytesTokenizer(), problems, ("direct", "parts"))
    assert set(figures) == {"direct", "parts"}  # the routes asked for (π₀'s), not the task's three
    two, three = (sum(p.family == f for p in problems) for f in (2, 3))
    assert np.isclose(figures["direct"]["all"], 1 - (two + three) / 40)
    assert np.isclose(figures["parts"]["all"], two / 40)
    assert figures["direct"]["2"] == 0.0 and figures["parts"]["2"] == 1.0 and figures["parts"]["1"] == 0.0
    assert np.isclose(figures["parts"]["where_others_wrong"], two / (two + three))
    assert np.isclose(figures["direct"]["where_others_wrong"], (40 - two - three) / (40 - two))
