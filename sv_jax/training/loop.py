"""The loop every training stage runs: resume, step, log, checkpoint, with the data order a pure
function of the step so that a resumed run continues exactly as an uninterrupted one would."""

from __future__ import annotations

import json
import time
from typing import Any, Callable

import jax
import numpy as np
from etils import epath
from tensorboardX import SummaryWriter
from tqdm.auto import tqdm

from sv_jax.checkpoint import Checkpointer


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
        start = checkpointer.latest_step() or 0
        if start:
            print(f"{description}: resuming from step {start}")
            state, metadata = checkpointer.restore(state)
            if metadata.get("stopped"):
                return state
        writer = MetricsWriter(directory, start)
        bar = tqdm(total=total_steps, initial=start, desc=description, unit="step", disable=jax.process_index() != 0)
        window_start, window_tokens = time.perf_counter(), 0
        for step in range(start, total_steps):
            state, metrics = step_fn(state, batch_for_step(step))
            done = step + 1
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
            stopped = bool(stop and stop_every and done % stop_every == 0 and stop(done, state))
            checkpointer.save(done, state, {"stopped": stopped}, force=stopped or done == total_steps)
            bar.update(1)
            if stopped:
                break
        bar.close()
        writer.close()
        checkpointer.wait()
    return state
