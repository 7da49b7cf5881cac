"""What pods do to runs: a damaged newest checkpoint, a save that fails, a loss that turns NaN."""

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sv_jax.checkpoint import Checkpointer
from sv_jax.errors import Diverged, UserError
from sv_jax.training.loop import train
from tests.killing import ENV, REPO
from tests.test_training_loop import STEPS, batch_for_step, fresh_state


def poisoned(step_fn, at: int):
    """`step_fn` whose loss is NaN at step `at` (counted from 1, as logged)."""
    def step(state, batch):
        state, metrics = step_fn(state, batch)
        return state, {**metrics, "loss": jnp.where(state.step == at, jnp.nan, metrics["loss"])}
    return step


def test_a_truncated_newest_checkpoint_is_named_and_the_one_before_resumes(tmp_path, capsys):
    state, step, schedule = fresh_state()
    uninterrupted = train(state, step, batch_for_step, STEPS, tmp_path / "a", checkpoint_every=2)
    train(fresh_state()[0], step, batch_for_step, 4, tmp_path / "b", checkpoint_every=2)  # checkpoints 2, 4
    # the tree's metadata: the arrays' bytes this process wrote are still in TensorStore's cache (a
    # new process fails on a truncated array file too: "Encountered error while reading array ...")
    damaged = tmp_path / "b" / "checkpoints" / "4" / "state" / "_METADATA"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    capsys.readouterr()

    resumed = train(fresh_state()[0], step, batch_for_step, STEPS, tmp_path / "b", checkpoint_every=2)
    printed = capsys.readouterr().out.splitlines()
    named = [line for line in printed if "checkpoints/4" in line]
    assert len(named) == 1 and "falling back to step 2" in named[0], printed
    assert "training: resuming from step 2" in printed
    jax.tree.map(np.testing.assert_array_equal, resumed.params, uninterrupted.params)
    assert (tmp_path / "b" / "checkpoints.damaged" / "4").is_dir()  # kept for a look, out of the saves' way


def test_checkpoints_of_another_shape_fall_back_until_none_is_left(tmp_path, capsys):
    with Checkpointer(tmp_path / "ckpt", every=1) as checkpointer:
        for step in (1, 2):
            checkpointer.save(step, {"w": jnp.zeros((4, 3))})
        checkpointer.wait()
        with pytest.raises(UserError) as error:
            checkpointer.resume({"w": jnp.zeros((5, 3))})  # a config that changed a width
    assert "\n" not in str(error.value) and "no checkpoint restores (tried steps 2, 1)" in str(error.value)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and "falling back to step 1" in printed[0] and "no earlier checkpoint" in printed[1]
    with Checkpointer(tmp_path / "empty", every=1) as checkpointer:
        assert checkpointer.resume({"w": jnp.zeros(1)}) is None


def test_a_save_that_fails_is_one_line_and_leaves_the_previous_checkpoint(tmp_path):
    # a file-size limit stands in for a full disk: the write fails with an OS error mid-checkpoint
    script = textwrap.dedent(f"""
        import resource, signal
        import jax.numpy as jnp
        import numpy as np
        from sv_jax.checkpoint import Checkpointer
        from sv_jax.errors import UserError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        with Checkpointer({str(tmp_path / "ckpt")!r}, every=1) as checkpointer:
            checkpointer.save(1, {{"w": jnp.ones((64, 64))}})
            checkpointer.wait()
            resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
            try:
                checkpointer.save(2, {{"w": jnp.asarray(np.random.default_rng(0).random((256, 64)))}})
                checkpointer.wait()
            except UserError as error:
                print("UserError:", error)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=120)
    said = [line for line in done.stdout.splitlines() if line.startswith("UserError:")]
    assert len(said) == 1, done.stdout
    assert "saving step 2 failed (File too large); step 1 is kept" in said[0]
    assert "Traceback" not in done.stderr, done.stderr
    with Checkpointer(tmp_path / "ckpt", every=1) as checkpointer:
        step, state, _ = checkpointer.resume({"w": jnp.zeros((64, 64))})
    assert step == 1 and float(state["w"][0, 0]) == 1.0


def test_a_nan_loss_stops_before_its_state_is_saved(tmp_path):
    state, step, _ = fresh_state()
    with pytest.raises(Diverged) as error:
        train(state, poisoned(step, at=3), batch_for_step, STEPS, tmp_path, checkpoint_every=2)
    assert str(error.value) == ("training: loss is not finite at step 3; the newest checkpoint is step 2, "
                                "from before it")
    with Checkpointer(tmp_path / "checkpoints", every=2) as checkpointer:
        assert checkpointer.all_steps() == [2]


def test_a_stage_whose_loss_turns_nan_exits_1_with_one_line(tmp_path):
    tiny = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, seq_len=64, short_seq_len=32,
                long_every=2, batch_size=2, micro_batches=1, steps=6, checkpoint_every=2, log_every=2,
                eval_questions=6, validate_every=0)
    flags = [f"--config.base.{key}={value}" for key, value in tiny.items()]
    script = textwrap.dedent(f"""
        import sys
        import jax.numpy as jnp
        from absl import app
        from sv_jax import main
        from sv_jax.training import loop
        from tests.test_faults import poisoned
        real = loop.train
        loop.train = lambda state, step_fn, *args, **kwargs: real(state, poisoned(step_fn, at=5), *args, **kwargs)
        sys.argv = ["sv_jax.main", "--config=configs/base.py", "--workdir={tmp_path}", *{flags!r}]
        app.run(main.main, flags_parser=main.parse_flags)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("sv_jax:")]
    assert errors == ["sv_jax: diverged: base: loss is not finite at step 5; the newest checkpoint is step 4, "
                      "from before it"], done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(int(p.name) for p in (tmp_path / "base" / "checkpoints").iterdir() if p.name.isdigit()) == [2, 4]
