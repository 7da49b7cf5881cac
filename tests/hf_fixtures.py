"""Tiny random Hugging Face checkpoints made with transformers (PyTorch, CPU), for parity tests.

The model vocabularies are larger than the tokenizers', as in real Qwen2 checkpoints.
"""

from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

CORPUS = [
    "A number increased by 27 is 93 . What is the number ?",
    "Tom has 12 apples . He buys 3 bags with 7 apples each . 12 + 3 * 7 = 33 .",
    "Wait , let me recheck my solution . Therefore , the answer is correct .",
] * 4
COMMON = dict(
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    initializer_range=0.1,  # larger than the real 0.02, so that every layer changes the logits visibly
)


def byte_level_bpe_tokenizer() -> transformers.PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>")


def word_level_tokenizer() -> transformers.PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    tokenizer.train_from_iterator(CORPUS, trainers.WordLevelTrainer(special_tokens=["<unk>", "<eos>"]))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<eos>", unk_token="<unk>")


def save_tiny_qwen2(folder: Path) -> Path:
    torch.manual_seed(0)
    config = transformers.Qwen2Config(vocab_size=384, tie_word_embeddings=True, rope_theta=1000.0, **COMMON)
    transformers.Qwen2ForCausalLM(config).save_pretrained(folder)
    byte_level_bpe_tokenizer().save_pretrained(folder)
    return folder


def save_tiny_llama(folder: Path) -> Path:
    torch.manual_seed(1)
    config = transformers.LlamaConfig(
        vocab_size=128,
        tie_word_embeddings=False,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32,
        },
        **COMMON,
    )
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    word_level_tokenizer().save_pretrained(folder)
    return folder


def hf_logits(folder: Path, tokens, attention_mask, positions, dtype=torch.float32):
    """transformers' logits `[batch, time, vocab]` as float32 numpy, for the same padded batch."""
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    model.eval()
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(tokens, dtype=torch.long),
            attention_mask=torch.tensor(attention_mask, dtype=torch.long),
            position_ids=torch.tensor(positions, dtype=torch.long),
        )
    return out.logits.float().numpy()
