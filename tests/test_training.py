"""Losses and the LM train step against NumPy references and their invariances."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sv_jax.models import ModelConfig, forward, init_params, output_logits
from sv_jax.training.lm import LMStep, init_train_state
from sv_jax.training.losses import masked_cross_entropy, token_kl, token_log_probs
from sv_jax.training.optimizer import make_optimizer
from sv_jax.training.ppo import policy_outputs

CONFIG = ModelConfig(family="llama", vocab_size=32, hidden_size=32, intermediate_size=48, num_layers=2,
                     num_heads=4, num_kv_heads=2, head_dim=8)


def test_masked_cross_entropy_equals_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 5)).astype(np.float32)
    targets = np.array([[1, 4, 0], [2, 2, 3]])
    mask = np.array([[1, 0, 1], [0, 1, 1]])
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -sum(log_softmax[b, t, targets[b, t]] for b in range(2) for t in range(3) if mask[b, t])
    total, count = masked_cross_entropy(token_log_probs(logits, targets), mask)
    assert float(total) == pytest.approx(expected, rel=1e-6) and float(count) == 4


def test_kl_is_zero_for_equal_policies_and_matches_numpy():
    rng = np.random.default_rng(1)
    p, q = rng.normal(size=(2, 1, 3, 6)).astype(np.float32)
    mask = np.array([[1, 1, 0]])
    assert float((token_kl(p, p) * mask).sum()) == pytest.approx(0.0, abs=1e-6)
    lp = p - np.log(np.exp(p).sum(-1, keepdims=True))
    lq = q - np.log(np.exp(q).sum(-1, keepdims=True))
    expected = (np.exp(lp) * (lp - lq)).sum(-1)[0, :2].sum()
    assert float((token_kl(p, q) * mask).sum()) == pytest.approx(expected, rel=1e-5)


def padded_batch(rows, loss_masks, micro_batches=1):
    """Right-padded next-token batch `[micro_batches, rows / micro_batches, time]`."""
    time = max(map(len, rows)) - 1
    batch = {k: np.zeros((len(rows), time), np.int32)
             for k in ("inputs", "targets", "positions", "segment_ids", "loss_mask", "kl_mask")}
    for i, (row, mask) in enumerate(zip(rows, loss_masks)):
        n = len(row) - 1
        batch["inputs"][i, :n], batch["targets"][i, :n] = row[:-1], row[1:]
        batch["positions"][i, :n], batch["segment_ids"][i, :n] = np.arange(n), 1
        batch["loss_mask"][i, :n] = batch["kl_mask"][i, :n] = mask[1:]
    return {k: v.reshape(micro_batches, -1, time) for k, v in batch.items()}


ROWS = [[1, 5, 7, 9, 11, 3, 2], [4, 8, 15, 16], [6, 6, 2, 30, 1]]
MASKS = [[0, 0, 1, 1, 0, 1, 1], [0, 1, 1, 1], [0, 0, 0, 1, 1]]


def step_once(batch, kl_coef=0.0, reference=False):
    optimizer, _ = make_optimizer(1e-2, total_steps=10)
    params = init_params(CONFIG, jax.random.key(0))
    step = LMStep(CONFIG, optimizer, kl_coef)
    return jax.jit(step)(init_train_state(params, optimizer), batch, params if reference else None)


def test_loss_is_mean_over_learned_tokens():
    params = init_params(CONFIG, jax.random.key(0))
    batch = padded_batch(ROWS, MASKS)
    step = LMStep(CONFIG, make_optimizer(1e-2, 10)[0])
    ce_sum, ce_count, *_ = step.losses(params, jax.tree.map(lambda x: x[0], batch), None)
    _, metrics = step_once(batch)
    assert float(ce_count) == sum(sum(m[1:]) for m in MASKS)
    assert float(metrics["loss"]) == pytest.approx(float(ce_sum / ce_count), rel=1e-6)


def test_masked_target_changes_neither_loss_nor_update():
    batch = padded_batch(ROWS, MASKS)
    changed = jax.tree.map(np.copy, batch)
    assert changed["loss_mask"][0, 0, 0] == 0
    changed["targets"][0, 0, 0] = 31  # a masked target
    (state_a, metrics_a), (state_b, metrics_b) = step_once(batch), step_once(changed)
    assert float(metrics_a["loss"]) == float(metrics_b["loss"])
    jax.tree.map(np.testing.assert_array_equal, state_a.params, state_b.params)


def test_accumulation_equals_one_big_batch():
    rows, masks = ROWS + [[2, 3, 4]], MASKS + [[0, 1, 1]]
    (state_one, metrics_one), (state_two, metrics_two) = (
        step_once(padded_batch(rows, masks, 1)), step_once(padded_batch(rows, masks, 2)))
    assert float(metrics_one["loss"]) == pytest.approx(float(metrics_two["loss"]), rel=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), state_one.params, state_two.params)


def test_packing_gives_the_same_loss_as_padding():
    padded = padded_batch(ROWS, MASKS)
    time = sum(len(r) - 1 for r in ROWS)
    packed = {k: np.zeros((1, 1, time), np.int32) for k in padded}
    offset = 0
    for i, row in enumerate(ROWS):
        n = len(row) - 1
        for key in padded:
            packed[key][0, 0, offset : offset + n] = padded[key][0, i, :n]
        packed["segment_ids"][0, 0, offset : offset + n] = i + 1
        offset += n
    (state_padded, padded_metrics), (state_packed, packed_metrics) = step_once(padded), step_once(packed)
    assert float(packed_metrics["loss"]) == pytest.approx(float(padded_metrics["loss"]), rel=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), state_padded.params, state_packed.params)


def test_kl_to_itself_is_zero_and_has_no_gradient():
    batch = padded_batch(ROWS, MASKS)
    _, metrics = step_once(batch, kl_coef=0.5, reference=True)
    assert float(metrics["kl"]) == pytest.approx(0.0, abs=1e-6)
    params = init_params(CONFIG, jax.random.key(0))
    step = LMStep(CONFIG, make_optimizer(1e-2, 10)[0], kl_coef=0.5)
    micro = jax.tree.map(lambda x: x[0], batch)
    kl_gradient = jax.grad(lambda p: step.losses(p, micro, params)[2])(params)
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(kl_gradient)) < 1e-6


def test_rematerialization_changes_nothing_but_memory():
    batch = padded_batch(ROWS, MASKS)
    optimizer, _ = make_optimizer(1e-2, total_steps=10)
    params = init_params(CONFIG, jax.random.key(0))
    plain, plain_metrics = jax.jit(LMStep(CONFIG, optimizer))(init_train_state(params, optimizer), batch)
    for policy in ("full", "dots"):
        step = jax.jit(LMStep(CONFIG.replace(remat=policy), optimizer))
        remat, remat_metrics = step(init_train_state(params, optimizer), batch)
        assert float(remat_metrics["loss"]) == pytest.approx(float(plain_metrics["loss"]), rel=1e-6)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), plain.params, remat.params)


@pytest.mark.parametrize("tied", [False, True])
def test_output_logits_of_the_hidden_states_are_the_decoders_logits(tied):
    config = CONFIG.replace(tie_word_embeddings=tied)
    params = init_params(config, jax.random.key(3))
    tokens = jnp.asarray(np.random.default_rng(3).integers(1, 32, (3, 11)))
    hidden, _ = forward(config, params, tokens, hidden_only=True)
    np.testing.assert_array_equal(output_logits(config, params, hidden), forward(config, params, tokens)[0])


def test_logits_in_time_chunks_give_the_whole_rows_losses_and_gradients():
    """Rows of 12 targets: whole (chunk 0, 16: longer than the rows, 5: does not divide) or in
    chunks of 4 and 6, with the KL term, and PPO's scoring pass with entropies and values."""
    rng = np.random.default_rng(4)
    rows = [rng.integers(1, 32, 13).tolist() for _ in range(4)]
    masks = [rng.integers(0, 2, 13).tolist() for _ in range(4)]
    micro = jax.tree.map(lambda x: x[0], padded_batch(rows, masks))
    params = init_params(CONFIG, jax.random.key(5))
    reference = jax.tree.map(lambda x: x * 0.8, params)
    optimizer, _ = make_optimizer(1e-2, 10)

    def lm(chunk):
        step = LMStep(CONFIG.replace(logits_chunk=chunk), optimizer, kl_coef=0.5)
        return jax.value_and_grad(lambda p: sum(step.losses(p, micro, reference)[::2]))(params)

    def scoring(chunk):
        value = {"kernel": jnp.linspace(-1, 1, CONFIG.hidden_size), "bias": jnp.ones(())}
        return policy_outputs(CONFIG.replace(logits_chunk=chunk), {"policy": params, "value": value}, micro, 0.7, True)

    whole_loss, whole_grads = lm(0)
    for chunk in (16, 5, 4, 6):
        loss, grads = lm(chunk)
        assert float(loss) == pytest.approx(float(whole_loss), rel=1e-6)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), grads, whole_grads)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), scoring(chunk), scoring(0))
