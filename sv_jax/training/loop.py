"""The loop every training stage runs: resume, step, log, checkpoint, with the data order a pure
function of the step so that a resumed run continues exactly as an uninterrupted one would."""

from __future__ import annotations

import json
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from tqdm.auto import tqdm

from sv_jax.checkpoint import Checkpointer
from sv_jax.errors import Diverged

WATCHED = ("loss", "grad_norm")  # a stage stops at the first step where one is not finite


class MetricsWriter:
    """Appends one JSON object per logged step to `metrics.jsonl` and mirrors it to TensorBoard.

    On resume, lines from steps after the checkpoint being resumed are dropped, so the file reads as
    one uninterrupted run. Of several processes, process 0 alone writes.
    """

    def __init__(self, directory: epath.Path, resume_step: int = 0):
        self.active = jax.process_index() == 0
        if not self.active:
            return
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "metrics.jsonl"
        if self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        # imported here: tensorboardX imports torch where it is installed (~2 s), which every other
        # process, and every stage that trains nothing, need not pay
        from tensorboardX import SummaryWriter

        self._tensorboard = SummaryWriter(str(directory / "tensorboard"))

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if not self.active:
            return
        with self.path.open("a") as out:
            out.write(json.dumps({"step": step, **metrics}) + "\n")
        for name, value in metrics.items():
            self._tensorboard.add_scalar(name, value, step)

    def close(self) -> None:
        if self.active:
            self._tensorboard.close()


def check_finite(metrics: dict[str, float], step: int, description: str, checkpointer: Checkpointer) -> None:
    """Raises `Diverged` if a watched metric of `step` (host values) is not finite, before the step's
    state is saved."""
    for name in WATCHED:
        if name in metrics and not np.isfinite(metrics[name]):
            raise _diverged(description, name, step, checkpointer)


@jax.jit
def _first_nonfinite(first: dict[str, jax.Array], step: jax.Array, metrics: dict[str, jax.Array]) -> dict:
    """Each watched metric's first step with a non-finite value (0: none yet), kept on the devices so
    that watching costs no host round trip a step."""
    return {name: jnp.where((first[name] == 0) & ~jnp.isfinite(metrics[name]), step, first[name]) for name in first}


def train(
    state: Any,
    step_fn: Callable[[Any, dict], tuple[Any, dict]],
    batch_for_step: Callable[[int], dict[str, np.ndarray]],
    total_steps: int,
    directory: epath.Path,
    checkpoint_every: int,
    log_every: int = 10,
    learning_rate: Callable[[int], float] | None = None,
    description: str = "training",
    stop: Callable[[int, Any], bool] | None = None,
    stop_every: int = 0,
) -> Any:
    """Runs `step_fn` from the latest checkpoint under `directory/checkpoints` (or from `state`) to
    `total_steps`, and returns the final state. `batch_for_step(step)` must depend on the step only.

    `stop(step, state)`, asked every `stop_every` steps, may end training early; the checkpoint of
    that step records it, so a rerun returns that state instead of training on."""
    with Checkpointer(directory / "checkpoints", every=checkpoint_every) as checkpointer:
        start, resumed = 0, checkpointer.resume(state)
        if resumed:
            start, state, metadata = resumed
            print(f"{description}: resuming from step {start}")
            if metadata.get("stopped"):
                return state
        writer = MetricsWriter(directory, start)
        bar = tqdm(total=total_steps, initial=start, desc=description, unit="step", disable=jax.process_index() != 0)
        window_start, window_tokens = time.perf_counter(), 0
        first_nonfinite = None
        for step in range(start, total_steps):
            state, metrics = step_fn(state, batch_for_step(step))
            done = step + 1
            if first_nonfinite is None:
                first_nonfinite = {name: jnp.zeros((), jnp.int32) for name in WATCHED if name in metrics}
            first_nonfinite = _first_nonfinite(first_nonfinite, done, {n: metrics[n] for n in first_nonfinite})
            stopped = bool(stop and stop_every and done % stop_every == 0 and stop(done, state))
            final = stopped or done == total_steps
            if final or checkpointer.due(done):
                _check_nothing_nonfinite(first_nonfinite, description, checkpointer)
            if done % log_every == 0 or done == total_steps:
                metrics = {name: float(value) for name, value in jax.device_get(metrics).items()}
                # the logged step's token count stands for the window's steps: exact for packed
                # fixed-size batches, and it spares a host round trip on every step
                window_tokens += metrics.pop("tokens", 0.0) * log_every
                elapsed = time.perf_counter() - window_start
                metrics["tokens_per_s"] = window_tokens / elapsed
                if learning_rate is not None:
                    metrics["lr"] = float(learning_rate(step))
                writer.write(done, metrics)
                bar.set_postfix(loss=f"{metrics['loss']:.3f}")
                window_start, window_tokens = time.perf_counter(), 0
            checkpointer.save(done, state, {"stopped": stopped}, force=final)
            bar.update(1)
            if stopped:
                break
        bar.close()
        writer.close()
        checkpointer.wait()
    return state


def _check_nothing_nonfinite(first_nonfinite: dict[str, jax.Array], description: str,
                             checkpointer: Checkpointer) -> None:
    """`Diverged` at the earliest step a watched metric was not finite, if any (one host read)."""
    found = [(int(step), name) for name, step in jax.device_get(first_nonfinite).items() if step]
    if found:
        raise _diverged(description, *reversed(min(found)), checkpointer)


def _diverged(description: str, metric: str, step: int, checkpointer: Checkpointer) -> Diverged:
    newest = checkpointer.latest_step()
    kept = f"the newest checkpoint is step {newest}, from before it" if newest else "no checkpoint was saved"
    return Diverged(f"{description}: {metric} is not finite at step {step}; {kept}")
