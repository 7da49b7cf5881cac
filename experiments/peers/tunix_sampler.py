"""Peer benchmark: sampling speed of Google Tunix's JAX sampler on a local Hugging Face Qwen2 folder.

Runs in its own virtual environment (see README.md beside this file), never in the project's:

    /work/tunix-venv/bin/python experiments/peers/tunix_sampler.py --model=DIR --batch=64 \
        --num_prompts=256 --prompt_len=32 --new_tokens=128 --mode=greedy --seed=0

Prompts are random token ids, so the folder's tokenizer is not used. Prints one JSON line on stdout; in greedy
mode the prompt and the first generated ids of prompt 0 go to stderr, for a check against transformers.
"""

import time

START = time.perf_counter()  # before the heavy imports, so that command_s counts them

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from tunix.generate import sampler as tunix_sampler  # noqa: E402
from tunix.models.qwen2 import model as qwen2_model  # noqa: E402
from tunix.models.qwen2 import params as qwen2_params  # noqa: E402

NO_TOKEN = -1  # pad and EOS id: never generated, so no row stops early and no generated token is masked as padding


class IdTokenizer:
    """Tunix's duck-typed tokenizer (encode, decode, bos_id, eos_id, pad_id) over space-separated token ids.

    Tunix's sampler takes prompts only as strings, so each prompt is passed as its ids written out in decimal.
    """

    def encode(self, text: str, **_) -> list[int]:
        return [int(t) for t in text.split()]

    def decode(self, ids: list[int], **_) -> str:
        return ""  # the ids are read from SamplerOutput.tokens; no text is needed

    def bos_id(self) -> None:
        return None  # no BOS is prepended

    def eos_id(self) -> int:
        return NO_TOKEN

    def pad_id(self) -> int:
        return NO_TOKEN


def model_config(folder: Path, dtype: jnp.dtype) -> qwen2_model.ModelConfig:
    """Tunix's Qwen2 config from a Hugging Face config.json (transformers 4 or 5 layout)."""
    hf = json.loads((folder / "config.json").read_text())
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise SystemExit(f"tunix's Qwen2 has plain RoPE only; this folder asks for {rope}")
    if hf.get("use_sliding_window"):
        raise SystemExit("tunix's Qwen2 has no sliding-window attention")
    return qwen2_model.ModelConfig(
        num_layers=hf["num_hidden_layers"],
        vocab_size=hf["vocab_size"],
        embed_dim=hf["hidden_size"],
        hidden_dim=hf["intermediate_size"],
        num_heads=hf["num_attention_heads"],
        head_dim=hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"],
        num_kv_heads=hf["num_key_value_heads"],
        rope_theta=hf.get("rope_theta", rope.get("rope_theta", 10000.0)),
        norm_eps=hf["rms_norm_eps"],
        use_tied_embedding=hf.get("tie_word_embeddings", False),
        dtype=dtype,
        param_dtype=dtype,
    )


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="Hugging Face Qwen2 folder (config.json, *.safetensors)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--num_prompts", type=int, default=256)
    p.add_argument("--prompt_len", type=int, default=32)
    p.add_argument("--new_tokens", type=int, default=128)
    p.add_argument("--mode", choices=("greedy", "sampled"), default="greedy")
    p.add_argument("--temperature", type=float, default=1.0, help="for --mode=sampled (full vocabulary)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    args = p.parse_args()
    if args.num_prompts % args.batch or args.num_prompts < 2 * args.batch:
        p.error("num_prompts must be a multiple of batch and hold two batches at least (the first one compiles)")
    return args


def main() -> None:
    args = parse_args()
    folder = Path(args.model)
    dtype = jnp.dtype(args.dtype)
    config = model_config(folder, dtype)
    model = qwen2_params.create_model_from_safe_tensors(str(folder), config, dtype=dtype)
    cache = tunix_sampler.CacheConfig(
        cache_size=args.prompt_len + args.new_tokens,  # prompt + generated tokens fit exactly
        num_layers=config.num_layers,
        num_kv_heads=config.num_kv_heads,
        head_dim=config.head_dim,
    )
    sampler = tunix_sampler.Sampler(model, IdTokenizer(), cache)

    # The vocabulary's every id is a valid prompt token: -1 is the only pad.
    prompts = np.random.default_rng(args.seed).integers(0, config.vocab_size, (args.num_prompts, args.prompt_len))
    sampling = {"temperature": args.temperature, "top_p": 1.0} if args.mode == "sampled" else {}

    times, outputs = [], []
    for b, first in enumerate(range(0, args.num_prompts, args.batch)):
        texts = [" ".join(map(str, row)) for row in prompts[first : first + args.batch]]
        tick = time.perf_counter()
        out = sampler(
            texts,
            max_generation_steps=args.new_tokens,
            max_prompt_length=args.prompt_len,
            seed=args.seed + b,
            **sampling,
        )
        times.append(time.perf_counter() - tick)  # the output ids are on the host by now
        outputs.extend(out.tokens)

    lengths = {len(t) for t in outputs}
    if lengths != {args.new_tokens}:
        raise SystemExit(f"expected {args.new_tokens} new tokens per prompt, got lengths {sorted(lengths)}")
    if args.mode == "greedy":
        ids = {"prompt0": prompts[0].tolist(), "greedy_ids": np.asarray(outputs[0][:8]).tolist()}
        print(json.dumps(ids), file=sys.stderr)

    steady = times[1:]
    print(
        json.dumps(
            {
                "peer": "tunix",
                "version": metadata.version("google-tunix"),
                "jax": jax.__version__,
                "mode": args.mode,
                "dtype": args.dtype,
                "batch": args.batch,
                "num_prompts": args.num_prompts,
                "prompt_len": args.prompt_len,
                "new_tokens": args.new_tokens,
                "tokens_per_s": round(len(steady) * args.batch * args.new_tokens / sum(steady), 1),
                "compile_s": round(times[0] - float(np.mean(steady)), 3),
                "total_s": round(sum(times), 3),
                "command_s": round(time.perf_counter() - START, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
