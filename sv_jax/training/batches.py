"""Tokenized examples → the `[micro_batches, rows, time]` batches of `training.lm`, as a pure
function of the step (an exact resume replays the same data order).

Each epoch visits every example once in a seeded order. Packed rows hold several examples back to
back, each its own segment with positions from 0 (attention never crosses an example boundary);
padded rows hold one example each.
"""

from __future__ import annotations

import dataclasses

import numpy as np

FIELDS = ("inputs", "targets", "positions", "segment_ids", "loss_mask", "kl_mask")


@dataclasses.dataclass(frozen=True)
class Example:
    """One sequence: its tokens, and per token the weight of predicting it in the loss (`loss_mask`:
    0 where it is not learned) and whether the KL term applies there (`kl_mask`). Token 0 is never
    predicted."""

    tokens: np.ndarray
    loss_mask: np.ndarray
    kl_mask: np.ndarray


class Batches:
    """`batches(step)` → the step's batch. `truncated` counts examples longer than a row (cut)."""

    def __init__(self, examples: list[Example], rows: int, seq_len: int, micro_batches: int = 1,
                 seed: int = 0, pack: bool = True):
        if not examples:
            raise ValueError("no examples to train on")
        if rows % micro_batches:
            raise ValueError(f"rows ({rows}) must be a multiple of micro_batches ({micro_batches})")
        self.examples, self.rows, self.seq_len = examples, rows, seq_len
        self.micro_batches, self.seed, self.pack = micro_batches, seed, pack
        self.truncated = sum(len(e.tokens) - 1 > seq_len for e in examples)
        self._stream: list[list[int]] = []  # rows of example indices, epoch after epoch
        self._epochs = 0

    @property
    def rows_per_epoch(self) -> int:
        return len(self._epoch_rows(0))

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        end = (step + 1) * self.rows
        while len(self._stream) < end:
            self._stream += self._epoch_rows(self._epochs)
            self._epochs += 1
        arrays = [self._row(members) for members in self._stream[end - self.rows : end]]
        return {name: np.stack([row[i] for row in arrays]).reshape(self.micro_batches, -1, self.seq_len)
                for i, name in enumerate(FIELDS)}

    def _epoch_rows(self, epoch: int) -> list[list[int]]:
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.examples))
        if not self.pack:
            return [[int(i)] for i in order]
        rows, current, filled = [], [], 0
        for i in order:
            length = min(len(self.examples[i].tokens) - 1, self.seq_len)
            if current and filled + length > self.seq_len:
                rows.append(current)
                current, filled = [], 0
            current.append(int(i))
            filled += length
        return rows + [current]

    def _row(self, members: list[int]) -> tuple[np.ndarray, ...]:
        row = [np.zeros(self.seq_len, np.int32) for _ in FIELDS]
        inputs, targets, positions, segments, loss_mask, kl_mask = row
        start = 0
        for segment, index in enumerate(members, start=1):
            example = self.examples[index]
            length = min(len(example.tokens) - 1, self.seq_len)
            span = slice(start, start + length)
            inputs[span] = example.tokens[:length]
            targets[span] = example.tokens[1 : length + 1]
            positions[span] = np.arange(length)
            segments[span] = segment
            loss_mask[span] = example.loss_mask[1 : length + 1]
            kl_mask[span] = example.kl_mask[1 : length + 1]
            start += length
        return tuple(row)
