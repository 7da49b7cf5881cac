"""Test set-up: eight simulated CPU devices for mesh tests, and tiny random HF checkpoints."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

from tests import hf_fixtures  # noqa: E402


@pytest.fixture(scope="session")
def qwen2_folder(tmp_path_factory):
    """A tiny random Qwen2ForCausalLM with tied embeddings and a byte-level BPE tokenizer."""
    return hf_fixtures.save_tiny_qwen2(tmp_path_factory.mktemp("qwen2"))


@pytest.fixture(scope="session")
def llama_folder(tmp_path_factory):
    """A tiny random LlamaForCausalLM, untied, with Llama 3.1 rope scaling and a word-level tokenizer."""
    return hf_fixtures.save_tiny_llama(tmp_path_factory.mktemp("llama"))
