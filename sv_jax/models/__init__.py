"""The Llama / Qwen2 decoder, its KV cache, and HF checkpoint import / export."""

from sv_jax.models.config import ModelConfig, RopeScaling
from sv_jax.models.decoder import (
    Decoder,
    KVCache,
    Params,
    forward,
    init_cache,
    init_params,
    logical_axes,
    output_logits,
    param_shapes,
    param_shardings,
)
from sv_jax.models.hf import LoadedModel, load_hf, load_tokenizer, save_hf

__all__ = [
    "Decoder",
    "KVCache",
    "LoadedModel",
    "ModelConfig",
    "Params",
    "RopeScaling",
    "forward",
    "init_cache",
    "init_params",
    "load_hf",
    "load_tokenizer",
    "logical_axes",
    "output_logits",
    "param_shapes",
    "param_shardings",
    "save_hf",
]
