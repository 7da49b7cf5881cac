"""Architecture of a Llama / Qwen2-family decoder, read from and written to HF `config.json`."""

from __future__ import annotations

import dataclasses
from typing import Any

from jax.sharding import Mesh

from sv_jax.errors import UserError

FAMILIES = ("llama", "qwen2")
DTYPES = ("float32", "bfloat16")
ROPE_TYPES = ("default", "linear", "llama3")
# What each layer's backward pass recomputes (`ModelConfig.remat`): nothing; everything (only the
# layer's input is kept); or everything but the weight matmuls' outputs (q, k, v, o, MLP gate / up /
# down: JAX's `dots_with_no_batch_dims_saveable`; attention scores and elementwise work recomputed).
REMAT_POLICIES = ("none", "full", "dots")
# How a decode step runs the layers (`ModelConfig.decode_layers`): under the scan, one compiled layer at
# any depth; or unrolled over a cache and weights per layer, a program that grows with depth but whose
# matmuls read their weights and keys in place. XLA's CPU backend copies every stacked slice that
# feeds a matmul (~40 % of a decode step of a 6-layer model), TPU and GPU fuse the slice: `auto`
# unrolls on CPU only.
DECODE_LAYERS = ("auto", "scan", "unrolled")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """HF `rope_parameters` / `rope_scaling` beyond the base frequency.

    `linear` divides every frequency by `factor`; `llama3` (Llama 3.1) divides only the low
    frequencies, blending smoothly between `low_freq_factor` and `high_freq_factor`.
    """

    rope_type: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything the decoder's shapes and numerics depend on; hashable, so jit can take it static."""

    family: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling = RopeScaling()
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # q/k/v projections carry a bias (always so in Qwen2)
    mlp_bias: bool = False
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"
    remat: str = "none"  # REMAT_POLICIES: recompute layer activations in the backward pass, memory for time
    decode_layers: str = "auto"  # DECODE_LAYERS: the layers of a sampler's decode step, scanned or unrolled
    # Time steps whose logits a training or scoring pass holds at once: longer rows go chunk by chunk,
    # each chunk's logits recomputed in the backward pass (a 7B model's [4096, 152064] float32 logits
    # of one row are 2.3 GiB, and the loss and its gradient need several such arrays). 0: whole rows.
    logits_chunk: int = 1024
    # Vocabulary entries whose logits a training or scoring pass holds at once (per time chunk):
    # larger vocabularies stream through equal tiles of at most this many (the last one padded), so
    # that neither the whole `[hidden, vocab]` output kernel nor its gradient is ever gathered on
    # one device under FSDP. 0: the whole vocabulary at once.
    vocab_chunk: int = 16384
    # The device mesh activations, logits and caches are laid out on inside jitted programs (by
    # `partitioning.RULES`); None: wherever the inputs are. A run's layout, not the architecture.
    mesh: Mesh | None = None

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise UserError(f"model family {self.family!r} is not supported; known: {', '.join(FAMILIES)}")
        for key in ("dtype", "param_dtype"):
            if getattr(self, key) not in DTYPES:
                raise UserError(f"model {key} {getattr(self, key)!r} is not one of {', '.join(DTYPES)}")
        if self.num_heads % self.num_kv_heads:
            raise UserError(
                f"num_attention_heads ({self.num_heads}) is not a multiple of "
                f"num_key_value_heads ({self.num_kv_heads})"
            )
        if self.remat not in REMAT_POLICIES:
            raise UserError(f"remat policy {self.remat!r} is not one of {', '.join(REMAT_POLICIES)}")
        if self.decode_layers not in DECODE_LAYERS:
            raise UserError(f"decode_layers {self.decode_layers!r} is not one of {', '.join(DECODE_LAYERS)}")
        if self.rope_scaling.rope_type not in ROPE_TYPES:
            raise UserError(
                f"rope type {self.rope_scaling.rope_type!r} is not supported; known: {', '.join(ROPE_TYPES)}"
            )

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_hf(
        cls, hf: dict[str, Any], source: str = "config.json", dtype: str = "float32", param_dtype: str = "float32"
    ) -> ModelConfig:
        """Reads an HF config dict; `source` names the file in error messages."""
        family = hf.get("model_type")
        if family not in FAMILIES:
            raise UserError(f"{source}: model_type {family!r} is not supported; known: {', '.join(FAMILIES)}")
        if hf.get("use_sliding_window"):
            raise UserError(f"{source}: use_sliding_window=true is not supported")

        def required(key: str) -> Any:
            if key not in hf:
                raise UserError(f"{source}: missing key {key!r}")
            return hf[key]

        num_heads = required("num_attention_heads")
        hidden_size = required("hidden_size")
        # transformers 5 writes `rope_parameters`; older checkpoints `rope_theta` + `rope_scaling`.
        rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
        rope_theta = float(rope.pop("rope_theta", hf.get("rope_theta", 10000.0)))
        rope_type = rope.pop("rope_type", rope.pop("type", "default"))
        known = {f.name for f in dataclasses.fields(RopeScaling)}
        try:
            scaling = RopeScaling(rope_type=rope_type, **{k: v for k, v in rope.items() if k in known})
        except TypeError as error:
            raise UserError(f"{source}: bad rope parameters: {error}") from None
        try:
            return cls(
                family=family,
                vocab_size=required("vocab_size"),
                hidden_size=hidden_size,
                intermediate_size=required("intermediate_size"),
                num_layers=required("num_hidden_layers"),
                num_heads=num_heads,
                num_kv_heads=hf.get("num_key_value_heads") or num_heads,
                head_dim=hf.get("head_dim") or hidden_size // num_heads,
                rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
                rope_theta=rope_theta,
                rope_scaling=scaling,
                max_position_embeddings=hf.get("max_position_embeddings", 4096),
                tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
                attention_bias=True if family == "qwen2" else bool(hf.get("attention_bias", False)),
                mlp_bias=bool(hf.get("mlp_bias", False)),
                dtype=dtype,
                param_dtype=param_dtype,
            )
        except UserError as error:
            raise UserError(f"{source}: {error}") from None

    def to_hf(self) -> dict[str, Any]:
        """The architecture keys of an HF `config.json` that transformers reads back to the same model."""
        rope: dict[str, Any] = {"rope_type": self.rope_scaling.rope_type, "rope_theta": self.rope_theta}
        if self.rope_scaling.rope_type != "default":
            rope.update(dataclasses.asdict(self.rope_scaling))
        hf: dict[str, Any] = {
            "model_type": self.family,
            "architectures": ["Qwen2ForCausalLM" if self.family == "qwen2" else "LlamaForCausalLM"],
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_parameters": rope,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "dtype": self.param_dtype,
        }
        if self.family == "llama":
            hf.update(attention_bias=self.attention_bias, mlp_bias=self.mlp_bias)
        return hf
