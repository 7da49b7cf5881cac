"""The one checkpoint wrapper every training stage uses (orbax `CheckpointManager`).

Orbax writes each step into a temporary folder and renames it into place when complete, so a run
killed mid-save leaves the previous checkpoint as the latest one; the next run resumes from it. A
checkpoint damaged afterwards (a truncated or lost file, a config that changed its shapes) is moved
aside and the one before it is used; a save that fails (a full disk) stops the run with one line and
leaves the previous checkpoint as it was.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import flags
from etils import epath

from sv_jax.distributed import barrier, first_failure
from sv_jax.errors import UserError
from sv_jax.io import is_remote


class _ReportedByTheCaller(logging.Filter):
    """Orbax logs a failed background write with its traceback, then raises it again in the thread
    that waits for it, where it becomes one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and "orbax" in record.pathname)


logging.getLogger("absl").addFilter(_ReportedByTheCaller())

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
        self._saving: int | None = None  # the step of the last save, perhaps still being written
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

    def due(self, step: int) -> bool:
        """Whether `save` writes `step` without being forced."""
        return step % self.every == 0

    def save(self, step: int, state: Any, metadata: dict[str, Any] | None = None, force: bool = False) -> bool:
        """Saves if `step` is a multiple of `every` (or `force`); returns whether it did.
        Writing finishes in the background; `wait` blocks until it is on disk."""
        if not (force or self.due(step)):
            return False
        self._saving = step
        with self._failed_save(step):
            return self._manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state),
                    metadata=ocp.args.JsonSave(metadata or {}),
                ),
                force=True,
            )

    def resume(self, like: Any) -> tuple[int, Any, dict[str, Any]] | None:
        """(step, state, metadata) of the newest checkpoint that restores into `like`; None when there
        is no checkpoint. Each newer one that fails is named in one line and moved to
        `<directory>.damaged/<step>`, out of the way of the saves to come."""
        steps = sorted(self.all_steps(), reverse=True)
        for newer, step in enumerate(steps):
            try:
                state, metadata = self.restore(like, step)
                failure = first_failure(None)
            except UserError as error:
                failure = first_failure(str(error))
            if failure is None:
                return step, state, metadata
            print(f"{failure}; " + (f"falling back to step {steps[newer + 1]}" if newer + 1 < len(steps)
                                    else "no earlier checkpoint"))
            self._set_aside(step)
        if steps:
            raise UserError(f"{self.directory}: no checkpoint restores (tried steps {', '.join(map(str, steps))})")
        return None

    def _set_aside(self, step: int) -> None:
        aside = self.directory.parent / f"{self.directory.name}.damaged"
        if jax.process_index() == 0:
            aside.mkdir(parents=True, exist_ok=True)
            (self.directory / str(step)).rename(aside / str(step))
        barrier("checkpoint set aside")
        self._manager.reload()

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
        except Exception as error:  # noqa: BLE001 - orbax and TensorStore raise plain Exception for lost data
            raise UserError(f"{self.directory / str(step)}: checkpoint does not restore: {_first_line(error)}"
                            ) from None
        return restored.state, dict(restored.metadata or {})

    def wait(self) -> None:
        """Blocks until background writes are on disk."""
        with self._failed_save(self._saving):
            self._manager.wait_until_finished()

    @contextlib.contextmanager
    def _failed_save(self, step: int | None):
        """A write that fails (a full disk, a lost bucket) as one line; orbax renames a step into place
        only once it is whole, so the checkpoints before it are untouched."""
        try:
            yield
        except Exception as error:  # noqa: BLE001 - TensorStore's write errors come as ValueError
            kept = [s for s in self.all_steps() if step is None or s < step]
            code = re.search(r"os_error_code='(\d+)'", str(error))  # TensorStore's wording of an OS error
            reason = os.strerror(int(code.group(1))) if code else _first_line(error)
            raise UserError(f"{self.directory}: saving step {step} failed ({reason}); "
                            + (f"step {max(kept)} is kept" if kept else "no earlier checkpoint")) from None

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__
