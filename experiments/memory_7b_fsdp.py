"""Per-device memory of the compiled SFT step and PPO update for Qwen2.5-Math-7B shapes (2 layers),
FSDP over 8 host devices, 8 x 4096 tokens: with the decoder's activation constraints (rows stay
split, FSDP gathers weights), also with each layer rematerialized (`remat` full and dots), against the same
programs laid out by their inputs alone (the peer). Logits go `logits_chunk` (1,024) tokens and
`vocab_chunk` (16,384: ten tiles of 15,207 entries) at a time.

Nothing runs: abstract inputs, `jax.jit(...).lower(...).compile()`, then `memory_analysis()`. Also
counts the compiled program's arrays whose leading dimensions are the global batch (8 x 4096 rows,
or 32,768 flattened tokens): an FSDP program should hold none. Prints one JSON line per program.

    python experiments/memory_7b_fsdp.py             # ~1 min on 2 cores (eight programs compiled)
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import functools  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sv_jax.models import ModelConfig, param_shapes, param_shardings  # noqa: E402
from sv_jax.sharding import batch_sharding, make_mesh, replicated, rows_sharding, state_shardings  # noqa: E402
from sv_jax.training.lm import LMStep, init_train_state  # noqa: E402
from sv_jax.training.optimizer import make_optimizer  # noqa: E402
from sv_jax.training.ppo import PPOStep  # noqa: E402

# Qwen2.5-Math-7B's config.json, 2 of its 28 layers
QWEN_7B_2_LAYERS = ModelConfig(family="qwen2", vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                               num_layers=2, num_heads=28, num_kv_heads=4, head_dim=128, attention_bias=True,
                               rope_theta=10000.0, max_position_embeddings=4096)
ROWS, TIME = 8, 4096
GIB = 1 << 30
GLOBAL_BATCH = re.compile(rf"\[(?:{ROWS},{TIME}|{ROWS * TIME})[,\]]")


def abstract(tree, shardings):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def measure(name: str, step, state, state_layout, batch, mesh, layout: str) -> dict:
    compiled = jax.jit(step, in_shardings=(state_layout, jax.tree.map(lambda x: x.sharding, batch)),
                       out_shardings=(state_layout, replicated(mesh)), donate_argnums=0).lower(state, batch).compile()
    memory = compiled.memory_analysis()
    return {"program": name, "layout": layout, "devices": 8, "tokens": ROWS * TIME,
            "temp_gib_per_device": round(memory.temp_size_in_bytes / GIB, 2),
            "argument_gib_per_device": round(memory.argument_size_in_bytes / GIB, 2),
            "global_batch_arrays": len(GLOBAL_BATCH.findall(compiled.as_text()))}


def main() -> None:
    mesh = make_mesh((1, 8, 1), ("data", "fsdp", "model"))
    optimizer, _ = make_optimizer(5e-6, total_steps=100)
    results = []
    # the peer: the same programs laid out by their inputs' shardings alone (no activation constraints)
    layouts = {"inputs_only": dict(mesh=None), "constrained": dict(mesh=mesh),
               "constrained_remat": dict(mesh=mesh, remat="full"), "constrained_remat_dots": dict(mesh=mesh, remat="dots")}
    for name, changes in layouts.items():
        config = QWEN_7B_2_LAYERS.replace(**changes)
        layout = param_shardings(config, mesh)
        init = functools.partial(init_train_state, optimizer=optimizer)
        sft_state = jax.eval_shape(init, param_shapes(config))
        sft_layout = state_shardings(sft_state, layout, optimizer, mesh)
        tokens = jax.ShapeDtypeStruct((1, ROWS, TIME), jnp.int32, sharding=batch_sharding(mesh))
        sft_batch = {k: tokens for k in ("inputs", "targets", "positions", "segment_ids", "loss_mask", "kl_mask")}
        results.append(measure("sft_step", LMStep(config, optimizer), abstract(sft_state, sft_layout), sft_layout,
                               sft_batch, mesh, name))

        ppo_params = {"policy": param_shapes(config)}
        ppo_state = jax.eval_shape(init, ppo_params)
        ppo_layout = state_shardings(ppo_state, {"policy": layout}, optimizer, mesh)
        rows = rows_sharding(mesh)
        ints = jax.ShapeDtypeStruct((ROWS, TIME), jnp.int32, sharding=rows)
        floats = jax.ShapeDtypeStruct((ROWS, TIME), jnp.float32, sharding=rows)
        ppo_batch = {**{k: ints for k in ("inputs", "targets", "positions", "segment_ids", "response_mask")},
                     **{k: floats for k in ("old_logprobs", "reference_logprobs", "advantages")}}
        results.append(measure("ppo_update", PPOStep(config, optimizer, temperature=0.7, kl_coef=0.05),
                               abstract(ppo_state, ppo_layout), ppo_layout, ppo_batch, mesh, name))
    for result in results:
        print(json.dumps(result))
    for program in ("sft_step", "ppo_update"):
        temp = {r["layout"]: r["temp_gib_per_device"] for r in results if r["program"] == program}
        print(json.dumps({"program": program, **{f"temp_ratio_{name}_vs_inputs_only": round(temp[name] / temp["inputs_only"], 3)
                                                for name in layouts if name != "inputs_only"}}))


if __name__ == "__main__":
    main()
