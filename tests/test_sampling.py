"""The sampler against transformers' generate, a teacher-forced forward, and the softmax it samples."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from sv_jax.models import ModelConfig, forward, init_params, load_hf, param_shapes
from sv_jax.sampling import Sampler, SamplingSpec, choose_tokens, decode_phases, generate, stop_sequences_for

PROMPTS = [[5, 17, 3, 9, 44, 2, 8, 11, 30, 7], [12, 6, 40], [3, 3, 19, 21, 50, 1], [9]]
NEW_TOKENS = 12


def hf_greedy(folder, prompt, new_tokens):
    model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt]), max_new_tokens=new_tokens, do_sample=False,
            eos_token_id=None, pad_token_id=0, attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        )
    return out[0, len(prompt):].tolist()


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_greedy_equals_transformers_generate(family, qwen2_folder, llama_folder):
    folder = qwen2_folder if family == "qwen2" else llama_folder
    model = load_hf(folder, with_tokenizer=False)
    samples = Sampler(model.config, model.params, batch_size=4).sample(
        PROMPTS, SamplingSpec(max_new_tokens=NEW_TOKENS, temperature=0.0)
    )
    for prompt, (sample,) in zip(PROMPTS, samples.values()):
        assert sample.token_ids == hf_greedy(folder, prompt, NEW_TOKENS)


def test_greedy_equals_transformers_generate_across_cache_growth(qwen2_folder):
    """Past 64 and 128 new tokens the decode loop grows its cache (`decode_phases`): nothing changes."""
    assert decode_phases(150) == [64, 128, 150]
    model = load_hf(qwen2_folder, with_tokenizer=False)
    prompts = PROMPTS[:2]
    samples = Sampler(model.config, model.params, batch_size=2).sample(prompts, SamplingSpec(max_new_tokens=150, temperature=0.0))
    for prompt, (sample,) in zip(prompts, samples.values()):
        assert sample.token_ids == hf_greedy(qwen2_folder, prompt, 150)


@pytest.mark.parametrize("decode_layers", ["scan", "unrolled"])
def test_compacting_the_rows_still_going_changes_no_sample(decode_layers, qwen2_folder):
    """After 64 new tokens most rows of this batch have stopped; the later phases run on the rest,
    gathered into a smaller batch. Every row's tokens, log-probs and length are those of the full batch
    decoded under the layer scan, whether the compacted decode scans its layers or unrolls them."""
    model = load_hf(qwen2_folder, with_tokenizer=False)
    scanned = model.config.replace(decode_layers="scan")
    prompts, mask = np.zeros((8, 16), np.int32), np.zeros((8, 16), np.int32)
    for row, prompt in enumerate(PROMPTS * 2):
        prompts[row, 16 - len(prompt) :], mask[row, 16 - len(prompt) :] = prompt, 1
    stops = tuple((token,) for token in range(1, 384, 40))  # ~2.5 % a token: lengths spread over the phases
    spec = SamplingSpec(max_new_tokens=150, temperature=1.0, stop_sequences=stops)
    run = jax.jit(generate, static_argnums=(0, 5, 6, 7))
    full, compacted = (run(config, model.params, prompts, mask, jax.random.key(2), spec, 4, compact)
                       for config, compact in ((scanned, False), (scanned.replace(decode_layers=decode_layers), True)))
    lengths = np.asarray(full.lengths)
    assert 0 < np.sum(lengths > 64) <= len(lengths) // 2  # a smaller batch serves the phases after 64
    np.testing.assert_array_equal(np.asarray(compacted.lengths), lengths)
    np.testing.assert_array_equal(np.asarray(compacted.tokens), np.asarray(full.tokens))
    np.testing.assert_allclose(np.asarray(compacted.logprobs), np.asarray(full.logprobs), atol=1e-5)


def teacher_forced_logprobs(config, params, sequences, temperature):
    """log-probs of each sequence's completion under one forward over the right-padded batch."""
    length = max(len(p) + len(c) for p, c in sequences)
    tokens = np.zeros((len(sequences), length), np.int32)
    segment_ids = np.zeros_like(tokens)
    for row, (prompt, completion) in enumerate(sequences):
        tokens[row, : len(prompt) + len(completion)] = prompt + completion
        segment_ids[row, : len(prompt) + len(completion)] = 1
    logits, _ = forward(config, params, tokens, segment_ids=segment_ids)
    log_probs = np.asarray(jax.nn.log_softmax(np.asarray(logits) / temperature, axis=-1))
    return [
        log_probs[row, np.arange(len(prompt) - 1, len(prompt) + len(completion) - 1), completion]
        for row, (prompt, completion) in enumerate(sequences)
    ]


