"""Stage `data` on a tiny π₀: runs `base` first, writes trajectories in the DESIGN format and a summary."""

import json

import numpy as np
import pytest

from configs import data as data_config
from sv_jax.stages import data
from sv_jax.tasks import arithmetic as task
from sv_jax.trajectory import SOLVE


def test_fresh_workdir_runs_base_then_writes_trajectories(tmp_path):
    config = data_config.get_config()
    config.workdir = str(tmp_path)
    config.base.update(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, seq_len=64, short_seq_len=32, micro_batches=1,
                       batch_size=2, steps=2, checkpoint_every=2, log_every=1, eval_questions=4)
    config.data.update(num_questions=12, k=3, max_new_tokens=24, batch_size=8)
    data.run(config)
    assert (tmp_path / "base" / "model" / "config.json").exists()

    records = [json.loads(line) for line in (tmp_path / "data" / "trajectories.jsonl").read_text().splitlines()]
    summary = json.loads((tmp_path / "data" / "summary.json").read_text())
    assert summary["questions"] == 12 and summary["samples"] == 36
    assert summary["trajectories"] == len(records) == 12  # the reference rescues questions with no right sample
    assert sum(summary["levels"].values()) == 12
    for record in records:
        assert set(record) == {"id", "question", "answer", "difficulty", "accuracy", "solution", "actions", "text"}
        problem = next(p for p in task.draw_problems("train", 12, config.seed) if p.id == record["id"])
        solves = [a for a in record["actions"] if a["kind"] == SOLVE]
        assert task.grade(problem, solves[-1]["text"]) and solves[-1]["mask"] == 1
        assert record["solution"] == solves[-1]["text"]  # no correction read off a check by default
        assert all(a["mask"] == 0 and not a["correct"] for a in solves[:-1])
        assert 1 <= record["difficulty"] <= 5


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_a_share_of_easy_questions_opens_with_a_false_rejection(share):
    source = data.BuiltinSource(6, seed=0)
    right = [[task.solution_text(task.solution_steps(p))] * 4 for p in source.problems]  # level 1: one round
    settings = data_config.get_config().data
    settings.update(false_rejections=share, retry_route="any")  # one route: the attempt is written again
    records, summary = data.construct(source, source.grade(list(range(len(right))), right), settings, np.random.default_rng(0),
                                      np.random.default_rng(1))
    assert summary["false_rejections"] == share * len(records)
    for record in records:
        kinds = [(a["kind"], a["correct"], a["mask"]) for a in record["actions"]]
        if share:
            assert kinds == [("solve", True, 1), ("verify", False, 0), ("solve", True, 1), ("verify", True, 1)]
            assert record["actions"][1]["text"].endswith(task.VERDICT_WRONG)
        else:
            assert kinds == [("solve", True, 1), ("verify", True, 1)]


@pytest.mark.parametrize("reference_routes", [False, True])
def test_with_retry_route_other_a_false_rejection_is_followed_by_the_other_route(reference_routes):
    """Half the questions have right samples by both routes: each opens with a false rejection, then
    the right answer by the route not rejected, checked by the route it did not take. The rest, one
    route only, get no false rejection rather than a verbatim copy, unless the task's solutions by
    every route join the pool."""
    source = data.BuiltinSource(6, seed=0)
    routes = ["direct", "parts"]
    right = [[task.solution_text(task.solution_steps(p, route=routes[k % 2 and i % 2])) for k in range(4)]
             for i, p in enumerate(source.problems)]
    settings = data_config.get_config().data
    settings.update(false_rejections=1.0, retry_route="other", reference_routes=reference_routes)
    records, summary = data.construct(source, source.grade(list(range(len(right))), right), settings,
                                      np.random.default_rng(0), np.random.default_rng(1))
    assert summary["false_rejections"] == (6 if reference_routes else 3) and len(records) == 6
    for i, (problem, record) in enumerate(zip(source.problems, records)):
        actions = record["actions"]
        if not i % 2 and not reference_routes:
            assert len(actions) == 2
            continue
        first, rejection, retry, confirmation = (a["text"] for a in actions)
        assert rejection.endswith(task.VERDICT_WRONG) and task.grade(problem, retry)
        route = task.solution_route(problem, retry)
        assert route != task.solution_route(problem, first)
        confirmations = {task.verification(problem, problem.answer, style, route) for style in task.STYLES}
        assert confirmation.strip() in confirmations


