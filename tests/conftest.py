"""Test set-up: eight simulated CPU devices for mesh tests, and tiny random HF checkpoints."""

import os

from tests import FAST_COMPILE

os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {FAST_COMPILE}")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

from sv_jax import compilation  # noqa: E402
from tests import hf_fixtures, killing  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """One persistent compilation cache for the session, shared by pytest-xdist's workers and every
    stage a test starts as a process: each program compiles once."""
    root = tmp_path_factory.getbasetemp()
    folder = (root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root) / "jax-cache"
    os.environ["JAX_COMPILATION_CACHE_DIR"] = killing.ENV["JAX_COMPILATION_CACHE_DIR"] = str(folder)
    compilation.enable(str(folder))
    return folder


@pytest.fixture(scope="session")
def qwen2_folder(tmp_path_factory):
    """A tiny random Qwen2ForCausalLM with tied embeddings and a byte-level BPE tokenizer."""
    return hf_fixtures.save_tiny_qwen2(tmp_path_factory.mktemp("qwen2"))


@pytest.fixture(scope="session")
def llama_folder(tmp_path_factory):
    """A tiny random LlamaForCausalLM, untied, with Llama 3.1 rope scaling and a word-level tokenizer."""
    return hf_fixtures.save_tiny_llama(tmp_path_factory.mktemp("llama"))
