"""From sampled responses to a PPO batch: rows of prompt + response, and per-token credit.

Host-side NumPy: rewards need the grader, which reads text. Credit is computed per response (its
own `[response length]` array) and then placed on the target positions of the response's row.
"""

from __future__ import annotations

import dataclasses
from typing import Hashable, Sequence

import numpy as np

from sv_jax.training.advantages import KeyedMeanBaseline, baseline_keys, leave_one_out, leave_one_out_by_position
from sv_jax.training.rewards import RewardValues, Scored, process_tokens
from sv_jax.trajectory import Cues, verdict

BASELINES = ("leave_one_out", "position", "level_position", "prefix")


def pack_rows(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], length: int) -> dict[str, np.ndarray]:
    """`[rows, length]` next-token rows of each prompt followed by its response, right-padded.
    `response_mask` is 1 where the target is a sampled token; `offsets` is where each response's
    first token sits among the targets."""
    rows = len(prompts)
    tokens = np.zeros((rows, length + 1), np.int32)
    real = np.zeros((rows, length + 1), np.int32)
    sampled = np.zeros((rows, length + 1), np.int32)
    for row, (prompt, response) in enumerate(zip(prompts, responses)):
        sequence = [*prompt, *response]
        if len(sequence) > length + 1:
            raise ValueError(f"row {row}: {len(sequence)} tokens do not fit a row of {length + 1}")
        tokens[row, : len(sequence)] = sequence
        real[row, : len(sequence)] = 1
        sampled[row, len(prompt) : len(sequence)] = 1
    return {
        "inputs": tokens[:, :-1],
        "targets": tokens[:, 1:],
        "positions": np.broadcast_to(np.arange(length, dtype=np.int32), (rows, length)).copy(),
        "segment_ids": real[:, :-1],
        "response_mask": sampled[:, 1:],
        "offsets": np.array([len(p) - 1 for p in prompts], np.int32),
    }