def test_logprobs_equal_teacher_forced_forward(qwen2_folder):
    model = load_hf(qwen2_folder, with_tokenizer=False)
    spec = SamplingSpec(max_new_tokens=NEW_TOKENS, temperature=0.8, top_k=20, top_p=0.9)
    samples = Sampler(model.config, model.params, batch_size=2).sample(PROMPTS, spec, num_samples=3, seed=1)
    assert list(samples) == list(range(len(PROMPTS)))  # every prompt, on one process
    assert all([s.sample_index for s in row] == [0, 1, 2] for row in samples.values())
    flat = [(prompt, sample) for prompt, row in zip(PROMPTS, samples.values()) for sample in row]
    expected = teacher_forced_logprobs(model.config, model.params, [(p, s.token_ids) for p, s in flat], 0.8)
    for (_, sample), reference in zip(flat, expected):
        np.testing.assert_allclose(sample.token_logprobs, reference, atol=1e-4)
        assert sample.logprob == pytest.approx(float(np.sum(reference)), abs=1e-3)


def test_fixed_seed_reproduces_and_another_seed_differs(qwen2_folder):
    model = load_hf(qwen2_folder, with_tokenizer=False)
    sampler = Sampler(model.config, model.params, batch_size=4)
    spec = SamplingSpec(max_new_tokens=NEW_TOKENS, temperature=1.0)
    ids = lambda seed: [[s.token_ids for s in row] for row in sampler.sample(PROMPTS, spec, 2, seed=seed).values()]
    assert ids(7) == ids(7)
    assert ids(7) != ids(8)


def truncated_softmax(logits, temperature, top_k, top_p):
    """NumPy reference: temperature, then the top-k tokens, then the smallest nucleus reaching top_p."""
    scaled = logits / temperature
    order = np.argsort(-scaled)[:top_k]
    probs = np.exp(scaled[order] - scaled[order].max())
    probs /= probs.sum()
    mass_before = np.cumsum(probs) - probs
    kept = order[mass_before < top_p]
    expected = np.zeros_like(logits)
    expected[kept] = np.exp(scaled[kept] - scaled[kept].max())
    return expected / expected.sum()


def test_sampled_frequencies_match_truncated_softmax():
    """First tokens of 6000 samples of one prompt on a toy model, against the exact distribution.

    With 6000 draws a frequency's standard error is at most 0.0065; the tolerance 0.03 is over four of
    them, and a token outside the top-k / top-p set must never appear.
    """
    config = ModelConfig(family="llama", vocab_size=24, hidden_size=32, intermediate_size=48, num_layers=2,
                         num_heads=4, num_kv_heads=2, head_dim=8)
    params = init_params(config, jax.random.key(0))
    params["embed"]["embedding"] *= 20  # spread the logits so that truncation matters
    prompt = [3, 1, 4]
    logits, _ = forward(config, params, np.array([prompt], np.int32))
    for top_k, top_p in [(6, 1.0), (0, 0.7), (8, 0.8)]:
        spec = SamplingSpec(max_new_tokens=1, temperature=0.7, top_k=top_k or config.vocab_size, top_p=top_p)
        samples = Sampler(config, params, batch_size=1).sample([prompt], spec, num_samples=6000, seed=3)[0]
        counts = np.bincount([s.token_ids[0] for s in samples], minlength=config.vocab_size)
        expected = truncated_softmax(np.asarray(logits[0, -1]), 0.7, top_k or config.vocab_size, top_p)
        assert np.all(counts[expected == 0] == 0)
        assert np.max(np.abs(counts / counts.sum() - expected)) < 0.03
        assert 2 <= np.count_nonzero(expected) < config.vocab_size  # the case does truncate


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_tokens_past_the_tokenizer_vocabulary_are_never_drawn(temperature):
    """And the log-probs are those of the distribution without them."""
    logits = np.random.default_rng(0).normal(size=(2000, 10)).astype(np.float32)
    logits[:, 8:] = 5.0  # the padded ids are the likeliest
    spec = SamplingSpec(max_new_tokens=1, temperature=temperature, vocab_size=8)
    tokens, logprobs = choose_tokens(logits, jax.random.key(0), spec)
    tokens = np.asarray(tokens)
    assert tokens.max() < 8
    within = jax.nn.log_softmax(logits[:, :8] / (temperature or 1.0), axis=-1)
    np.testing.assert_allclose(logprobs, np.take_along_axis(np.asarray(within), tokens[:, None], 1)[:, 0], atol=1e-6)


def test_a_call_pads_every_batch_to_one_prompt_length(qwen2_folder):
    model = load_hf(qwen2_folder, with_tokenizer=False)
    sampler = Sampler(model.config, model.params, batch_size=8)
    spec = SamplingSpec(max_new_tokens=4, temperature=0.0)
    prompts = [[(7 * i + j) % 300 + 1 for j in range(i % 40 + 1)] for i in range(60)]
    sampler.sample(prompts, spec)
    # prompts of 1 to 40 tokens padded to 64 in every batch; 8 rows, and 4 for the last of 60 = 7 * 8 + 4
    # (fewer where an earlier test in this process traced one of them)
    assert sampler.compilations <= 2
    first = sampler.compilations
    sampler.sample(prompts[::-1], spec)
    assert sampler.compilations == first
    # a run's later calls with shorter prompts keep its prompt length (RL's steps): no new program
    run = Sampler(model.config, model.params, batch_size=8, prompt_length=40)
    run.sample(prompts[:16], spec)
    assert run.compilations == 0


