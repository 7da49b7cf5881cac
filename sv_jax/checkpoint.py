"""The one checkpoint wrapper every training stage uses (orbax `CheckpointManager`).

Orbax writes each step into a temporary folder and renames it into place when complete, so a run
killed mid-save leaves the previous checkpoint as the latest one; the next run resumes from it.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import flags
from etils import epath

from sv_jax.errors import UserError
from sv_jax.io import is_remote

# Orbax's barriers between processes through the coordination service, not a compiled all-gather on
# the devices each (~0.1 s a barrier between two CPU processes, a dozen barriers a checkpoint).
flags.FLAGS.experimental_orbax_use_distributed_barrier = True


class Checkpointer:
    """Saves a state pytree every `every` steps (plus JSON metadata), keeps the last `keep`.

    `state` is any pytree of arrays (parameters, optimizer state, step counters, RNG keys);
    `metadata` is a small JSON-able dict (e.g. the data iterator's position) saved beside it.
    """

    def __init__(self, directory: epath.PathLike, every: int, keep: int = 2):
        if every < 1:
            raise UserError(f"checkpoint interval must be >= 1, got {every}")
        # orbax wants local paths absolute; a bucket's (gs://...) stays as it is
        self.directory = epath.Path(directory if is_remote(directory) else os.path.abspath(directory))
        self.every = every
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                create=True,
                cleanup_tmp_directories=True,
            ),
            item_names=("state", "metadata"),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: Any, metadata: dict[str, Any] | None = None, force: bool = False) -> bool:
        """Saves if `step` is a multiple of `every` (or `force`); returns whether it did.
        Writing finishes in the background; `wait` blocks until it is on disk."""
        if not (force or step % self.every == 0):
            return False
        return self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                metadata=ocp.args.JsonSave(metadata or {}),
            ),
            force=True,
        )

    def restore(self, like: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
        """Restores `step` (default: latest) into the structure, dtypes and shardings of `like`
        (arrays or `jax.ShapeDtypeStruct`s)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise UserError(f"{self.directory}: no checkpoint to restore")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract),
                    metadata=ocp.args.JsonRestore(),
                ),
            )
        except (ValueError, KeyError, TypeError, FileNotFoundError) as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UserError(
                f"{self.directory / str(step)}: checkpoint does not match this run's state: {first_line}"
            ) from None
        return restored.state, dict(restored.metadata or {})

    def wait(self) -> None:
        """Blocks until background writes are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
