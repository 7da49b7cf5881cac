"""Batched sampling inside one `jax.jit`: prefill the prompts, then decode over a KV cache.

`generate` is the pure device program: it prefills a left-padded prompt batch once, copies the cache
for `num_samples` samples per prompt, and runs a `lax.while_loop` that draws one token per row per
step until every row has ended (a stop sequence such as EOS, or `max_new_tokens`). `Sampler` feeds it
from the host: it sorts prompts by length, pads batches and prompt lengths up to a few buckets (so a
long run compiles a handful of programs), and turns the outputs back into per-sample results.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from tqdm.auto import tqdm

from sv_jax.distributed import rows_here, to_global
from sv_jax.models import KVCache, ModelConfig, Params, forward, init_cache, param_shardings
from sv_jax.models.decoder import CACHE, KEY_VALUE, decodes_unrolled, unstacked_layers
from sv_jax.models.partitioning import constrain
from sv_jax.sharding import data_parallelism, replicated, rows_sharding, split_over_model_only

MIN_PROMPT_BUCKET = 16


@dataclasses.dataclass(frozen=True)
class SamplingSpec:
    """What to draw; hashable, so each distinct spec is one static argument of the jitted program.

    temperature: 0 draws greedily. top_k: keep the k likeliest tokens (0: all). top_p: keep the
    smallest set of likeliest tokens whose probability reaches p (1: all).
    stop_sequences: token-id sequences that end a row when generated (EOS is one of length 1); the
    stop tokens are part of the output.
    vocab_size: ids at or above it are never drawn (checkpoints pad the embedding past the tokenizer).
    """

    max_new_tokens: int
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    stop_sequences: tuple[tuple[int, ...], ...] = ()
    vocab_size: int | None = None


@flax.struct.dataclass
class SampleOutput:
    """tokens / logprobs: `[rows, max_new_tokens]`, zero after a row's end. lengths: `[rows]`.

    Row `i * num_samples + j` is sample j of prompt i. `logprobs` are the log-probabilities of the
    drawn tokens under the temperature-scaled, untruncated distribution (the policy's, for RL).
    """

    tokens: jax.Array
    logprobs: jax.Array
    lengths: jax.Array


def truncate_logits(logits: jax.Array, top_k: int, top_p: float) -> jax.Array:
    """Sets to -inf every logit outside the top-k, then outside the top-p nucleus. `[rows, vocab]`."""
    if top_k > 0:
        kth_largest = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth_largest, -jnp.inf, logits)
    if top_p < 1.0:
        descending = -jnp.sort(-logits, axis=-1)
        probs = jax.nn.softmax(descending, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        kept = jnp.sum(mass_before < top_p, axis=-1, keepdims=True)
        threshold = jnp.take_along_axis(descending, kept - 1, axis=-1)
        logits = jnp.where(logits < threshold, -jnp.inf, logits)
    return logits


def _inverse_cdf_draw(logits: jax.Array, rng: jax.Array, block: int = 256) -> jax.Array:
    """One draw per row of `softmax(logits) [rows, vocab]` from a single uniform number per row, drawn
    from `rng`: one key for the batch, or one key per row `[rows]`.

    `jax.random.categorical` draws a Gumbel number per vocabulary entry and `jnp.cumsum` over the
    vocabulary lowers to a windowed reduction; on CPU either costs more than the model's decode step.
    So: cumulative mass over blocks of `block` tokens, pick the block the uniform falls in, then the
    token inside that block. A zero-probability token is never the first to pass the uniform.
    """
    rows, vocab = logits.shape
    blocks = -(-vocab // block)
    probs = jax.nn.softmax(logits, axis=-1)
    probs = jnp.pad(probs, ((0, 0), (0, blocks * block - vocab))).reshape(rows, blocks, block)
    block_mass = probs.sum(axis=-1)
    mass_through = jnp.cumsum(block_mass, axis=-1)
    uniform = jax.random.uniform(rng, (rows, 1)) if rng.ndim == 0 else jax.vmap(jax.random.uniform)(rng)[:, None]
    uniform = uniform * mass_through[:, -1:]
    chosen = jnp.argmax(mass_through > uniform, axis=-1)[:, None]
    within = jnp.take_along_axis(probs, chosen[:, :, None], axis=1)[:, 0]  # [rows, block]
    mass_within = jnp.cumsum(within, axis=-1)
    # the uniform's place inside the block, kept below the block's total against rounding
    remaining = uniform - (jnp.take_along_axis(mass_through - block_mass, chosen, axis=-1))
    remaining = jnp.minimum(remaining, mass_within[:, -1:] * (1 - 1e-6))
    return chosen[:, 0] * block + jnp.argmax(mass_within > remaining, axis=-1)


def choose_tokens(logits: jax.Array, rng: jax.Array, spec: SamplingSpec) -> tuple[jax.Array, jax.Array]:
    """Draws one token per row from `logits [rows, vocab]` with `rng` (one key, or one a row); returns
    tokens and their log-probs `[rows]`."""
    if spec.vocab_size is not None and spec.vocab_size < logits.shape[-1]:
        logits = logits[:, : spec.vocab_size]  # the same draws and log-probs as -inf past it, on fewer entries
    if spec.temperature > 0:
        logits = logits / spec.temperature
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    if spec.temperature > 0:
        tokens = _inverse_cdf_draw(truncate_logits(logits, spec.top_k, spec.top_p), rng)
    else:
        tokens = jnp.argmax(logits, axis=-1)
    return tokens.astype(jnp.int32), jnp.take_along_axis(log_probs, tokens[:, None], axis=-1)[:, 0]


def _ends_with_stop(recent: jax.Array, stop_sequences: tuple[tuple[int, ...], ...]) -> jax.Array:
    """Whether the row's most recent tokens `[rows, window]` end with any stop sequence."""
    ended = jnp.zeros(recent.shape[0], bool)
    for stop in stop_sequences:
        ended |= jnp.all(recent[:, recent.shape[1] - len(stop) :] == jnp.asarray(stop), axis=-1)
    return ended


@flax.struct.dataclass
class _Rows:
    """What the decode loop keeps for each row; compaction gathers and scatters it as one tree.

    ids: the row's place in the output; its random draws are keyed by it, so that a row's sample does
    not depend on which other rows share its batch.
    keys / values: the layers' stacked cache `[layers, rows, kv_heads, slots, head_dim]`, or a tuple of
      one `[rows, kv_heads, slots, head_dim]` a layer when the decode step runs its layers unrolled.
    """

    ids: jax.Array
    tokens: jax.Array
    logprobs: jax.Array
    lengths: jax.Array
    keys: jax.Array
    values: jax.Array
    cache_segments: jax.Array
    token: jax.Array
    logprob: jax.Array
    positions: jax.Array
    recent: jax.Array
    ended: jax.Array



def generate(
    config: ModelConfig,
    params: Params,
    prompt_tokens: jax.Array,
    prompt_mask: jax.Array,
    rng: jax.Array,
    spec: SamplingSpec,
    num_samples: int = 1,
    compact: bool = True,
) -> SampleOutput:
    """Samples `num_samples` continuations of each left-padded prompt.

    prompt_tokens, prompt_mask: `[prompts, prompt_len]`, mask 1 on real tokens (each row has one).
    With `compact`, every decode phase after the first runs on the rows still going, gathered into the
    smallest of rows, rows / 2, rows / 4, rows / 8 that holds them (and that the mesh's data-parallel
    devices divide): the long tail of a batch does not pay for the rows that have ended. The samples
    are the same either way. On `config.mesh` each device decodes its own rows.
    """
    prompts, prompt_len = prompt_tokens.shape
    positions = jnp.maximum(jnp.cumsum(prompt_mask, axis=1) - 1, 0).astype(jnp.int32)
    phase_ends = decode_phases(spec.max_new_tokens)
    cache = init_cache(config, prompts, prompt_len + phase_ends[0])
    logits, cache = forward(config, params, prompt_tokens, positions, prompt_mask.astype(jnp.int32), cache, True)

    def per_sample(x: jax.Array, axis: int = 0) -> jax.Array:
        return jnp.repeat(x, num_samples, axis=axis)

    unrolled = decodes_unrolled(config)
    if unrolled:  # sliced once here, not at every step
        params = unstacked_layers(params)

    def per_layer(stacked: jax.Array) -> jax.Array | tuple[jax.Array, ...]:
        return tuple(per_sample(layer) for layer in stacked) if unrolled else per_sample(stacked, axis=1)

    rows = prompts * num_samples
    rng, first_rng = jax.random.split(rng)
    token, logprob = choose_tokens(per_sample(logits[:, -1]), first_rng, spec)
    window = max((len(s) for s in spec.stop_sequences), default=1)
    state = _laid_out(config, _Rows(
        ids=jnp.arange(rows),
        tokens=jnp.zeros((rows, spec.max_new_tokens), jnp.int32),
        logprobs=jnp.zeros((rows, spec.max_new_tokens), jnp.float32),
        lengths=jnp.zeros((rows,), jnp.int32),
        keys=per_layer(cache.keys),
        values=per_layer(cache.values),
        cache_segments=per_sample(cache.segment_ids),
        token=token,
        logprob=logprob,
        positions=per_sample(positions[:, -1] + 1),
        recent=jnp.full((rows, window), -1, jnp.int32),
        ended=jnp.zeros((rows,), bool),
    ))

    def decode_step(carry):
        step, r = carry
        recent = jnp.concatenate([r.recent[:, 1:], r.token[:, None]], axis=1)
        cache = KVCache(keys=r.keys, values=r.values, segment_ids=r.cache_segments, index=prompt_len + step)
        logits, cache = forward(config, params, r.token[:, None], (r.positions + step)[:, None],
                                jnp.ones((r.token.shape[0], 1), jnp.int32), cache)
        row_rngs = jax.vmap(jax.random.fold_in, (None, 0))(jax.random.fold_in(rng, step), r.ids)
        token, logprob = choose_tokens(logits[:, 0], row_rngs, spec)
        r = r.replace(
            tokens=r.tokens.at[:, step].set(jnp.where(r.ended, 0, r.token)),
            logprobs=r.logprobs.at[:, step].set(jnp.where(r.ended, 0.0, r.logprob)),
            lengths=r.lengths + ~r.ended,
            keys=cache.keys, values=cache.values, cache_segments=cache.segment_ids,
            token=token, logprob=logprob, recent=recent,
            ended=r.ended | _ends_with_stop(recent, spec.stop_sequences),
        )
        return step + 1, _laid_out(config, r)

    def decode(carry, phase_end):
        return jax.lax.while_loop(lambda c: (c[0] < phase_end) & ~jnp.all(c[1].ended), decode_step, carry)

    step = jnp.zeros((), jnp.int32)
    for phase, phase_end in enumerate(phase_ends):
        state = _laid_out(config, _grown(state, prompt_len + phase_end))
        if phase == 0 or not compact:
            step, state = decode((step, state), phase_end)
        else:
            step, state = _decode_compacted(decode, step, state, phase_end, config)
    return SampleOutput(state.tokens, state.logprobs, state.lengths)


def _laid_out(config: ModelConfig, state: _Rows) -> _Rows:
    """The rows split over the data-parallel axes of `config.mesh` (the cache's KV heads over `model`)."""
    if config.mesh is None:
        return state
    by_rows = lambda x: constrain(x, ("activation_rows",) + (None,) * (x.ndim - 1), config.mesh)  # noqa: E731
    by_heads = lambda x: constrain(x, CACHE if x.ndim == 5 else KEY_VALUE, config.mesh)  # noqa: E731
    return jax.tree.map(by_rows, state.replace(keys=None, values=None)).replace(
        keys=jax.tree.map(by_heads, state.keys), values=jax.tree.map(by_heads, state.values))


def _decode_compacted(decode, step: jax.Array, state: _Rows, phase_end: int,
                      config: ModelConfig) -> tuple[jax.Array, _Rows]:
    """`decode` on the rows still going, gathered into the smallest of rows / 2^j (j < 4) holding them
    that the mesh's data-parallel devices divide."""
    rows = state.ended.shape[0]
    sizes = [rows >> j for j in range(4) if rows % (data_parallelism(config.mesh) << j) == 0]
    going_first = jnp.argsort(state.ended, stable=True)
    smallest_fit = jnp.sum(jnp.asarray(sizes) >= jnp.sum(~state.ended)) - 1

    def on(size: int):
        def branch(carry):
            step, full = carry
            if size == rows:
                return decode((step, full), phase_end)
            at_picked = lambda x: (slice(None),) * _row_axis(x) + (going_first[:size],)  # noqa: E731
            part = jax.tree.map(lambda x: x[at_picked(x)], full)
            step, part = decode((step, _laid_out(config, part)), phase_end)
            return step, jax.tree.map(lambda x, y: x.at[at_picked(x)].set(y), full, part)

        return branch

    return jax.lax.switch(smallest_fit, [on(size) for size in sizes], (step, state))


def _row_axis(x: jax.Array) -> int:
    """Where a `_Rows` field holds its rows: axis 1 of a layer-stacked cache (5-d), else axis 0."""
    return 1 if x.ndim == 5 else 0


def decode_phases(max_new_tokens: int, first: int = 64) -> list[int]:
    """New-token counts at which the decode loop stops to grow the cache: 64, 128, 256, ... then
    `max_new_tokens`. A decode step reads every slot of the cache (on CPU that read, not the
    arithmetic, sets its cost), so a short response should not pay for the longest one's slots;
    a batch that has ended skips the later phases."""
    ends = []
    while first < max_new_tokens:
        ends.append(first)
        first *= 2
    return ends + [max_new_tokens]


def _grown(state: _Rows, slots: int) -> _Rows:
    """The rows' cache with empty slots appended up to `slots`."""
    extra = slots - state.cache_segments.shape[1]
    if extra == 0:
        return state
    pad = lambda x: jnp.pad(x, ((0, 0),) * (x.ndim - 2) + ((0, extra), (0, 0)))  # noqa: E731
    return state.replace(keys=jax.tree.map(pad, state.keys), values=jax.tree.map(pad, state.values),
                         cache_segments=jnp.pad(state.cache_segments, ((0, 0), (0, extra))))


@dataclasses.dataclass
class Sample:
    """One sampled continuation, back on the host."""

    prompt_index: int
    sample_index: int
    token_ids: list[int]
    logprob: float  # sum over its tokens
    token_logprobs: list[float]


def _next_power_of_two(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def prompt_bucket(longest: int) -> int:
    """The prompt length that prompts of at most `longest` tokens are padded to."""
    return max(MIN_PROMPT_BUCKET, _next_power_of_two(longest))


class _Programs:
    """The jitted `generate` of one model config, and how many programs it has traced; on a mesh with
    `gather_weights`, also the program that gathers the weights for it (see `Sampler`)."""

    def __init__(self, config: ModelConfig, gather_weights: bool):
        self.config = config
        self.traced = 0
        self.gather = None
        layout = {}
        if config.mesh is not None:  # each device holds and decodes its own rows
            param_layout = param_shardings(config, config.mesh)
            if gather_weights:  # in the compute dtype: every use casts to it, so the samples do not change
                param_layout = split_over_model_only(param_layout)
                cast = lambda params: jax.tree.map(lambda x: x.astype(config.dtype), params)  # noqa: E731
                self.gather = jax.jit(cast, out_shardings=param_layout)
            rows, lengths = rows_sharding(config.mesh), rows_sharding(config.mesh, ndim=1)
            layout = dict(in_shardings=(param_layout, rows, rows, replicated(config.mesh)),
                          out_shardings=SampleOutput(rows, rows, lengths))
        self.generate = jax.jit(self._traced_generate, static_argnums=(4, 5), **layout)

    def _traced_generate(self, params, prompt_tokens, prompt_mask, rng_data, spec, num_samples):
        self.traced += 1  # runs only while tracing, i.e. once per compiled program
        logging.info("sampler: compiling program %d for prompts %s, %d samples each, %s",
                     self.traced, prompt_tokens.shape, num_samples, spec)
        rng = jax.random.wrap_key_data(rng_data)  # passed as data: a host value every process holds
        return generate(self.config, params, prompt_tokens, prompt_mask, rng, spec, num_samples)


@functools.lru_cache(maxsize=None)
def _programs_for(config: ModelConfig, gather_weights: bool) -> _Programs:
    return _Programs(config, gather_weights)


class Sampler:
    """Samples a model over many prompts with few compiled programs.

    Prompts are sorted by length and cut into batches of `batch_size`. Every batch of a call is
    padded to one prompt length, the power of two (at least 16) that holds the call's longest prompt,
    and at least `prompt_length`: a run of many calls (RL samples each step) sets it from its whole
    input so that every call runs one program. A short last batch is padded to a power of two of
    rows, so a call compiles at most 1 + log2(batch_size) programs per spec, and mostly one.
    `compilations` counts the programs this sampler traced; samplers of one model config share their
    programs (the main job evaluates five policies of one architecture and compiles each program once).

    On a mesh with `gather_weights`, each call first gathers the weights, in the compute dtype, whole
    onto every device but for their `model` split (`mesh.sampling_weights`, counted by the memory
    plan): FSDP would otherwise all-gather every layer at every decode step, between hosts over the
    network. Without it, chips too small for the copy decode from the FSDP shards.
    """

    def __init__(self, config: ModelConfig, params: Params, batch_size: int = 64, prompt_length: int = 0,
                 gather_weights: bool = True):
        self.params = params
        self.batch_size = batch_size
        self.prompt_length = prompt_length
        self.compilations = 0
        self._programs = _programs_for(config, gather_weights)
        # a batch's rows split evenly over the mesh's data-parallel devices
        self._rows_multiple = data_parallelism(config.mesh)

    def sample(
        self,
        prompts: Sequence[Sequence[int]],
        spec: SamplingSpec,
        num_samples: int = 1,
        seed: int = 0,
        progress: bool = False,
    ) -> dict[int, list[Sample]]:
        """`num_samples` samples of each prompt (token ids) whose rows this process's devices decoded
        (every prompt on one process), by prompt index: result[prompt][sample]. Every process passes
        the same prompts; `distributed.gather_by_index` collects what each made of its own."""
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        results: dict[int, list[Sample]] = {}
        bar = tqdm(total=len(prompts) * num_samples, unit="sample", disable=not progress or jax.process_index() != 0,
                   desc="sampling")
        new_tokens, start = 0, time.perf_counter()
        key = jax.random.key(seed)
        padded_to = prompt_bucket(max([self.prompt_length, *map(len, prompts)]))
        params = self.decode_params()
        pending = [
            (batch, self._dispatch(params, [prompts[i] for i in batch], padded_to, spec, num_samples,
                                   jax.random.fold_in(key, n)))
            for n, batch in enumerate(batches)
        ]  # every batch is queued before the first is fetched: the device never waits for the host
        for batch, output in pending:
            rows, (tokens, logprobs, lengths) = rows_here((output.tokens, output.logprobs, output.lengths))
            for at, row in enumerate(rows):
                prompt, sample_index = divmod(int(row), num_samples)
                if prompt >= len(batch):  # a filler row
                    continue
                length = int(lengths[at])
                results.setdefault(batch[prompt], []).append(
                    Sample(batch[prompt], sample_index, tokens[at, :length].tolist(),
                           float(logprobs[at, :length].sum()), logprobs[at, :length].tolist()))
                new_tokens += length
            bar.update(len(batch) * num_samples)
            bar.set_postfix(tokens_per_s=f"{new_tokens / (time.perf_counter() - start):.0f}")
        bar.close()
        return dict(sorted(results.items()))

    def decode_params(self) -> Params:
        """The weights as the decode program takes them (gathered once a call, see the class)."""
        gather = self._programs.gather
        return self.params if gather is None else gather(self.params)

    def _dispatch(self, params: Params, prompts: list[Sequence[int]], length: int, spec: SamplingSpec,
                  num_samples: int, rng) -> SampleOutput:
        """Pads one batch to `length` tokens and its row bucket, and launches it (asynchronously)."""
        if any(len(p) == 0 for p in prompts):
            raise ValueError("empty prompt: every prompt needs at least one token")
        rows = min(_next_power_of_two(len(prompts)), _next_power_of_two(self.batch_size))
        rows = -(-rows // self._rows_multiple) * self._rows_multiple
        tokens = np.zeros((rows, length), np.int32)
        mask = np.zeros((rows, length), np.int32)
        mask[len(prompts) :, -1] = 1  # filler rows hold one token so that every row is well-defined
        for row, prompt in enumerate(prompts):
            tokens[row, length - len(prompt) :] = prompt
            mask[row, length - len(prompt) :] = 1
        rng = jax.random.key_data(rng)
        mesh = self._programs.config.mesh
        if mesh is not None:  # every process lays out its devices' rows
            tokens, mask = to_global((tokens, mask), rows_sharding(mesh))
            rng = to_global(rng, replicated(mesh))
        traced_before = self._programs.traced
        output = self._programs.generate(params, tokens, mask, rng, spec, num_samples)
        self.compilations += self._programs.traced - traced_before
        return output


def stop_sequences_for(tokenizer: Any, stop_strings: Sequence[str]) -> tuple[tuple[int, ...], ...]:
    """Token sequences that end a row: EOS, and each stop string as the tokenizer writes it (with and
    without a leading space, the two ways it appears mid-text for BPE tokenizers)."""
    sequences = {(tokenizer.eos_token_id,)} if tokenizer.eos_token_id is not None else set()
    for text in stop_strings:
        for variant in (text, " " + text):
            ids = tuple(tokenizer.encode(variant, add_special_tokens=False))
            if ids:
                sequences.add(ids)
    return tuple(sorted(sequences))

