"""The trajectory format: build / parse round trip, parse on any text, verdicts, token masks."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sv_jax.tasks import arithmetic as task
from sv_jax.tasks.tokenizer import train_tokenizer
from sv_jax.trajectory import CUE, PROMPT, SOLVE, VERIFY, Action, Cues, build, parse, tokenize, verdict

CUES = Cues()
SHORT = Cues(verify="\nCheck: ", retry="\nRetry: ", verdict_correct=task.VERDICT_RIGHT,
             verdict_incorrect=task.VERDICT_WRONG)
action_text = st.text(alphabet=st.characters(blacklist_characters="\n"), max_size=40)


@st.composite
def responses(draw):
    """Alternating solve / verify actions, possibly ending after an attempt (a truncated response)."""
    rounds = draw(st.integers(1, 4))
    actions = []
    for _ in range(rounds):
        actions.append(Action(SOLVE, draw(action_text)))
        actions.append(Action(VERIFY, draw(action_text)))
    return actions[: len(actions) - draw(st.integers(0, 1))]


@given(actions=responses(), cues=st.sampled_from([CUES, SHORT]))
def test_parse_inverts_build(actions, cues):
    text, spans = build(actions, cues)
    assert parse(text, cues) == actions
    assert [text[start:end] for start, end in spans] == [a.text for a in actions]


@settings(max_examples=300)
@given(pieces=st.lists(st.sampled_from(list("ab .\n") + [CUES.verify, CUES.retry, CUES.verdict_correct,
                                                         CUES.verify[:9], CUES.retry[3:]])))
def test_parse_never_raises_and_keeps_every_character(pieces):
    text = "".join(pieces)
    actions = parse(text, CUES)
    assert all(a.kind in (SOLVE, VERIFY) for a in actions)
    assert "".join(a.text for a in actions) == text.replace(CUES.verify, "").replace(CUES.retry, "")
    assert len(actions) == 1 + text.count(CUES.verify) + text.count(CUES.retry)
    for action in actions:
        verdict(action.text, CUES)


def test_verdicts_are_read_and_a_missing_one_is_none():
    assert verdict("5 + 5 = 10 . Therefore, the answer is correct.", CUES) is True
    assert verdict("Therefore, the answer is incorrect.", CUES) is False
    assert verdict("Therefore, the answer is correct. No wait. Therefore, the answer is incorrect.", CUES) is False
    assert verdict("Therefore, the answer is", CUES) is None


def test_truncated_generation_parses_to_its_actions():
    text = "3 * 4 = 12 ." + CUES.verify + "4 * 3 = 12 . Therefore" + CUES.retry[:5]
    assert [a.kind for a in parse(text, CUES)] == [SOLVE, VERIFY]


def test_tokens_know_their_action_and_mask():
    problem = task.make_problem(3, (5, 3, 4))
    wrong, wrong_answer = "3 * 4 = 15 . 5 + 15 = 20 . The answer is 20 .", 20
    actions = [
        Action(SOLVE, wrong, correct=False, mask=0),
        Action(VERIFY, task.verification(problem, wrong_answer, "problem_solving"), correct=True),
        Action(SOLVE, task.solution_text(task.solution_steps(problem)), correct=True),
        Action(VERIFY, task.verification(problem, 17, "confirmative"), correct=True),
    ]
    tokenizer = train_tokenizer([problem.question, wrong, *(a.text for a in actions), SHORT.verify, SHORT.retry])
    prompt = f"Question: {problem.question}\nAnswer: "
    tokenized = tokenize(tokenizer, prompt, actions, SHORT)
    assert len(tokenized.tokens) == len(tokenized.action) == len(tokenized.loss_mask)
    assert tokenized.tokens[-1] == tokenizer.eos_token_id and tokenized.loss_mask[-1] == 1
    prompt_tokens = tokenized.action == PROMPT
    assert np.all(tokenized.loss_mask[prompt_tokens] == 0)
    assert prompt_tokens.sum() == len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    for index, act in enumerate(actions):
        ids = tokenized.tokens[tokenized.action == index]
        assert tokenizer.decode(ids).strip() == act.text.strip()
        assert np.all(tokenized.loss_mask[tokenized.action == index] == act.mask)
    cue_ids = tokenized.tokens[(tokenized.action == CUE)][:-1]
    assert tokenizer.decode(cue_ids).replace(" ", "") == (SHORT.verify + SHORT.retry + SHORT.verify).replace(" ", "")
    assert np.all(tokenized.loss_mask[tokenized.action == CUE] == 1)
