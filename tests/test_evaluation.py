"""Each evaluation figure against a hand count on hand-built responses."""

import pytest

from sv_jax.evaluation import Attempt, read_attempts, score, truncate
from sv_jax.tasks import builtin
from sv_jax.trajectory import SOLVE, VERIFY, Action

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
