"""Meshes and shardings on 8 simulated CPU devices: layouts follow the logical axes, and a sharded
training step computes what a single device does."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from sv_jax.errors import UserError
from sv_jax.models import ModelConfig, init_params
from sv_jax.sharding import batch_sharding, make_mesh, param_shardings
from sv_jax.training.lm import LMStep, init_train_state
from sv_jax.training.optimizer import make_optimizer
from tests.test_training import padded_batch

CONFIG = ModelConfig(family="qwen2", vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=2,
                     num_heads=4, num_kv_heads=2, head_dim=8, attention_bias=True)


def test_mesh_fills_minus_one_and_names_a_bad_shape():
    assert dict(make_mesh((2, -1), ("data", "model")).shape) == {"data": 2, "model": 4}
    with pytest.raises(UserError, match="mesh.shape"):
        make_mesh((3, 2), ("data", "model"))
    with pytest.raises(UserError, match="mesh.axes"):
        make_mesh((8,), ("tensor",))


def test_parameters_shard_by_their_logical_axes():
    shardings = param_shardings(CONFIG, make_mesh((2, 4), ("fsdp", "model")))
    attention = shardings["layers"]["attention"]  # the stacked layers' axis first, whole
    assert attention["q"]["kernel"].spec == PartitionSpec(None, "fsdp", "model", None)
    assert attention["k"]["kernel"].spec == PartitionSpec(None, "fsdp", None, None)  # 2 kv heads: 4 does not divide
    assert shardings["layers"]["mlp"]["down"]["kernel"].spec == PartitionSpec(None, "model", "fsdp")
    assert shardings["embed"]["embedding"].spec == PartitionSpec("model", "fsdp")


@pytest.mark.parametrize("shape, axes", [((8,), ("data",)), ((2, 2, 2), ("data", "fsdp", "model"))])
def test_sharded_step_equals_the_single_device_step(shape, axes):
    rows = [[1, 5, 7, 9, 11, 3, 2], [4, 8, 15, 16], [6, 6, 2, 30, 1], [9, 3, 2, 2]] * 2
    batch = padded_batch(rows, [[1] * len(r) for r in rows])
    optimizer, _ = make_optimizer(1e-2, total_steps=10)
    params = init_params(CONFIG, jax.random.key(0))
    step = jax.jit(LMStep(CONFIG, optimizer))
    expected, expected_metrics = step(init_train_state(params, optimizer), batch)

    mesh = make_mesh(shape, axes)
    placed = jax.device_put(params, param_shardings(CONFIG, mesh))
    sharded, metrics = step(init_train_state(placed, optimizer), jax.device_put(batch, batch_sharding(mesh)))
    assert float(metrics["loss"]) == pytest.approx(float(expected_metrics["loss"]), rel=1e-5)
    for got, want in zip(jax.tree.leaves(sharded.params), jax.tree.leaves(expected.params)):
        # Adam's first update is about lr * sign(gradient): reduction-order noise in a tiny gradient moves it
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-5)
    q_kernel = sharded.params["layers"]["attention"]["q"]["kernel"]
    assert q_kernel.sharding.is_equivalent_to(param_shardings(CONFIG, mesh)["layers"]["attention"]["q"]["kernel"], 4)
