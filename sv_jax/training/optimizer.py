"""AdamW with linear warm-up, cosine decay and global-norm clipping; and a linear cool-down."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def make_optimizer(
    learning_rate: float,
    total_steps: int,
    warmup_steps: int = 0,
    weight_decay: float = 0.0,
    clip_norm: float = 1.0,
    final_fraction: float = 0.1,
    b1: float = 0.9,
    b2: float = 0.95,
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optimizer and its learning-rate schedule (for logging)."""
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=learning_rate,
        warmup_steps=warmup_steps,
        decay_steps=max(total_steps, warmup_steps + 1),
        end_value=learning_rate * final_fraction,
    )
    return clipped_adamw(schedule, weight_decay, clip_norm, b1, b2), schedule


def clipped_adamw(schedule: optax.Schedule, weight_decay: float = 0.0, clip_norm: float = 1.0,
                  b1: float = 0.9, b2: float = 0.95) -> optax.GradientTransformation:
    """AdamW after global-norm clipping. Norm scales and biases are not decayed: only parameters with
    two or more axes are. Its state does not depend on the schedule, so a run may change schedules."""
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)  # noqa: E731
    return optax.chain(
        optax.clip_by_global_norm(clip_norm),
        optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay, mask=decay_mask),
    )


def linear_cooldown(start_value: float, start_step: int, steps: int) -> optax.Schedule:
    """From `start_value` at optimizer step `start_step` down to 0 at `start_step + steps`."""
    return lambda count: start_value * jnp.clip(1.0 - (count - start_step) / steps, 0.0, 1.0)
