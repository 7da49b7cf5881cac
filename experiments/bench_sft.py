"""SFT training speed: sv_jax's jitted step against a transformers (PyTorch) step, and our MFU.

Both train the same random Llama-shaped model (same config, batch, sequence length, AdamW with
clipping) on the same random tokens, each in its own process so neither warms the other. Compile and
warm-up steps are timed apart. MFU is model FLOPs (6 x non-embedding parameters x tokens, plus
attention's 12 x layers x hidden x time per token) over the machine's matmul rate, measured in the
same run with a large float32 matmul. Prints one JSON line per case.

    python experiments/bench_sft.py                   # the built-in task's model and a matmul-bound one
    python experiments/bench_sft.py --cases=wide
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CASES = {
    # the built-in task's π₀ and its SFT batch
    "builtin": dict(hidden=128, intermediate=384, layers=4, heads=4, vocab=448, batch=32, time=384, micro=4),
    # wide enough that matmuls dominate: where MFU is meaningful
    "wide": dict(hidden=1024, intermediate=4096, layers=2, heads=8, vocab=2048, batch=8, time=256, micro=1),
}


def model_flops_per_token(case: dict) -> float:
    """Training FLOPs per token: 6 x matmul parameters (embedding lookups excluded, the tied output
    projection included) plus 6 x the attention score and value products."""
    h, f, n, v, t = case["hidden"], case["intermediate"], case["layers"], case["vocab"], case["time"]
    matmul_params = n * (4 * h * h + 3 * h * f) + h * v
    return 6 * matmul_params + 6 * n * 2 * h * t


def matmul_rate(size: int = 2048, repeats: int = 10) -> float:
    """float32 FLOP/s of a square matmul on this machine, by JAX."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((size, size), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    start = time.perf_counter()
    for _ in range(repeats):
        out = f(a)
    out.block_until_ready()
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def run_ours(case: dict, steps: int) -> dict:
    import jax
    import numpy as np

    sys.path.insert(0, str(REPO))
    from sv_jax.models import ModelConfig, init_params
    from sv_jax.training.lm import LMStep, init_train_state
    from sv_jax.training.optimizer import make_optimizer

    config = ModelConfig(family="llama", vocab_size=case["vocab"], hidden_size=case["hidden"],
                         intermediate_size=case["intermediate"], num_layers=case["layers"], num_heads=case["heads"],
                         num_kv_heads=case["heads"], head_dim=case["hidden"] // case["heads"],
                         max_position_embeddings=case["time"], tie_word_embeddings=True)
    optimizer, _ = make_optimizer(1e-4, 1000, 10, 0.01)
    state = init_train_state(init_params(config, jax.random.key(0)), optimizer)
    step = jax.jit(LMStep(config, optimizer), donate_argnums=0)
    micro, rows, t = case["micro"], case["batch"] // case["micro"], case["time"]
    tokens = np.random.default_rng(0).integers(0, case["vocab"], (micro, rows, t + 1)).astype(np.int32)
    ones = np.ones((micro, rows, t), np.int32)
    batch = {"inputs": tokens[..., :-1], "targets": tokens[..., 1:], "segment_ids": ones, "loss_mask": ones,
             "kl_mask": 0 * ones, "positions": np.broadcast_to(np.arange(t, dtype=np.int32), ones.shape).copy()}
    start = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    return {"step_s": (time.perf_counter() - start) / steps, "first_step_s": first}


def run_transformers(case: dict, steps: int) -> dict:
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=case["vocab"], hidden_size=case["hidden"],
                                      intermediate_size=case["intermediate"], num_hidden_layers=case["layers"],
                                      num_attention_heads=case["heads"], num_key_value_heads=case["heads"],
                                      max_position_embeddings=case["time"], tie_word_embeddings=True)
    model = transformers.LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.01)
    micro, rows, t = case["micro"], case["batch"] // case["micro"], case["time"]
    tokens = torch.randint(0, case["vocab"], (micro, rows, t))

    def step():
        for part in tokens:  # gradient accumulation over the same micro-batches as ours
            (model(input_ids=part, labels=part).loss / micro).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()

    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return {"step_s": (time.perf_counter() - start) / steps, "first_step_s": first}


def measure(peer: str, name: str, steps: int) -> dict:
    """Runs one peer on one case in a fresh process and returns its timings."""
    command = [sys.executable, __file__, f"--worker={peer}", f"--cases={name}", f"--steps={steps}"]
    out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", default="builtin,wide")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--worker", default="")
    args = parser.parse_args()
    if args.worker:
        case = CASES[args.cases]
        runner = run_ours if args.worker == "sv_jax" else run_transformers
        print(json.dumps(runner(case, args.steps)))
        return
    rate = matmul_rate()
    for name in args.cases.split(","):
        case = CASES[name]
        tokens = case["batch"] * case["time"]
        ours, theirs = measure("sv_jax", name, args.steps), measure("transformers", name, args.steps)
        print(json.dumps({
            "case": name, **case,
            "sv_jax_tokens_per_s": round(tokens / ours["step_s"]),
            "transformers_tokens_per_s": round(tokens / theirs["step_s"]),
            "ratio": round(theirs["step_s"] / ours["step_s"], 2),
            "sv_jax_mfu": round(model_flops_per_token(case) * tokens / ours["step_s"] / rate, 3),
            "transformers_mfu": round(model_flops_per_token(case) * tokens / theirs["step_s"] / rate, 3),
            "matmul_gflops": round(rate / 1e9, 1),
            "sv_jax_first_step_s": round(ours["first_step_s"], 1),
            "transformers_first_step_s": round(theirs["first_step_s"], 1),
        }), flush=True)


if __name__ == "__main__":
    main()
