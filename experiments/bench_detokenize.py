"""Token texts of one long response (`sv_jax.detokenize.token_pieces`, which RL's rewards are placed
by) against the peer it replaced: each token decoded alone, then growing prefixes decoded when a
character splits over tokens (O(length²)). A byte-level BPE trained here (8,192 entries) on math
text with non-ASCII symbols; responses of 1,000 to 4,000 tokens sampled from its own encodings, so
characters do split. Prints one JSON line per length; the tokenizer's byte table (built once per
tokenizer) is timed apart.

    python experiments/bench_detokenize.py      # ~5 s on 2 cores
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sv_jax.detokenize import _token_bytes, token_pieces  # noqa: E402

SYMBOLS = "≤≥≠±×÷√∑∫∞πθαβγ½⅓²³ → ⇒ ∴ 解 答 验证 😀"


def tokenizer() -> transformers.PreTrainedTokenizerFast:
    rng = np.random.default_rng(0)
    corpus = [" ".join(f"{rng.integers(100)} {SYMBOLS[rng.integers(len(SYMBOLS))]} x_{i} = {rng.integers(999)}"
                       for i in range(40)) for _ in range(2000)]
    model = Tokenizer(models.BPE())
    model.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    model.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=8192, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    model.train_from_iterator(corpus, trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=model, eos_token="<|endoftext|>")


def prefix_pieces(tokenizer, token_ids: list[int]) -> list[str]:
    """The peer: what `stages/rl.py` did before `sv_jax.detokenize`."""
    whole = tokenizer.decode(token_ids, skip_special_tokens=True)
    pieces = [tokenizer.decode([t], skip_special_tokens=True) for t in token_ids]
    if "".join(pieces) == whole:
        return pieces
    prefixes = [""] + [tokenizer.decode(token_ids[: i + 1], skip_special_tokens=True) for i in range(len(token_ids))]
    return [prefixes[i + 1][len(prefixes[i]):] if prefixes[i + 1].startswith(prefixes[i]) else ""
            for i in range(len(token_ids))]


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    bpe = tokenizer()
    table_seconds = best_of(lambda: _token_bytes.__wrapped__(bpe), 1)
    _token_bytes(bpe)
    rng = np.random.default_rng(1)
    text = " ".join(f"{rng.integers(1000)} {SYMBOLS[rng.integers(len(SYMBOLS))]}{SYMBOLS[rng.integers(len(SYMBOLS))]}"
                    for _ in range(4000))
    ids = bpe(text).input_ids
    for length in (1000, 2000, 4000):
        response = ids[:length] if length < len(ids) else ids
        ours = best_of(lambda: token_pieces(bpe, response), 5)  # noqa: B023
        peer = best_of(lambda: prefix_pieces(bpe, response), 1)  # noqa: B023
        print(json.dumps({"tokens": len(response), "ms": round(ours * 1e3, 2), "peer_ms": round(peer * 1e3, 1),
                          "speedup_vs_peer": round(peer / ours, 1), "table_ms_once": round(table_seconds * 1e3, 1),
                          "same_text": "".join(token_pieces(bpe, response)) == bpe.decode(response)}))


if __name__ == "__main__":
    main()
