"""Each evaluation figure against a hand count on hand-built responses."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from sv_jax.evaluation import Attempt, read_attempts, score, truncate
from sv_jax.tasks import arithmetic, builtin
from sv_jax.trajectory import SOLVE, VERIFY, Action, build

CUES = builtin.CUES
RIGHT, WRONG = CUES.verdict_correct, CUES.verdict_incorrect


def response(*parts):
    """("s", answer) for an attempt, ("v", verdict phrase or text) for a verification."""
    return [Action(SOLVE, f"The answer is {p} .") if kind == "s" else Action(VERIFY, f"check . {p}") for kind, p in parts]


def graded(actions):
    return read_attempts(actions, CUES, lambda text: ("is 7 ." in text, text.split()[3]))  # 7 is the right answer


def test_figures_equal_a_hand_count():
    responses = [
        response(("s", 7), ("v", RIGHT)),  # right, confirmed
        response(("s", 5), ("v", WRONG), ("s", 7), ("v", RIGHT)),  # wrong caught, fixed
        response(("s", 7), ("v", WRONG), ("s", 4), ("v", RIGHT)),  # right rejected, broken, wrong confirmed
        response(("s", 3), ("v", "no verdict here")),  # wrong, unreadable verdict
        response(("s", 9)),  # wrong, never verified
    ]
    figures = score([graded(r) for r in responses], tokens=[10, 20, 30, 40, 50])
    # attempts: R+c, W-i, R+c, R-i, W+c, W?, W(unverified): 7 attempts, 6 verified
    assert figures["n"] == 5
    assert figures["acc_first"] == pytest.approx(2 / 5)
    assert figures["acc_final"] == pytest.approx(2 / 5)
    assert figures["verify_acc"] == pytest.approx(3 / 6)  # R+c, W-i, R+c right; R-i, W+c, W? wrong
    assert figures["error_recall"] == pytest.approx(1 / 4)  # wrong attempts: W-i, W+c, W?, W
    assert figures["correct_recall"] == pytest.approx(2 / 3)  # right attempts: R+c, R+c, R-i
    assert figures["correct_precision"] == pytest.approx(2 / 3)  # "correct" verdicts: R, R, W
    assert figures["wrong_to_right"] == pytest.approx(1 / 5)
    assert figures["right_to_wrong"] == pytest.approx(1 / 5)
    # one true catch (5), fixed by a new answer; one false rejection (7), the response ends wrong
    assert (figures["fix_rate"], figures["repeat_rate"], figures["break_rate"]) == (1.0, 0.0, 1.0)
    assert figures["mean_attempts"] == pytest.approx(7 / 5)
    assert figures["mean_tokens"] == pytest.approx(30)


def test_self_correction_rates_count_retries_after_true_catches_and_endings_after_false_rejections():
    responses = [
        response(("s", 5), ("v", WRONG), ("s", 5), ("v", WRONG), ("s", 7), ("v", RIGHT)),  # repeat, then fix
        response(("s", 3), ("v", WRONG), ("s", 6), ("v", WRONG), ("s", 3), ("v", RIGHT)),  # new, then an older one
        response(("s", 7), ("v", WRONG), ("s", 7), ("v", RIGHT)),  # false rejection, kept right
        response(("s", 5), ("v", WRONG)),  # a catch with no retry: nothing to count
        response(("s", 7), ("v", WRONG)),  # false rejection, the response ends on it (right)
    ]
    figures = score([graded(r) for r in responses], tokens=[1] * 5)
    assert figures["fix_rate"] == pytest.approx(1 / 4)  # retries 5, 7, 6, 3
    assert figures["repeat_rate"] == pytest.approx(2 / 4)  # 5 and 3 were rejected before
    assert figures["break_rate"] == 0.0
    unrejected = score([graded(response(("s", 7), ("v", RIGHT)))], tokens=[1])
    assert unrejected["fix_rate"] is unrejected["repeat_rate"] is unrejected["break_rate"] is None


def test_no_verification_leaves_verification_ratios_undefined():
    figures = score([[Attempt(True, None, False)], [Attempt(False, None, False)]], tokens=[1, 1])
    assert figures["verify_acc"] is None and figures["correct_precision"] is None
    assert figures["error_recall"] == 0 and figures["correct_recall"] == 0


def test_truncation_stops_after_a_correct_verdict_or_the_last_allowed_attempt():
    long = response(("s", 5), ("v", WRONG), ("s", 6), ("v", WRONG), ("s", 7), ("v", RIGHT), ("s", 8))
    assert truncate(long, CUES, max_attempts=2) == long[:4]
    assert truncate(long, CUES, max_attempts=4) == long[:6]


EXPERIMENTS = Path(__file__).parents[1] / "experiments" / "s2r_arith"


def experiment(name):
    """experiments/s2r_arith/<name>.py, loaded as a module, its folder on the path as when it runs."""
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(EXPERIMENTS))
        spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def retries():
    return experiment("retries")


def test_retries_compare_two_policies_on_the_questions_both_caught_first(tmp_path, retries):
    def records(name, *attempts_by_question):
        """Records of questions 0, 1, ...: each (first right?, first verdict, first answer, second
        right?, second answer) or None for a first attempt accepted right."""
        file = tmp_path / f"{name}.records.jsonl"
        lines = []
        for question, attempts in enumerate(attempts_by_question):
            shown = [{"correct": True, "verdict": True, "answer": "7"}] if attempts is None else [
                {"correct": attempts[0], "verdict": attempts[1], "answer": attempts[2]},
                {"correct": attempts[3], "verdict": True, "answer": attempts[4]}]
            lines.append(json.dumps({"id": question, "response": "", "attempts": shown}))
        file.write_text("\n".join(lines) + "\n")
        return file

    # question 0: both catch 5, ours repeats it, theirs fixes; 1: both catch, both fix; 2: only ours
    # catches (theirs was right first); 3: ours falsely rejects a right 7 (not a catch)
    ours = records("ours", (False, False, "5", False, "5"), (False, False, "4", True, "7"),
                   (False, False, "3", True, "7"), (True, False, "7", False, "2"))
    theirs = records("theirs", (False, False, "5", True, "7"), (False, False, "6", True, "7"), None,
                     (False, False, "1", False, "1"))
    assert retries.paired([ours], [theirs]) == ("  on the 2 questions both caught first: second attempt right 1 "
                                                "against 2, repeats the first answer 1 against 0")
    with pytest.raises(SystemExit, match="--against: 2 files for 1 records files"):
        retries.paired([ours], [theirs, theirs])


def test_retries_split_true_catches_by_the_checks_style_and_whether_it_slipped(tmp_path, retries):
    problem = arithmetic.make_problem(1, (36, 123))  # a number increased by 36 is 123: 87
    wrong = "123 - 36 = 77 . The answer is 77 ."

    def record(check, retry_answer):
        retry = f" The answer is {retry_answer} ."
        actions = [Action(SOLVE, f" {wrong}"), Action(VERIFY, f" {check}"), Action(SOLVE, retry)]
        attempts = [{"correct": False, "verdict": False, "answer": "77"},
                    {"correct": retry_answer == 87, "verdict": True, "answer": str(retry_answer)}]
        return json.dumps({"id": problem.id, "response": build(actions, CUES)[0], "attempts": attempts})

    solving = arithmetic.verification(problem, 77, "problem_solving")  # 123 - 30 = 93 . 93 - 6 = 87 . 87 - 77 = 10
    confirming = arithmetic.verification(problem, 77, "confirmative")  # 77 + 36 = 113 . 113 - 123 = -10
    slipped = solving.replace("93 - 6 = 87 . 87 - 77 = 10", "93 - 6 = 85 . 85 - 77 = 8")
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join([record(solving, 87), record(solving, 77), record(confirming, 87),
                                record(slipped, 80), record(slipped, 87)]) + "\n")
    counts = retries.by_check([path])
    assert counts["problem_solving", True, "caught"] == 2 and counts["problem_solving", True, "fixed"] == 1
    assert counts["problem_solving", False, "caught"] == 2 and counts["problem_solving", False, "fixed"] == 1
    assert counts["confirmative", True, "caught"] == 1 and counts["confirmative", True, "fixed"] == 1
    assert "problem_solving exact      2     1 (50%)" in retries.describe_checks(counts)


def test_retries_split_by_the_routes_taken_before_count_as_the_evaluation_does(tmp_path, retries):
    problem = arithmetic.make_problem(1, (36, 123))  # a number increased by 36 is 123: 87
    direct = lambda answer: f"123 - 36 = {answer} . The answer is {answer} ."  # noqa: E731
    parts = lambda answer: f"36 - 6 = 30 . 123 - 30 = 93 . 93 - 6 = {answer} . The answer is {answer} ."  # noqa: E731
    over = lambda answer: f"123 + 7 = 130 . 130 - 36 = 94 . 94 - 7 = {answer} . The answer is {answer} ."  # noqa: E731

    def record(*attempts):
        """Attempts (route, answer, verdict), each followed by a check with that verdict."""
        actions, shown = [], []
        for route, answer, said in attempts:
            actions += [Action(SOLVE, f" {route(answer)}"), Action(VERIFY, " a check")]
            shown.append({"correct": answer == 87, "verdict": said, "answer": str(answer)})
        return json.dumps({"id": problem.id, "response": build(actions, CUES)[0], "attempts": shown})

    path = tmp_path / "records.jsonl"
    path.write_text("\n".join([
        record((direct, 77, False), (parts, 87, True)),  # one route, the untried one: right
        # one route, the same again: a repeat; then the untried one: wrong; then both taken: a repeat
        record((direct, 77, False), (direct, 77, False), (parts, 85, False), (direct, 77, True)),
        # a false rejection counts no retry; after the catch that follows, both taken: right, and a
        # repeat of the falsely rejected answer, as the evaluation counts it
        record((direct, 87, False), (parts, 85, False), (direct, 87, True)),
        record((direct, 77, False), (parts, 85, False), (over, 87, True)),  # two routes taken, the third: right
    ]) + "\n")
    counts = retries.by_routes_tried([path])
    assert [counts["one", "tried", figure] for figure in ("retries", "right", "repeats")] == [1, 0, 1]
    assert [counts["one", "untried", figure] for figure in ("retries", "right", "repeats")] == [3, 1, 0]
    assert [counts["several", "tried", figure] for figure in ("retries", "right", "repeats")] == [2, 1, 2]
    assert [counts["several", "untried", figure] for figure in ("retries", "right", "repeats")] == [1, 1, 0]
    assert "    one     untried    3     1 (33%)     0 (0%)" in retries.describe_routes(counts)


def test_retries_read_the_answer_a_rejecting_check_points_at(tmp_path, retries):
    first = arithmetic.make_problem(1, (36, 123))  # a number increased by 36 is 123: 87
    second = arithmetic.make_problem(2, (57, 9, 228))  # 57 increased by 9 times a number is 228: 19
    solving = arithmetic.verification(first, 77, "problem_solving")  # ... 87 - 77 = 10: its own answer, 87
    assert retries.pointed_answer(first, 77, solving) == 87
    assert retries.pointed_answer(first, 77, arithmetic.verification(first, 77, "confirmative")) == 87  # 113 - 123
    assert retries.pointed_answer(second, 14, arithmetic.verification(second, 14, "confirmative")) == 19  # -45 / 9
    assert retries.pointed_answer(second, 14, "9 * 14 = 126 . 57 + 126 = 180 . 180 - 228 = -48 . "
                                  + arithmetic.VERDICT_WRONG) is None  # 48 is no multiple of 9
    slipped = arithmetic.slipped_verification(first, 87, "confirmative", np.random.default_rng(0))
    assert retries.pointed_answer(first, 87, slipped) not in (None, 87)  # a false rejection points elsewhere
    assert retries.pointed_answer(first, 87, arithmetic.verification(first, 87, "confirmative")) is None  # accepts

    def record(check, proposed):
        actions = [Action(SOLVE, f" The answer is {proposed} ."), Action(VERIFY, f" {check}"), Action(SOLVE, " x")]
        attempts = [{"correct": proposed == 87, "verdict": False, "answer": str(proposed)},
                    {"correct": False, "verdict": None, "answer": None}]
        return json.dumps({"id": first.id, "response": build(actions, CUES)[0], "attempts": attempts})

    path = tmp_path / "records.jsonl"
    slipped_on_77 = "77 + 36 = 110 . 110 - 123 = -13 . " + arithmetic.VERDICT_WRONG  # points at 90
    path.write_text("\n".join([record(solving, 77), record(slipped_on_77, 77), record(slipped, 87)]) + "\n")
    counts = retries.by_pointed_answer([path])
    assert (counts["true"], counts["true", "right"], counts["false"], counts["false", "right"]) == (2, 1, 1, 0)
    assert retries.describe_pointed(counts).endswith("right after 1 / 2 true catches, after 0 / 1 false rejections")


def test_step_errors_count_wrong_steps_by_place_and_operand_digits(tmp_path):
    step_errors = experiment("step_errors")
    attempt = " 161 - 53 = 108 . 108 / 9 = 12 . The answer is 12 ."
    retry = " 161 - 53 = 118 . 118 / 9 = 13 . The answer is 13 ."
    check = " 9 * 12 = 108 . 53 + 108 = 151 . 151 - 161 = -10 . " + arithmetic.VERDICT_WRONG
    actions = [Action(SOLVE, attempt), Action(VERIFY, check), Action(SOLVE, retry)]
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps({"id": "f2-53-9-161", "response": build(actions, CUES)[0]}) + "\n")
    counts = step_errors.step_errors([path])
    places = {key[:2] for key in counts}
    assert {key: (counts[(*key, "wrong")], counts[(*key, "steps")]) for key in places} == {
        ("attempt", "3-2"): (1, 2), ("attempt", "3/1"): (1, 2),  # 118 / 9 leaves a remainder: wrong too
        ("check", "1*2"): (0, 1), ("check", "2+3"): (1, 1), ("comparison", "3-3"): (0, 1)}
    assert "check       2+3        1 /     1 (100%)" in step_errors.describe(counts)
