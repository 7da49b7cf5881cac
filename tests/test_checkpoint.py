"""Checkpointer: interval and retention, exact restore (sharded too), a killed save, a wrong state."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from sv_jax.checkpoint import Checkpointer
from sv_jax.errors import UserError


def make_state(step: int):
    return {"params": {"w": jnp.full((8, 4), float(step))}, "step": jnp.asarray(step, jnp.int32)}


def test_saves_every_n_keeps_last_m_and_restores_latest(tmp_path):
    with Checkpointer(tmp_path / "ckpt", every=2, keep=2) as checkpointer:
        saved = [step for step in range(1, 7) if checkpointer.save(step, make_state(step), {"seen": step * 10})]
        checkpointer.wait()
        assert saved == [2, 4, 6]
        assert checkpointer.all_steps() == [4, 6]
    with Checkpointer(tmp_path / "ckpt", every=2) as checkpointer:
        state, metadata = checkpointer.restore(make_state(0))
    assert metadata == {"seen": 60}
    jax.tree.map(np.testing.assert_array_equal, state, make_state(6))


def test_an_interrupted_save_is_not_the_latest(tmp_path):
    with Checkpointer(tmp_path / "ckpt", every=1) as checkpointer:
        checkpointer.save(3, make_state(3))
    # What a process killed while writing step 4 leaves behind: orbax's temporary folder.
    (tmp_path / "ckpt" / "4.orbax-checkpoint-tmp-1234" / "state").mkdir(parents=True)
    with Checkpointer(tmp_path / "ckpt", every=1) as checkpointer:
        assert checkpointer.latest_step() == 3
        state, _ = checkpointer.restore(make_state(0))
    assert int(state["step"]) == 3


def test_sharded_state_restores_with_its_sharding(tmp_path):
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))
    sharding = NamedSharding(mesh, PartitionSpec("data", "model"))
    state = {"w": jax.device_put(jnp.arange(32.0).reshape(8, 4), sharding)}
    with Checkpointer(tmp_path / "ckpt", every=1) as checkpointer:
        checkpointer.save(1, state)
        checkpointer.wait()
        like = {"w": jax.ShapeDtypeStruct((8, 4), jnp.float32, sharding=sharding)}
        restored, _ = checkpointer.restore(like)
    assert restored["w"].sharding == sharding
    np.testing.assert_array_equal(restored["w"], state["w"])


def test_restoring_into_a_different_state_is_one_clear_line(tmp_path):
    with Checkpointer(tmp_path / "ckpt", every=1) as checkpointer:
        checkpointer.save(1, make_state(1))
        checkpointer.wait()
        with pytest.raises(UserError) as error:
            checkpointer.restore({"other": jnp.zeros(3)})
    assert "\n" not in str(error.value) and str(tmp_path / "ckpt") in str(error.value)


def test_nothing_to_restore_is_a_user_error(tmp_path):
    with Checkpointer(tmp_path / "ckpt", every=1) as checkpointer, pytest.raises(UserError):
        checkpointer.restore(make_state(0))
