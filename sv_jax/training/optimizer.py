"""AdamW with linear warm-up, cosine decay and global-norm clipping, its moments in float32 whatever
the parameters' dtype; and a linear cool-down."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax


@functools.lru_cache(maxsize=None)
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
    """The optimizer and its learning-rate schedule (for logging). One object per settings, so that
    stages with equal settings build equal training steps, which share their programs (`shared_jit`)."""
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
    two or more axes per layer are. Its state does not depend on the schedule, so a run may change schedules."""
    return in_float32(optax.chain(
        optax.clip_by_global_norm(clip_norm),
        optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay, mask=_decayed),
    ))


def _decayed(params):
    """Which parameters weight decay applies to: two or more axes, not counting the leading axis of
    the decoder's stacked layers (`params["layers"]`, see `sv_jax.models.decoder`)."""
    def stacked(path) -> bool:
        return any(getattr(key, "key", None) == "layers" for key in path)

    return jax.tree_util.tree_map_with_path(lambda path, p: p.ndim - stacked(path) >= 2, params)


def in_float32(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """`inner` on float32 gradients: its moments (and clipping norms) are float32 also for bfloat16
    parameters, whose second moments would otherwise underflow; updates come back in each parameter's
    dtype. For float32 parameters it changes nothing."""

    def init(params):
        # optax.tree_map_params passes a placeholder object for the whole tree: kept as it is
        return inner.init(jax.tree.map(_widened, params))

    def update(grads, state, params=None):
        updates, state = inner.update(jax.tree.map(_widened, grads), state, params)
        return jax.tree.map(lambda u, g: u.astype(g.dtype), updates, grads), state

    return optax.GradientTransformation(init, update)


def _widened(x):
    """A float array in float32; anything else (optax's placeholder, integer arrays) as it is."""
    return x.astype(jnp.float32) if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jnp.floating) else x


def linear_cooldown(start_value: float, start_step: int, steps: int) -> optax.Schedule:
    """From `start_value` at optimizer step `start_step` down to 0 at `start_step + steps`."""
    return lambda count: start_value * jnp.clip(1.0 - (count - start_step) / steps, 0.0, 1.0)
