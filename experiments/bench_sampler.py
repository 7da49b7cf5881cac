"""Sampling speed: sv_jax's sampler against transformers' `generate` and Tunix's JAX sampler.

Each peer runs as its own command on the same random HF Qwen2 folder, the same prompts and the same
number of new tokens (no early stop), so its whole cost is counted: imports, model load, compilation
and generation. Prints one JSON line per case with both rates and their ratio; compile time apart.

    python experiments/bench_sampler.py                    # the headline case (17M Qwen2, 256 x 128)
    python experiments/bench_sampler.py --suite=full       # 3 model sizes x batch 1, 16, 64 x greedy, sampled
    python experiments/bench_sampler.py --tunix_python=/work/tunix-venv/bin/python   # adds Tunix
    python experiments/bench_sampler.py --suite=commands   # the `sample` stage as a user runs it, cold and warm
    python experiments/bench_sampler.py --suite=commands --ours_python=/tmp/userenv/bin/python   # ours without torch

`--suite=commands` times what a user meets: the whole `python -m sv_jax.main --config=configs/sample.py`
command on a JSONL of text prompts, first with an empty compilation cache (cold), then again with
the cache it filled (warm), against transformers' `generate` on the same token ids; both stop at EOS
and draw from the tokenizer's vocabulary only, as the stage does. Two models: the 17M headline
(32,000-entry embedding) and a wider one with a small vocabulary (hidden 512, 6 layers, 320 entries).

Tunix pins its own jax, so it lives in a virtual environment of its own: experiments/peers/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TUNIX_SCRIPT = REPO / "experiments" / "peers" / "tunix_sampler.py"

# Qwen2-shaped random models: the built-in task's size, the 17M reference, and ~100M.
MODELS = {
    "builtin_1m": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                       num_key_value_heads=4, vocab_size=512),
    "qwen2_17m": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=9, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=32000),
    "qwen2_100m": dict(hidden_size=640, intermediate_size=2560, num_hidden_layers=10, num_attention_heads=10,
                       num_key_value_heads=2, vocab_size=32000),
    # the issue's ~20M model whose time goes to its layers, not to a wide output projection
    "qwen2_wide_small_vocab": dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=6,
                                   num_attention_heads=8, num_key_value_heads=2, vocab_size=320),
}
WORDS = ("apples", "number", "seven", "twelve", "check", "answer", "Tom", "buys", "bags", "each", "is", "the",
         "what", "total", "sum", "of", "and", "more", "than", "twice")


def make_model(name: str, folder: Path) -> int:
    """Saves a random tied-embedding Qwen2 with a byte-level tokenizer; returns its parameter count."""
    import torch
    import transformers

    sys.path.insert(0, str(REPO))
    from tests.hf_fixtures import byte_level_bpe_tokenizer

    torch.manual_seed(0)
    config = transformers.Qwen2Config(tie_word_embeddings=True, max_position_embeddings=1024, **MODELS[name])
    model = transformers.Qwen2ForCausalLM(config)
    model.save_pretrained(folder)
    byte_level_bpe_tokenizer().save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def prompts(num: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    import numpy as np

    return np.random.default_rng(seed).integers(1, min(vocab, 300), size=(num, length)).tolist()


def run_ours(args) -> dict:
    sys.path.insert(0, str(REPO))
    import jax

    from sv_jax.models import load_hf
    from sv_jax.sampling import Sampler, SamplingSpec

    model = load_hf(args.model, with_tokenizer=False)
    sampler = Sampler(model.config, model.params, batch_size=args.batch)
    spec = SamplingSpec(max_new_tokens=args.new_tokens, temperature=0.0 if args.mode == "greedy" else 1.0)
    data = prompts(args.num_prompts, args.prompt_len, model.config.vocab_size, args.seed)
    start = time.perf_counter()
    sampler.sample(data[: args.batch], spec, seed=args.seed)  # compiles, then runs one batch
    first_batch = time.perf_counter() - start
    start = time.perf_counter()
    samples = sampler.sample(data, spec, seed=args.seed)
    elapsed = time.perf_counter() - start
    tokens = sum(len(s.token_ids) for row in samples.values() for s in row)
    batches = -(-args.num_prompts // args.batch)
    return dict(peer="sv_jax", version=jax.__version__, tokens_per_s=tokens / elapsed,
                compile_s=max(first_batch - elapsed / batches, 0.0), generate_s=elapsed,
                compilations=sampler.compilations)


def run_transformers(args) -> dict:
    import torch
    import transformers

    torch.set_num_threads(os.cpu_count() or 1)
    model = transformers.AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    if args.ids:  # the sample stage's prompts as its tokenizer wrote them; stop at EOS as the stage does
        return _transformers_on_ids(args, model)
    data = torch.tensor(prompts(args.num_prompts, args.prompt_len, model.config.vocab_size, args.seed))
    options = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, eos_token_id=None,
                   pad_token_id=0, do_sample=args.mode == "sampled", use_cache=True)
    if args.mode == "sampled":
        options.update(temperature=1.0, top_k=0, top_p=1.0)
    else:
        options.update(temperature=None, top_k=None, top_p=None)
    tokens, start = 0, time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(data), args.batch):
            batch = data[i : i + args.batch]
            out = model.generate(batch, attention_mask=torch.ones_like(batch), **options)
            tokens += (out.shape[1] - batch.shape[1]) * batch.shape[0]
    elapsed = time.perf_counter() - start
    return dict(peer="transformers", version=transformers.__version__, tokens_per_s=tokens / elapsed,
                compile_s=0.0, generate_s=elapsed)


def _transformers_on_ids(args, model) -> dict:
    """Left-padded batches of the given token ids, each row ending at EOS; counts the tokens up to it."""
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(args.model)
    eos, vocab = tokenizer.eos_token_id, len(tokenizer)
    options = dict(max_new_tokens=args.new_tokens, eos_token_id=eos, pad_token_id=eos, use_cache=True,
                   do_sample=args.mode == "sampled", suppress_tokens=list(range(vocab, model.config.vocab_size)) or None)
    options.update(dict(temperature=1.0, top_k=0, top_p=1.0) if args.mode == "sampled" else
                   dict(temperature=None, top_k=None, top_p=None))
    rows = json.loads(Path(args.ids).read_text())
    tokens, start = 0, time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(rows), args.batch):
            batch = rows[i : i + args.batch]
            width = max(map(len, batch))
            ids = torch.tensor([[eos] * (width - len(r)) + r for r in batch])
            mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in batch])
            new = model.generate(ids, attention_mask=mask, **options)[:, width:].tolist()
            tokens += sum(row.index(eos) + 1 if eos in row else len(row) for row in new)
    elapsed = time.perf_counter() - start
    return dict(peer="transformers", version=transformers.__version__, tokens_per_s=tokens / elapsed,
                compile_s=0.0, generate_s=elapsed, tokens=tokens)


def measure_sample_command(model: Path, case: dict, prompts_file: Path, cache: Path, workdir: Path,
                           python: str) -> dict:
    """The whole `sample` stage command run by `python`; its tokens and the cache's loaded / compiled counts."""
    command = [python, "-m", "sv_jax.main", "--config=configs/sample.py", f"--workdir={workdir}",
               f"--config.model.path={model}", f"--config.sample.input={prompts_file}",
               f"--config.sample.max_new_tokens={case['new_tokens']}", f"--config.sample.batch_size={case['batch']}",
               f"--config.sample.temperature={1.0 if case['mode'] == 'sampled' else 0.0}",
               f"--config.compilation_cache_dir={cache}"]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    command_s = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"the sample command failed:\n{result.stderr[-3000:]}")
    loaded, compiled = map(int, re.search(r"compilation cache: (\d+) programs loaded, (\d+) compiled",
                                          result.stdout).groups())
    lines = (workdir / "samples.jsonl").read_text(encoding="utf-8").split("\n")  # texts may hold U+2028
    records = [json.loads(line) for line in lines if line]
    return dict(command_s=command_s, tokens=sum(len(r["token_ids"]) for r in records), loaded=loaded,
                compiled=compiled)


