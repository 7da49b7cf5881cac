"""The training loop: a run killed after a checkpoint resumes to exactly the uninterrupted result."""

import json

import jax
import numpy as np
import pytest

from sv_jax.models import ModelConfig, init_params
from sv_jax.training.lm import LMStep, init_train_state
from sv_jax.training.loop import train
from sv_jax.training.optimizer import make_optimizer

CONFIG = ModelConfig(family="llama", vocab_size=32, hidden_size=16, intermediate_size=32, num_layers=1,
                     num_heads=2, num_kv_heads=2, head_dim=8)
STEPS = 6


def batch_for_step(step):
    rng = np.random.default_rng([7, step])
    tokens = rng.integers(1, 32, size=(1, 4, 9)).astype(np.int32)
    ones = np.ones((1, 4, 8), np.int32)
    return {"inputs": tokens[..., :-1], "targets": tokens[..., 1:], "positions": np.broadcast_to(np.arange(8), (1, 4, 8)),
            "segment_ids": ones, "loss_mask": ones, "kl_mask": 0 * ones}


def fresh_state():
    optimizer, schedule = make_optimizer(1e-2, STEPS, warmup_steps=2)
    return init_train_state(init_params(CONFIG, jax.random.key(0)), optimizer), jax.jit(LMStep(CONFIG, optimizer)), schedule


class Killed(Exception):
    pass


def test_killed_run_resumes_to_identical_parameters(tmp_path):
    state, step, schedule = fresh_state()
    uninterrupted = train(state, step, batch_for_step, STEPS, tmp_path / "a", checkpoint_every=2, log_every=1,
                          learning_rate=schedule)

    def dies_at_step_5(state, batch):
        if int(state.step) == 4:
            raise Killed
        return step(state, batch)

    state, _, _ = fresh_state()
    with pytest.raises(Killed):
        train(state, dies_at_step_5, batch_for_step, STEPS, tmp_path / "b", checkpoint_every=2, log_every=1,
              learning_rate=schedule)
    state, _, _ = fresh_state()
    resumed = train(state, step, batch_for_step, STEPS, tmp_path / "b", checkpoint_every=2, log_every=1,
                    learning_rate=schedule)
    jax.tree.map(np.testing.assert_array_equal, resumed.params, uninterrupted.params)
    assert int(resumed.step) == STEPS

    logged = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in logged] == list(range(1, STEPS + 1))
    reference = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [m["loss"] for m in logged] == pytest.approx([m["loss"] for m in reference], rel=1e-6)
    assert {"loss", "lr", "grad_norm", "tokens_per_s"} <= set(logged[0])


def test_an_early_stop_is_final_and_a_rerun_returns_the_stopped_state(tmp_path):
    asked = []

    def stop_at_4(step_index, state):
        asked.append(step_index)
        return step_index == 4

    state, step, schedule = fresh_state()
    stopped = train(state, step, batch_for_step, STEPS, tmp_path, checkpoint_every=3, log_every=1,
                    learning_rate=schedule, stop=stop_at_4, stop_every=2)
    assert asked == [2, 4] and int(stopped.step) == 4
    state, _, _ = fresh_state()
    rerun = train(state, step, batch_for_step, STEPS, tmp_path, checkpoint_every=3, log_every=1,
                  learning_rate=schedule, stop=stop_at_4, stop_every=2)
    assert int(rerun.step) == 4 and asked == [2, 4]
    jax.tree.map(np.testing.assert_array_equal, rerun.params, stopped.params)
