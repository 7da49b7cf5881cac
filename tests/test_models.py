"""The decoder against transformers on tiny random checkpoints: logits, KV cache, save / load."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file, save_file

import sv_jax.io
import sv_jax.models.hf
from sv_jax.errors import UserError
from sv_jax.models import ModelConfig, forward, init_cache, init_params, load_hf, save_hf
from sv_jax.models.decoder import CAUSAL_BLOCK
from sv_jax.models.hf import tensor_mappings
from tests.hf_fixtures import hf_logits

ROWS = [
    [5, 17, 3, 9, 44, 2, 8, 11, 30, 7],
    [12, 6, 40],
    [3, 3, 19, 21, 50, 1],
]


def relative_error(ours, reference) -> float:
    return float(np.max(np.abs(np.asarray(ours, np.float32) - reference)) / np.max(np.abs(reference)))


def left_padded(rows, length=None):
    """tokens, mask (1 = real) and positions (0.. along real tokens) for left-padded rows."""
    length = length or max(map(len, rows))
    tokens = np.zeros((len(rows), length), np.int32)
    mask = np.zeros_like(tokens)
    for i, row in enumerate(rows):
        tokens[i, length - len(row) :] = row
        mask[i, length - len(row) :] = 1
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int32)
    return tokens, mask, positions


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_logits_match_transformers_on_padded_batch(family, qwen2_folder, llama_folder):
    folder = qwen2_folder if family == "qwen2" else llama_folder
    tokens, mask, positions = left_padded(ROWS)
    reference = hf_logits(folder, tokens, mask, positions)
    model = load_hf(folder)
    assert model.config.family == family
    assert model.config.vocab_size > len(model.tokenizer)
    logits, _ = jax.jit(forward, static_argnums=0)(model.config, model.params, tokens, positions, mask)
    real = mask.astype(bool)
    assert relative_error(np.asarray(logits)[real], reference[real]) < 1e-4


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_logits_match_transformers_past_one_causal_block(family, qwen2_folder, llama_folder):
    """Rows longer than CAUSAL_BLOCK: query blocks read only the keys up to their own (left padding
    included), and still give every logit transformers gives."""
    folder = qwen2_folder if family == "qwen2" else llama_folder
    rng = np.random.default_rng(0)
    rows = [list(rng.integers(1, 128, length)) for length in (250, 140, 30)]
    assert max(map(len, rows)) > CAUSAL_BLOCK > min(map(len, rows))
    tokens, mask, positions = left_padded(rows)
    reference = hf_logits(folder, tokens, mask, positions)
    model = load_hf(folder, with_tokenizer=False)
    logits, _ = forward(model.config, model.params, tokens, positions, mask)
    real = mask.astype(bool)
    assert relative_error(np.asarray(logits)[real], reference[real]) < 1e-4


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_bfloat16_logits_match_transformers(family, qwen2_folder, llama_folder):
    folder = qwen2_folder if family == "qwen2" else llama_folder
    tokens, mask, positions = left_padded(ROWS)
    reference = hf_logits(folder, tokens, mask, positions, dtype=torch.bfloat16)
    model = load_hf(folder, dtype="bfloat16")
    assert model.params["embed"]["embedding"].dtype == jnp.bfloat16
    logits, _ = forward(model.config, model.params, tokens, positions, mask)
    real = mask.astype(bool)
    assert relative_error(np.asarray(logits)[real], reference[real]) < 2e-2


def test_llama3_rope_scaling_is_read(llama_folder):
    config = load_hf(llama_folder, with_tokenizer=False).config
    assert config.rope_scaling.rope_type == "llama3"
    assert config.rope_scaling.factor == 8.0
    assert not config.tie_word_embeddings and not config.attention_bias


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_kv_cache_decode_equals_full_forward(family, qwen2_folder, llama_folder):
    model = load_hf(qwen2_folder if family == "qwen2" else llama_folder, with_tokenizer=False)
    config, params = model.config, model.params
    prompt_tokens, prompt_mask, prompt_positions = left_padded(ROWS)
    continuation = np.array([[7, 8, 9, 10], [1, 2, 3, 4], [20, 21, 22, 23]], np.int32)
    step = jax.jit(forward, static_argnums=0)

    cache = init_cache(config, batch=len(ROWS), max_len=16)
    _, cache = step(config, params, prompt_tokens, prompt_positions, prompt_mask, cache)
    next_positions = prompt_positions[:, -1:] + 1
    decoded = []
    for t in range(continuation.shape[1]):
        token = continuation[:, t : t + 1]
        logits, cache = step(config, params, token, next_positions + t, np.ones_like(token), cache)
        decoded.append(np.asarray(logits[:, 0]))
    assert int(cache.index) == prompt_tokens.shape[1] + continuation.shape[1]

    full_tokens = np.concatenate([prompt_tokens, continuation], axis=1)
    full_mask = np.concatenate([prompt_mask, np.ones_like(continuation)], axis=1)
    full_positions = np.concatenate([prompt_positions, next_positions + np.arange(4)], axis=1)
    full_logits, _ = forward(config, params, full_tokens, full_positions, full_mask)
    expected = np.asarray(full_logits)[:, prompt_tokens.shape[1] :]
    assert relative_error(np.stack(decoded, axis=1), expected) < 1e-5


def test_packed_segments_do_not_attend_across(qwen2_folder):
    model = load_hf(qwen2_folder, with_tokenizer=False)
    first, second = ROWS[0][:6], ROWS[1]
    packed = np.array([first + second], np.int32)
    segments = np.array([[1] * len(first) + [2] * len(second)], np.int32)
    positions = np.array([list(range(len(first))) + list(range(len(second)))], np.int32)
    packed_logits, _ = forward(model.config, model.params, packed, positions, segments)
    alone, _ = forward(model.config, model.params, np.array([second], np.int32))
    assert relative_error(np.asarray(packed_logits)[0, len(first) :], np.asarray(alone)[0]) < 1e-5


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_save_then_transformers_loads_identical_logits(family, qwen2_folder, llama_folder, tmp_path):
    folder = qwen2_folder if family == "qwen2" else llama_folder
    model = load_hf(folder)
    save_hf(tmp_path / "out", model.config, model.params, model.tokenizer, model.hf_config)
    tokens, mask, positions = left_padded(ROWS)
    np.testing.assert_array_equal(
        hf_logits(tmp_path / "out", tokens, mask, positions), hf_logits(folder, tokens, mask, positions)
    )
    reloaded = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    assert reloaded("12 + 3").input_ids == model.tokenizer("12 + 3").input_ids


def test_compiled_init_draws_the_eager_init_bit_for_bit():
    """Stage base draws π₀ under jit; a seed must give the model it gave when it drew eagerly."""
    config = ModelConfig(family="qwen2", vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=2,
                         num_heads=4, num_kv_heads=2, head_dim=8, tie_word_embeddings=False)
    eager = init_params(config, jax.random.key(7))
    compiled = jax.jit(init_params, static_argnums=0)(config, jax.random.key(7))
    for (path, want), got in zip(jax.tree_util.tree_leaves_with_path(eager), jax.tree.leaves(compiled)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=jax.tree_util.keystr(path))


def test_our_own_model_exports_to_transformers(tmp_path):
    """A model initialised here (sharded save, bfloat16 weights) loads in transformers and agrees."""
    config = ModelConfig(
        family="llama", vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=3,
        num_heads=4, num_kv_heads=1, head_dim=8, tie_word_embeddings=True, param_dtype="bfloat16",
    )
    params = init_params(config, jax.random.key(3))
    save_hf(tmp_path / "model", config, params, max_shard_bytes=4096)
    index = json.loads((tmp_path / "model" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    tokens, mask, positions = left_padded(ROWS)
    ours, _ = forward(config, params, tokens, positions, mask)
    theirs = hf_logits(tmp_path / "model", tokens, mask, positions, dtype=torch.bfloat16)
    real = mask.astype(bool)
    assert relative_error(np.asarray(ours)[real], theirs[real]) < 2e-2
    reloaded = load_hf(tmp_path / "model", dtype="bfloat16", with_tokenizer=False)
    jax.tree.map(np.testing.assert_array_equal, reloaded.params, params)


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_folder_without_config_names_the_file(tmp_path):
    with pytest.raises(UserError) as error:
        load_hf(tmp_path)
    assert str(tmp_path / "config.json") in one_line(error)


def test_missing_shard_names_the_file(tmp_path):
    config = ModelConfig(family="qwen2", vocab_size=64, hidden_size=32, intermediate_size=48,
                         num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, attention_bias=True)
    save_hf(tmp_path / "model", config, init_params(config, jax.random.key(0)), max_shard_bytes=8192)
    shard = sorted((tmp_path / "model").glob("model-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(UserError) as error:
        load_hf(tmp_path / "model", with_tokenizer=False)
    assert str(shard) in one_line(error)


def test_wrong_tensor_shape_names_file_and_tensor(qwen2_folder, tmp_path):
    folder = tmp_path / "broken"
    shutil.copytree(qwen2_folder, folder)
    tensors = load_file(folder / "model.safetensors")
    name = "model.layers.1.self_attn.k_proj.weight"
    tensors[name] = tensors[name][:-1]
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(UserError) as error:
        load_hf(folder)
    message = one_line(error)
    assert "model.safetensors" in message and name in message


def test_missing_tensor_is_named(qwen2_folder, tmp_path):
    folder = tmp_path / "broken"
    shutil.copytree(qwen2_folder, folder)
    tensors = load_file(folder / "model.safetensors")
    del tensors["model.norm.weight"]
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(UserError) as error:
        load_hf(folder)
    assert "model.norm.weight" in one_line(error)


def test_failed_save_leaves_the_previous_folder_intact(tmp_path):
    config = ModelConfig(family="llama", vocab_size=64, hidden_size=32, intermediate_size=48,
                         num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8)
    params = init_params(config, jax.random.key(0))
    save_hf(tmp_path / "model", config, params)
    before = {p.name: p.read_bytes() for p in (tmp_path / "model").iterdir()}

    class BrokenTokenizer:
        def save_pretrained(self, folder):
            raise OSError("disk full")

    changed = jax.tree.map(lambda x: x + 1, params)
    with pytest.raises(OSError):
        save_hf(tmp_path / "model", config, changed, tokenizer=BrokenTokenizer())
    assert {p.name: p.read_bytes() for p in (tmp_path / "model").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_tensor_mappings_cover_every_parameter():
    config = ModelConfig(family="qwen2", vocab_size=64, hidden_size=32, intermediate_size=48,
                         num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, attention_bias=True)
    leaves = jax.tree_util.tree_leaves_with_path(init_params(config, jax.random.key(0)))
    paths = {tuple(k.key for k in path) for path, _ in leaves}
    expected = {(path, i) for path in paths if path[0] == "layers" for i in range(config.num_layers)}
    expected |= {(path, None) for path in paths if path[0] != "layers"}
    mapped = [(m.path, m.layer) for m in tensor_mappings(config)]
    assert len(mapped) == len(set(mapped)) and set(mapped) == expected


def test_a_bucket_folder_round_trips_through_local_staging(qwen2_folder, tmp_path, monkeypatch):
    """Every path taken for a bucket's (as `gs://...` would be): the export is staged in a local
    folder and copied up file by file (sharded), the import reads whole shards and copies the
    tokenizer files down; parameters, tokenizer and the folder's files are those of a local save."""
    model = load_hf(qwen2_folder)
    save_hf(tmp_path / "local", model.config, model.params, model.tokenizer, model.hf_config, max_shard_bytes=8192)
    for module in (sv_jax.io, sv_jax.models.hf):
        monkeypatch.setattr(module, "is_remote", lambda path: True)
    save_hf(tmp_path / "bucket", model.config, model.params, model.tokenizer, model.hf_config, max_shard_bytes=8192)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bucket", "local"]
    files = lambda name: {p.name: p.read_bytes() for p in (tmp_path / name).iterdir()}  # noqa: E731
    assert files("bucket") == files("local")
    reloaded = load_hf(tmp_path / "bucket")
    jax.tree.map(np.testing.assert_array_equal, reloaded.params, model.params)
    assert reloaded.tokenizer("12 + 3").input_ids == model.tokenizer("12 + 3").input_ids