def write_prompts(model: Path, count: int, words: int, folder: Path, seed: int) -> tuple[Path, Path]:
    """`count` text prompts of `words` random words (JSONL, for the stage) and their token ids as the
    stage's tokenizer writes them (JSON, for transformers)."""
    import numpy as np
    import transformers

    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, words)) for _ in range(count)]
    tokenizer = transformers.AutoTokenizer.from_pretrained(model)
    (folder / "prompts.jsonl").write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts))
    (folder / "ids.json").write_text(json.dumps([tokenizer.encode(t) for t in texts]))
    return folder / "prompts.jsonl", folder / "ids.json"


def command_suite(tunix_python: str | None, ours_python: str) -> None:
    """The sample command cold and warm against transformers, per model and mode (one JSON line each)."""
    if tunix_python:
        print("tunix: not in the commands suite (its script takes random ids, not the stage's prompts)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("qwen2_17m", "qwen2_wide_small_vocab"):
            folder = Path(tmp) / name
            params = make_model(name, folder)
            prompts_file, ids_file = write_prompts(folder, 256, 24, Path(tmp), seed=0)
            for mode in ("sampled", "greedy"):
                case = dict(model=name, params=params, batch=64, num_prompts=256, new_tokens=128, mode=mode)
                cache = Path(tmp) / f"cache_{name}_{mode}"
                cold = measure_sample_command(folder, case, prompts_file, cache, Path(tmp) / "cold", ours_python)
                warm = measure_sample_command(folder, case, prompts_file, cache, Path(tmp) / "warm", ours_python)
                peer = measure("transformers", folder, dict(case, prompt_len=0), None, ids=ids_file)
                line = dict(case, ours_cold_s=round(cold["command_s"], 2), ours_warm_s=round(warm["command_s"], 2),
                            ours_cold_compiled=cold["compiled"], ours_warm_compiled=warm["compiled"],
                            ours_warm_loaded=warm["loaded"], ours_tokens=warm["tokens"],
                            transformers_s=round(peer["command_s"], 2), transformers_tokens=peer["tokens"],
                            warm_speedup_vs_transformers=round(peer["command_s"] / warm["command_s"], 2),
                            cold_speedup_vs_transformers=round(peer["command_s"] / cold["command_s"], 2))
                print(json.dumps(line), flush=True)


def measure(peer: str, model: Path, case: dict, tunix_python: str | None, ids: Path | None = None) -> dict:
    """Runs one peer as a fresh command and adds the whole command's wall time."""
    flags = [f"--model={model}", f"--batch={case['batch']}", f"--num_prompts={case['num_prompts']}",
             f"--prompt_len={case['prompt_len']}", f"--new_tokens={case['new_tokens']}",
             f"--mode={case['mode']}", "--seed=0"]
    if ids is not None:
        flags.append(f"--ids={ids}")
    if peer == "tunix":
        command = [tunix_python, str(TUNIX_SCRIPT), *flags]
    else:
        command = [sys.executable, __file__, f"--worker={peer}", *flags]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    command_s = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{peer} failed:\n{result.stderr[-3000:]}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    measured["command_s"] = command_s
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=("headline", "full", "commands"), default="headline")
    parser.add_argument("--tunix_python", help="python of the Tunix virtual environment")
    # The README installs requirements.txt alone, without PyTorch; in an environment that has it (as the
    # peer's must), transformers' AutoTokenizer imports it into our command too (~1.4 s here).
    parser.add_argument("--ours_python", default=sys.executable,
                        help="python that runs our sample command (commands suite), e.g. a requirements.txt venv")
    parser.add_argument("--worker", choices=("ours", "transformers"), help=argparse.SUPPRESS)
    parser.add_argument("--ids", help=argparse.SUPPRESS)  # a JSON file of prompt token ids (transformers)
    for name, default in [("model", ""), ("batch", 64), ("num_prompts", 256), ("prompt_len", 32),
                          ("new_tokens", 128), ("mode", "greedy"), ("seed", 0)]:
        parser.add_argument(f"--{name}", type=type(default), default=default)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_ours(args) if args.worker == "ours" else run_transformers(args)))
        return
    if args.suite == "commands":
        command_suite(args.tunix_python, args.ours_python)
        return

    if args.suite == "headline":
        cases = [dict(model="qwen2_17m", batch=64, num_prompts=256, prompt_len=32, new_tokens=128, mode=mode)
                 for mode in ("greedy", "sampled")]
    else:
        cases = [dict(model=model, batch=batch, num_prompts=max(2 * batch, 4), prompt_len=32, new_tokens=128, mode=mode)
                 for model in MODELS for batch in (1, 16, 64) for mode in ("greedy", "sampled")]
    peers = ["ours", "transformers"] + (["tunix"] if args.tunix_python else [])
    with tempfile.TemporaryDirectory() as tmp:
        folders, sizes = {}, {}
        for case in cases:
            name = case["model"]
            if name not in folders:
                folders[name] = Path(tmp) / name
                sizes[name] = make_model(name, folders[name])
            results = {peer: measure(peer, folders[name], case, args.tunix_python) for peer in peers}
            line = dict(case, params=sizes[name])
            for peer, measured in results.items():
                line[f"{peer}_tokens_per_s"] = round(measured["tokens_per_s"], 1)
                line[f"{peer}_compile_s"] = round(measured["compile_s"], 2)
                line[f"{peer}_command_s"] = round(measured["command_s"], 2)
                if peer != "ours":
                    line[f"speedup_vs_{peer}"] = round(measured["tokens_per_s"] and
                                                       results["ours"]["tokens_per_s"] / measured["tokens_per_s"], 2)
                    line[f"command_speedup_vs_{peer}"] = round(measured["command_s"] / results["ours"]["command_s"], 2)
            line["ours_compilations"] = results["ours"]["compilations"]
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