def test_samplers_of_one_config_share_programs_not_parameters(qwen2_folder):
    """A second policy of the same architecture (the main job evaluates five) reuses the compiled
    programs, and samples with its own parameters."""
    model = load_hf(qwen2_folder, with_tokenizer=False)
    spec = SamplingSpec(max_new_tokens=6, temperature=0.0)
    first = Sampler(model.config, model.params, batch_size=4)
    first_out = first.sample(PROMPTS, spec)
    other_params = jax.tree.map(lambda x: x * 1.5, model.params)
    second = Sampler(model.config, other_params, batch_size=4)
    second_out = second.sample(PROMPTS, spec)
    assert first.compilations >= 1 and second.compilations == 0
    assert [s[0].token_ids for s in second_out.values()] != [s[0].token_ids for s in first_out.values()]
    fresh_logits, _ = forward(model.config, other_params, np.array([PROMPTS[0]], np.int32))
    assert second_out[0][0].token_ids[0] == int(np.argmax(fresh_logits[0, -1]))


def test_rows_stop_at_a_stop_sequence_and_eos(qwen2_folder):
    model = load_hf(qwen2_folder)
    sampler = Sampler(model.config, model.params, batch_size=4)
    (free,) = sampler.sample([PROMPTS[0]], SamplingSpec(max_new_tokens=NEW_TOKENS, temperature=0.0))[0]
    stop = tuple(free.token_ids[3:5])
    eos = free.token_ids[2]
    stopped = sampler.sample([PROMPTS[0]], SamplingSpec(max_new_tokens=NEW_TOKENS, temperature=0.0,
                                                        stop_sequences=(stop,)))[0][0]
    expected_end = next(i + 2 for i in range(NEW_TOKENS - 1) if tuple(free.token_ids[i : i + 2]) == stop)
    assert stopped.token_ids == free.token_ids[:expected_end]
    at_eos = sampler.sample([PROMPTS[0]], SamplingSpec(max_new_tokens=NEW_TOKENS, temperature=0.0,
                                                       stop_sequences=((eos,),)))[0][0]
    assert at_eos.token_ids == free.token_ids[: free.token_ids.index(eos) + 1]


def test_stop_strings_become_token_sequences(qwen2_folder):
    tokenizer = load_hf(qwen2_folder).tokenizer
    sequences = stop_sequences_for(tokenizer, ["the answer is correct ."])
    assert (tokenizer.eos_token_id,) in sequences
    assert tuple(tokenizer.encode(" the answer is correct .", add_special_tokens=False)) in sequences


def test_draws_over_a_large_vocabulary_follow_the_softmax():
    """The two-level draw across many 256-token blocks: 40000 draws from one fixed distribution."""
    rng = np.random.default_rng(0)
    logits = np.full(1000, -np.inf, np.float32)
    support = rng.choice(1000, size=12, replace=False)  # spread over several blocks
    logits[support] = rng.normal(size=12) * 2
    tokens, _ = choose_tokens(np.tile(logits, (40000, 1)), jax.random.key(5), SamplingSpec(max_new_tokens=1))
    counts = np.bincount(np.asarray(tokens), minlength=1000)
    expected = np.exp(logits - logits[support].max())
    expected /= expected.sum()
    assert set(np.flatnonzero(counts)) <= set(support)
    assert np.max(np.abs(counts / counts.sum() - expected)) < 0.015  # standard error at most 0.0025


def test_the_scanned_sampler_program_does_not_grow_with_the_layers():
    """Under `decode_layers="scan"` (TPU and GPU by default) the layers run under one scan: the lowered
    sampler holds one layer's body at any depth (with a Python loop over layers, 2 layers lowered to
    ~1.0 MB of StableHLO and each more added ~240 kB)."""

    def program_bytes(num_layers: int) -> int:
        config = ModelConfig(family="qwen2", vocab_size=128, hidden_size=32, intermediate_size=64,
                             num_layers=num_layers, num_heads=8, num_kv_heads=4, head_dim=8, attention_bias=True,
                             decode_layers="scan")
        prompts = jax.ShapeDtypeStruct((8, 16), jnp.int32)
        run = jax.jit(generate, static_argnums=(0, 5, 6))
        spec = SamplingSpec(max_new_tokens=512, temperature=1.0)
        return len(run.lower(config, param_shapes(config), prompts, prompts, jax.random.key(0), spec, 1).as_text())

    two, eight = program_bytes(2), program_bytes(8)
    assert abs(eight - two) <= 0.02 * two
