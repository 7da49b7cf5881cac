"""Per-token statistics of the policy's next-token distributions, from final hidden states,
without ever holding a whole `[rows, time, vocab]` array of logits.

Time goes `config.logits_chunk` steps at a time (`over_time_chunks`); within a chunk, a vocabulary
larger than `config.vocab_chunk` streams through tiles of the output kernel, each under
`jax.checkpoint`, carrying a running log-sum-exp (the online softmax). Only one tile's logits
and one `[hidden, tile]` slice of the kernel (and of its gradient) exist at a time: for Qwen's
152,064 entries under FSDP, a 260 MiB slice instead of the 2 GiB kernel gathered whole.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sv_jax.models import ModelConfig, Params
from sv_jax.models.decoder import output_kernel, project
from sv_jax.training.losses import over_time_chunks, token_entropy, token_kl, token_log_probs

Stats = dict[str, jax.Array]


def vocab_tiles(vocab_size: int, chunk: int) -> tuple[int, int]:
    """How many tiles, and how wide, cover `vocab_size` entries at most `chunk` at a time (one
    tile if `chunk` is 0 or not smaller); the last tile may run past the vocabulary by fewer
    entries than there are tiles."""
    if chunk <= 0 or chunk >= vocab_size:
        return 1, vocab_size
    tiles = -(-vocab_size // chunk)
    return tiles, -(-vocab_size // tiles)


def token_statistics(config: ModelConfig, params: Params, hidden: jax.Array, targets: jax.Array,
                     temperature: float = 1.0, entropy: bool = False,
                     reference: tuple[Params, jax.Array] | None = None) -> Stats:
    """`[batch, time]` float32 arrays for hidden states `[batch, time, hidden]` and `targets
    [batch, time]`, of the temperature-scaled distributions: `log_probs` (log p(target)), with
    `entropy` its `entropy`, and with `reference` (its parameters and hidden states) the `kl`
    KL(policy || reference)."""
    names = ["log_probs"] + ["entropy"] * entropy + ["kl"] * (reference is not None)
    kernels = [output_kernel(config, params)]
    inputs = [hidden, targets]
    if reference is not None:
        kernels.append(output_kernel(config, reference[0]))
        inputs.append(reference[1])
    tiles, tile = vocab_tiles(config.vocab_size, config.vocab_chunk)

    def per_token(hidden, targets, *reference_hidden):
        if tiles == 1:
            return _whole(config, kernels, hidden, targets, reference_hidden, temperature, entropy)
        return _streamed(config, kernels, tiles, tile, hidden, targets, reference_hidden, temperature, entropy)

    return dict(zip(names, over_time_chunks(per_token, config.logits_chunk, *inputs)))


def _whole(config, kernels, hidden, targets, reference_hidden, temperature, entropy) -> tuple[jax.Array, ...]:
    logits = project(config, hidden, kernels[0]) / temperature
    stats = [token_log_probs(logits, targets)]
    if entropy:
        stats.append(token_entropy(logits))
    if reference_hidden:
        stats.append(token_kl(logits, project(config, reference_hidden[0], kernels[1]) / temperature))
    return tuple(stats)


def _streamed(config, kernels, tiles, tile, hidden, targets, reference_hidden, temperature, entropy) -> tuple[jax.Array, ...]:
    """`_whole`'s statistics from running sums over vocabulary tiles. With `m` the running maximum
    logit and `e = exp(logit - m)`: `s = Σe` gives log Z = m + log s; `Σe·logit` the entropy
    (log Z - E[logit]); `Σe·(logit - reference logit)` and the reference's own (m, s) the KL
    (E[logit - reference logit] - log Z + log Z_reference). Columns past the vocabulary (zero
    kernel columns) get a logit of -1e30: weight 0 in every sum."""
    padding = tiles * tile - config.vocab_size

    def split(kernel: jax.Array) -> jax.Array:  # [hidden, vocab] -> [tiles, hidden, tile]
        kernel = jnp.pad(kernel, ((0, 0), (0, padding)))
        return jnp.moveaxis(kernel.reshape(kernel.shape[0], tiles, tile), 1, 0)

    def tile_logits(hidden: jax.Array, kernel: jax.Array, start: jax.Array) -> jax.Array:
        logits = project(config, hidden, kernel) / temperature
        if padding:
            logits = jnp.where(start + jnp.arange(tile) < config.vocab_size, logits, -1e30)
        return logits

    with_kl = bool(reference_hidden)
    zeros = jnp.zeros(targets.shape, jnp.float32)
    minus_inf = jnp.full(targets.shape, -jnp.inf, jnp.float32)

    def add_tile(carry, piece):
        start, kernel, *reference_kernel = piece
        logits = tile_logits(hidden, kernel, start)
        top = jnp.maximum(carry["m"], jax.lax.stop_gradient(logits.max(axis=-1)))
        rescale = jnp.exp(carry["m"] - top)
        weights = jnp.exp(logits - top[..., None])
        offset = targets - start
        inside = (offset >= 0) & (offset < tile)
        picked = jnp.take_along_axis(logits, jnp.clip(offset, 0, tile - 1)[..., None], axis=-1)[..., 0]
        new = {"m": top, "s": carry["s"] * rescale + weights.sum(axis=-1),
               "target": carry["target"] + jnp.where(inside, picked, 0.0)}
        if entropy:
            new["e_logit"] = carry["e_logit"] * rescale + (weights * logits).sum(axis=-1)
        if with_kl:
            reference_logits = tile_logits(reference_hidden[0], reference_kernel[0], start)
            reference_top = jnp.maximum(carry["m_ref"], jax.lax.stop_gradient(reference_logits.max(axis=-1)))
            new["e_gap"] = carry["e_gap"] * rescale + (weights * (logits - reference_logits)).sum(axis=-1)
            new["m_ref"] = reference_top
            new["s_ref"] = (carry["s_ref"] * jnp.exp(carry["m_ref"] - reference_top)
                            + jnp.exp(reference_logits - reference_top[..., None]).sum(axis=-1))
        return new, None

    carry = {"m": minus_inf, "s": zeros, "target": zeros}
    if entropy:
        carry["e_logit"] = zeros
    if with_kl:
        carry |= {"e_gap": zeros, "m_ref": minus_inf, "s_ref": zeros}
    pieces = (jnp.arange(tiles) * tile, *map(split, kernels))
    sums, _ = jax.lax.scan(jax.checkpoint(add_tile), carry, pieces)
    log_z = sums["m"] + jnp.log(sums["s"])
    stats = [sums["target"] - log_z]
    if entropy:
        stats.append(log_z - sums["e_logit"] / sums["s"])
    if with_kl:
        stats.append(sums["e_gap"] / sums["s"] - log_z + sums["m_ref"] + jnp.log(sums["s_ref"]))
    return tuple(stats)