def test_an_unknown_retry_route_is_one_clear_line(tmp_path):
    from sv_jax.errors import UserError

    config = data_config.get_config()
    config.workdir = str(tmp_path)
    config.data.retry_route = "sideways"
    with pytest.raises(UserError, match="data.retry_route"):
        data.run(config)


@pytest.mark.parametrize("routes", [("direct", "parts"), task.ROUTES])
def test_with_reference_routes_a_caught_error_is_retried_by_another_route_pi0_learned(routes):
    source = data.BuiltinSource(6, seed=0, routes=routes)
    rng = np.random.default_rng(0)
    samples = [[task.solution_text(task.solution_steps(p))] + [task.slipped_solution(p, rng)[0] for _ in range(3)]
               for p in source.problems]  # 1 of 4 right, all by the direct route: two rounds
    settings = data_config.get_config().data
    settings.update(false_rejections=0.0, retry_route="other", reference_routes=True)
    records, _ = data.construct(source, source.grade(list(range(6)), samples), settings, np.random.default_rng(0),
                                np.random.default_rng(1))
    for problem, record in zip(source.problems, records):
        solves = [a["text"] for a in record["actions"] if a["kind"] == SOLVE]
        assert len(solves) == 2 and task.grade(problem, solves[-1])
        assert task.solution_route(problem, solves[0]) == "direct"
        assert task.solution_route(problem, solves[1]) in routes[1:]


@pytest.mark.parametrize("verification", ["confirmative", "problem_solving"])
def test_with_correct_from_check_a_confirmative_rejection_is_followed_by_a_correction(verification):
    """A caught error's retry is read off a confirmative check (the rejected answer less the check's
    difference), and the record keeps a right solution standing alone; after a problem-solving check
    the retry solves again. False rejections are shown by problem-solving checks only."""
    source = data.BuiltinSource(8, seed=0)
    rng = np.random.default_rng(0)
    samples = [[task.solution_text(task.solution_steps(p))] * (4 if i % 2 else 1)
               + [task.slipped_solution(p, rng)[0] for _ in range(0 if i % 2 else 3)]
               for i, p in enumerate(source.problems)]  # odd: all right (one round); even: 1 of 4 (two rounds)
    settings = data_config.get_config().data
    settings.update(verification=verification, false_rejections=1.0, retry_route="any", correct_from_check=True)
    records, summary = data.construct(source, source.grade(list(range(8)), samples), settings,
                                      np.random.default_rng(0), np.random.default_rng(1))
    confirmative = verification == "confirmative"
    assert summary["corrections"] == (4 if confirmative else 0)
    assert summary["false_rejections"] == (0 if confirmative else 4)
    for i, (problem, record) in enumerate(zip(source.problems, records)):
        solves = [a["text"] for a in record["actions"] if a["kind"] == SOLVE]
        assert task.grade(problem, solves[-1])
        assert record["solution"] == task.solution_text(task.solution_steps(problem))
        if i % 2:
            assert len(solves) == (1 if confirmative else 2)
            continue
        rejected = task.final_answer(solves[0])
        check = record["actions"][1]["text"]
        if confirmative:
            assert solves[-1].strip() == task.correction(problem, rejected, task.check_difference(check))
        else:
            assert solves[-1] == record["solution"]


def test_correct_from_check_with_a_questions_file_is_one_clear_line(tmp_path):
    from sv_jax.errors import UserError

    config = data_config.get_config()
    config.workdir = str(tmp_path)
    config.data.update(questions=str(tmp_path / "q.jsonl"), correct_from_check=True)
    with pytest.raises(UserError, match="data.correct_from_check"):
        data.run(config)