def row_ladder(most: int, multiple: int, rungs: int) -> tuple[int, ...]:
    """The row counts a packed program may take: `rungs` counts evenly spaced up to `most` (every
    response in its own row), each rounded up to a multiple of `multiple` (the devices, times the
    micro-batches, that a program's rows split over). A run then compiles at most `rungs` programs
    of each kind, whatever its responses' lengths; padding costs up to a rung's spacing."""
    top = -(-max(most, 1) // multiple) * multiple
    return tuple(sorted({-(-top * rung // rungs // multiple) * multiple for rung in range(1, rungs + 1)}))


@dataclasses.dataclass(frozen=True)
class Packing:
    """Some rows of the one-response-a-row layout of `pack_rows` laid back to back in fewer rows of
    the same length, each its own segment with its positions from 0, so that scoring and updating a
    rollout costs its tokens, not its responses times the longest possible row. The row count is
    the smallest rung of a fixed ladder (`row_ladder`) that holds them, so that a run compiles a
    few programs. `source_row` / `source_col`: where each packed slot comes from (`real` marks the
    slots that hold a token)."""

    responses: int
    source_row: np.ndarray
    source_col: np.ndarray
    real: np.ndarray
    segment_ids: np.ndarray

    @classmethod
    def of(cls, segment_ids: np.ndarray, members: Sequence[int], ladder: Sequence[int]) -> Packing:
        """Pack rows `members` of the one-response-a-row `segment_ids` first-fit, longest first, into
        the smallest row count of `ladder` that holds them."""
        used = (np.asarray(segment_ids) > 0).sum(axis=1)
        length = segment_ids.shape[1]
        free: list[int] = []
        placed: list[tuple[int, int, int]] = []  # (source row, packed row, start)
        for member in sorted(members, key=lambda m: -int(used[m])):
            packed_row = next((r for r, room in enumerate(free) if room >= used[member]), len(free))
            if packed_row == len(free):
                free.append(length)
            placed.append((int(member), packed_row, length - free[packed_row]))
            free[packed_row] -= int(used[member])
        rows = next((rung for rung in sorted(ladder) if rung >= len(free)), None)
        if rows is None:
            raise ValueError(f"{len(free)} packed rows exceed the ladder's largest rung ({max(ladder)})")
        source_row, source_col = np.zeros((rows, length), np.int32), np.zeros((rows, length), np.int32)
        real, segment_ids = np.zeros((rows, length), bool), np.zeros((rows, length), np.int32)
        for member, packed_row, start in placed:
            span = slice(start, start + int(used[member]))
            source_row[packed_row, span], source_col[packed_row, span] = member, np.arange(int(used[member]))
            real[packed_row, span] = True
            segment_ids[packed_row, span] = segment_ids[packed_row].max() + 1
        return cls(len(used), source_row, source_col, real, segment_ids)

    @property
    def filled(self) -> int:
        """The rows that hold a token: the row count before the ladder rounds it up."""
        return int(self.real.any(axis=1).sum())

    def pack(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """`[responses, length]` arrays (inputs, targets, positions, masks, per-token values) packed."""
        packed = {"segment_ids": self.segment_ids}
        for name, value in arrays.items():
            if name != "segment_ids":
                value = np.asarray(value)
                packed[name] = np.where(self.real, value[self.source_row, self.source_col], 0).astype(value.dtype)
        return packed

    def unpack(self, packed: np.ndarray) -> np.ndarray:
        """A packed `[rows, length]` array back to one response a row (0 where nothing was packed)."""
        packed = np.asarray(packed)
        out = np.zeros((self.responses, packed.shape[1]), packed.dtype)
        out[self.source_row[self.real], self.source_col[self.real]] = packed[self.real]
        return out


def place(per_response: Sequence[np.ndarray], offsets: np.ndarray, length: int, fill: float = 0,
          dtype: type = np.float32) -> np.ndarray:
    """Per-response token arrays onto `[rows, length]` target positions (`fill` elsewhere)."""
    out = np.full((len(per_response), length), fill, dtype)
    for row, (values, offset) in enumerate(zip(per_response, offsets)):
        out[row, offset : offset + len(values)] = values[: length - offset]
    return out


def response_rewards(scored: Sequence[Scored], values: RewardValues) -> np.ndarray:
    """Outcome level: the final answer's reward, or `no_end` for a response that never ended."""
    return np.array([(values.right if s.final_correct else values.wrong) if s.ended else values.no_end
                     for s in scored], np.float32)


def outcome_credit(scored: Sequence[Scored], k: int, values: RewardValues, baseline: str,
                   running: KeyedMeanBaseline | None, levels: Sequence[int]) -> list[np.ndarray]:
    """Every response token carries its response's reward minus the baseline: leave-one-out over
    the k samples of its question (RLOO), or a running mean keyed as one action at position 0."""
    rewards = response_rewards(scored, values)
    if baseline == "leave_one_out":
        advantages = leave_one_out(rewards.reshape(-1, k)).reshape(-1)
    else:
        keys = [baseline_keys(baseline, [True], level)[0] for level in levels]
        advantages = rewards - running(keys)
        running.update(keys, rewards)
    return [np.full(len(s.token_action), a, np.float32) for s, a in zip(scored, advantages)]


def process_credit(scored: Sequence[Scored], k: int, values: RewardValues, baseline: str, credit: str,
                   running: KeyedMeanBaseline | None, levels: Sequence[int]) -> list[np.ndarray]:
    """Each action's reward minus its baseline (leave-one-out over the question's samples at the
    same action position, or a running mean by position / level and position / prefix of earlier
    outcomes), placed per token by `credit` (`action` or `reward_to_go`)."""
    action_rewards = [s.action_rewards for s in scored]
    if baseline == "leave_one_out":
        advantages = leave_one_out_by_position(action_rewards, [i // k for i in range(len(scored))])
    else:
        all_keys: list[Hashable] = []
        advantages = []
        for s, level in zip(scored, levels):
            keys = baseline_keys(baseline, list(s.action_rewards > 0), level)
            advantages.append(s.action_rewards - running(keys))
            all_keys += keys
        running.update(all_keys, np.concatenate(action_rewards) if action_rewards else [])
    return [process_tokens(s, a, len(s.token_action), credit, values) for s, a in zip(scored, advantages)]


def retry_point(scored: Scored, cues: Cues) -> int | None:
    """How many of a response's tokens lead up to the end of its first verification when that
    verification rejected the attempt (a retry comes next: a branch resamples it from there); None
    when the first verification accepts, reads no verdict, or is missing."""
    if len(scored.actions) < 2 or verdict(scored.actions[1].text, cues) is not False:
        return None
    verification = np.flatnonzero(scored.token_action == 1)
    return int(verification[-1]) + 1 if len(verification) else None


def reward_to_go(per_token: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`[rows, time]`: the sum of each row's masked per-token values from each position on."""
    masked = per_token * mask
    return np.cumsum(masked[:, ::-1], axis=1)[:, ::-1] * mask
