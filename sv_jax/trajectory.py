"""The one text format of a response `r = {s1, v1, s2, v2, ...}`, both ways, down to tokens.

A response is its actions joined by cue phrases: an attempt, the verify cue, its verification (which
ends in a verdict phrase), then — after an "incorrect" verdict — the retry cue and the next attempt.
`build` writes it, `parse` reads it back from any text a model may produce (truncated or malformed
included), and `tokenize` says which action each token belongs to and whether it is learned.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

import numpy as np

SOLVE, VERIFY = "solve", "verify"
CUE = -1  # action index of a cue token (and of the end-of-sequence token)
PROMPT = -2  # action index of a prompt token


@dataclasses.dataclass(frozen=True)
class Cues:
    """The phrases that join actions. Defaults: the paper's code, for real models."""

    verify: str = "\n\nWait, let me recheck my solution.\n\n"
    retry: str = "\n\nLet me try again.\n\n"
    verdict_correct: str = "Therefore, the answer is correct."
    verdict_incorrect: str = "Therefore, the answer is incorrect."

    @classmethod
    def from_config(cls, config: Any) -> Cues:
        return cls(config.verify, config.retry, config.verdict_correct, config.verdict_incorrect)


@dataclasses.dataclass(frozen=True)
class Action:
    """kind: solve | verify. correct: a solve's answer is right / a verify's verdict is true (None:
    unknown). mask: 1 if supervised fine-tuning learns this action's tokens."""

    kind: str
    text: str
    correct: bool | None = None
    mask: int = 1


def build(actions: Sequence[Action], cues: Cues) -> tuple[str, list[tuple[int, int]]]:
    """The response text and each action's `(start, end)` character span in it."""
    text, spans = "", []
    for i, action in enumerate(actions):
        if cues.verify in action.text or cues.retry in action.text:
            raise ValueError(f"action {i} contains a cue phrase: {action.text!r}")
        if action.kind == VERIFY:
            text += cues.verify
        elif i > 0:
            text += cues.retry
        spans.append((len(text), len(text) + len(action.text)))
        text += action.text
    return text, spans


def parse(text: str, cues: Cues) -> list[Action]:
    """The actions of any text: what follows the verify cue is a verification, what starts the text
    or follows the retry cue is an attempt. Never raises; empty text is one empty attempt."""
    pattern = re.compile("|".join(re.escape(cue) for cue in sorted({cues.verify, cues.retry}, key=len, reverse=True)))
    actions, kind, start = [], SOLVE, 0
    for match in pattern.finditer(text):
        actions.append(Action(kind, text[start : match.start()]))
        kind = VERIFY if match.group() == cues.verify else SOLVE
        start = match.end()
    actions.append(Action(kind, text[start:]))
    return actions


def verdict(verification: str, cues: Cues) -> bool | None:
    """True for a "correct" verdict, False for "incorrect", None when neither phrase is there
    (the last one written counts)."""
    at_correct, at_incorrect = verification.rfind(cues.verdict_correct), verification.rfind(cues.verdict_incorrect)
    if at_correct < 0 and at_incorrect < 0:
        return None
    return at_correct > at_incorrect


@dataclasses.dataclass
class Tokenized:
    """One `prompt + response + EOS` as token arrays, each `[time]`.

    action: index of the action a response token belongs to, CUE for cue and EOS tokens, PROMPT for
    prompt tokens. loss_mask: 1 where supervised fine-tuning learns the token.
    """

    tokens: np.ndarray
    action: np.ndarray
    loss_mask: np.ndarray


def tokenize(tokenizer: Any, prompt: str, actions: Sequence[Action], cues: Cues) -> Tokenized:
    """Tokens of the prompt, the response and EOS, with each token's action and loss mask.

    Prompt and response are encoded apart, as a sampler sees them. A response token belongs to the
    action whose span holds its first character; cue tokens are learned (the model must learn to
    open a verification and a retry), as is EOS; prompt tokens never are.
    """
    response, spans = build(actions, cues)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    encoding = tokenizer(response, return_offsets_mapping=True, add_special_tokens=False)
    starts = np.array([start for start, _ in encoding["offset_mapping"]], dtype=np.int64)
    response_action = np.full(len(starts), CUE)
    loss_mask = np.ones(len(starts), np.int32)
    for index, ((start, end), act) in enumerate(zip(spans, actions)):
        inside = (starts >= start) & (starts < end)
        response_action[inside] = index
        loss_mask[inside] = act.mask
    return Tokenized(
        tokens=np.array([*prompt_ids, *encoding["input_ids"], tokenizer.eos_token_id], np.int32),
        action=np.concatenate([np.full(len(prompt_ids), PROMPT), response_action, [CUE]]).astype(np.int32),
        loss_mask=np.concatenate([np.zeros(len(prompt_ids)), loss_mask, [1]]).astype(np.int32),
    )
