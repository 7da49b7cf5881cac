"""SFT batches: each epoch visits every example once, packed rows keep examples apart, and a step's
batch depends on the step alone."""

import numpy as np

from sv_jax.training.batches import Batches, Example


def examples(lengths):
    return [Example(np.arange(100 * i, 100 * i + n, dtype=np.int32), np.ones(n, np.int32), np.zeros(n, np.int32))
            for i, n in enumerate(lengths)]


def test_packed_rows_hold_whole_examples_with_their_own_segments_and_positions():
    batches = Batches(examples([5, 7, 3, 9, 4, 6]), rows=1, seq_len=12, micro_batches=1, seed=0)
    seen = []
    for step in range(batches.rows_per_epoch):
        batch = {name: value[0, 0] for name, value in batches(step).items()}
        segments = batch["segment_ids"]
        assert np.all(np.diff((segments > 0).astype(int)) <= 0)  # padding only at the end
        for segment in sorted(set(segments[segments > 0])):
            where = segments == segment
            inputs = batch["inputs"][where]
            assert inputs[0] % 100 == 0  # an example starts at its first token
            np.testing.assert_array_equal(batch["positions"][where], np.arange(where.sum()))
            np.testing.assert_array_equal(batch["targets"][where], inputs + 1)
            seen.append(int(inputs[0]) // 100)
    assert sorted(seen) == list(range(6))
    assert batches.rows_per_epoch < 6  # some rows hold two examples


def test_every_example_once_an_epoch_and_the_same_batch_for_the_same_step():
    data = examples([4] * 10)
    batches = Batches(data, rows=2, seq_len=6, micro_batches=2, seed=3, pack=False)
    assert batches.rows_per_epoch == 10
    firsts = [int(batches(step)["inputs"][m, 0, 0]) // 100 for step in range(5) for m in range(2)]
    assert sorted(firsts) == list(range(10))
    again = Batches(data, rows=2, seq_len=6, micro_batches=2, seed=3, pack=False)
    for step in (7, 2, 11):
        for name, value in batches(step).items():
            np.testing.assert_array_equal(value, again(step)[name])
    assert batches(0)["inputs"].shape == (2, 1, 6)


def test_long_examples_are_cut_and_counted():
    batches = Batches(examples([20, 3]), rows=1, seq_len=8, seed=0)
    assert batches.truncated == 1
    assert all((batches(step)["segment_ids"] >= 0).all() for step in range(4))
