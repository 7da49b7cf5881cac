"""Per-token statistics streamed over vocabulary tiles equal those of the whole logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sv_jax.models import ModelConfig, forward, init_params
from sv_jax.training.losses import token_entropy, token_kl, token_log_probs
from sv_jax.training.token_stats import token_statistics, vocab_tiles

CONFIG = ModelConfig(family="qwen2", vocab_size=32, hidden_size=16, intermediate_size=24, num_layers=1,
                     num_heads=2, num_kv_heads=1, head_dim=8, attention_bias=True)


@pytest.mark.parametrize("vocab, chunk, expected", [(152064, 16384, (10, 15207)), (32, 8, (4, 8)),
                                                    (33, 8, (5, 7)), (32, 0, (1, 32)), (32, 64, (1, 32))])
def test_vocab_tiles_cover_the_vocabulary_at_most_chunk_at_a_time(vocab, chunk, expected):
    tiles, tile = vocab_tiles(vocab, chunk)
    assert (tiles, tile) == expected
    assert tiles * tile >= vocab > (tiles - 1) * tile


@pytest.mark.parametrize("tied", [False, True])
def test_streamed_statistics_and_their_gradients_equal_the_whole_logits(tied):
    """Tiles that divide the vocabulary (8), that do not (7: the last runs past it), with time
    chunks, at a sampling temperature: log-probs, entropies and KL to a reference, and gradients
    of a loss made of all three, against the same made from whole logits (1e-6; for gradients, of
    the largest entry)."""
    config = CONFIG.replace(tie_word_embeddings=tied)
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, 32, (3, 12)))
    targets = jnp.asarray(rng.integers(0, 32, (3, 12)))
    params = init_params(config, jax.random.key(1))
    reference = jax.tree.map(lambda x: x * 0.7 + 0.01, params)
    reference_hidden = forward(config, reference, tokens, hidden_only=True)[0]

    def expected(params):
        logits = forward(config, params, tokens)[0] / 0.7
        reference_logits = forward(config, reference, tokens)[0] / 0.7
        return {"log_probs": token_log_probs(logits, targets), "entropy": token_entropy(logits),
                "kl": token_kl(logits, reference_logits)}

    def streamed(params, vocab_chunk, logits_chunk):
        chunked = config.replace(vocab_chunk=vocab_chunk, logits_chunk=logits_chunk)
        hidden = forward(chunked, params, tokens, hidden_only=True)[0]
        return token_statistics(chunked, params, hidden, targets, 0.7, entropy=True,
                                reference=(reference, reference_hidden))

    def loss(stats):
        return sum(jnp.sum(jnp.sin(value)) for value in stats.values())

    want = expected(params)
    want_grads = jax.grad(lambda p: loss(expected(p)))(params)
    for vocab_chunk, logits_chunk in ((8, 0), (7, 0), (7, 4), (5, 6)):
        got = streamed(params, vocab_chunk, logits_chunk)
        assert set(got) == set(want)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), got, want)
        grads = jax.grad(lambda p: loss(streamed(p, vocab_chunk, logits_chunk)))(params)  # noqa: B023
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6 * max(1.0, np.abs(b).max())),
                     grads, want_grads)


def test_only_the_asked_statistics_come_back():
    params = init_params(CONFIG, jax.random.key(2))
    tokens = jnp.ones((2, 5), jnp.int32)
    hidden = forward(CONFIG, params, tokens, hidden_only=True)[0]
    for chunk in (0, 8):
        stats = token_statistics(CONFIG.replace(vocab_chunk=chunk), params, hidden, tokens)
        assert set(stats) == {"log_probs"} and stats["log_probs"].shape == (2, 5)
