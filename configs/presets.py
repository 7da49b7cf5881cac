"""Presets any stage config takes after a colon: `--config=configs/rl.py:tiny`.

`tiny` shrinks every section to seconds of CPU work: the tests' smoke runs of the whole recipe.
`qwen25_math_1_5b`, `qwen25_math_7b` and `llama31_8b_instruct` are the paper's models with the
paper's settings (stage 0: K = 5 samples at T = 0.7; SFT: lr 5e-6, batch 32, 3 epochs; RL: lr
5e-7, 64 questions x 4 samples at T = 0.7, clip 0.2, 500 steps) and MATH-length rows. Each holds
its architecture (HF config.json keys), so that the memory plan needs no weights, and leaves the
mesh, parameter dtype, remat policies and micro-batches `auto`: `--config.hardware=8xh100` (see
`sv_jax/hardware.py`) resolves them. They need `model.path` (the HF folder) and
`data.questions` / `eval.dataset` (MATH-style JSONL) to run, not to plan.
"""

import ml_collections

TINY = {
    "base": dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, seq_len=64, short_seq_len=32,
                 long_every=2, batch_size=16, micro_batches=1, steps=4, checkpoint_every=2, log_every=2,
                 eval_questions=4, validate_every=2, validate_from=2, validation_questions=2,
                 cooldown_steps=2),
    "data": dict(num_questions=12, k=3, max_new_tokens=24, batch_size=8),
    "sft": dict(steps=4, baseline_steps=4, batch_size=16, micro_batches=2, seq_len=128, warmup_steps=1,
                checkpoint_every=2, log_every=2),
    "eval": dict(num_questions=8, max_new_tokens=48, batch_size=8),
    "rl": dict(steps=2, questions_per_step=2, samples_per_question=2, max_new_tokens=32, minibatches=2,
               checkpoint_every=1, warmup_steps=1),
    "offline": dict(samples_per_question=2, max_new_tokens=64, batch_size=4, checkpoint_every=1, warmup_steps=1,
                    baseline_min_count=1),
}


QWEN2_MATH = dict(model_type="qwen2", max_position_embeddings=4096, rope_theta=10000.0, rms_norm_eps=1e-6,
                  num_hidden_layers=28)
ARCHITECTURES = {
    "qwen25_math_1_5b": dict(QWEN2_MATH, vocab_size=151936, hidden_size=1536, intermediate_size=8960,
                             num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True),
    "qwen25_math_7b": dict(QWEN2_MATH, vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                           num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False),
    "llama31_8b_instruct": dict(model_type="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                                num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                                max_position_embeddings=131072, rms_norm_eps=1e-5, tie_word_embeddings=False,
                                rope_scaling=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0,
                                                  low_freq_factor=1.0, high_freq_factor=4.0,
                                                  original_max_position_embeddings=8192)),
}
# The paper's settings for every real model; `auto` values are resolved for `config.hardware`.
PAPER = {
    "model": dict(dtype="auto", param_dtype="auto"),
    "mesh": dict(shape=(-1,), axes=("auto",)),
    "plan": dict(prompt_tokens=512),  # MATH questions in a chat template
    "data": dict(k=5, temperature=0.7, max_new_tokens=2048, batch_size=64),
    "sft": dict(learning_rate=5e-6, batch_size=32, epochs=3, seq_len=4096, warmup_steps=10, micro_batches=0,
                remat="auto", checkpoint_every=100),
    "eval": dict(max_new_tokens=4096, batch_size=64),
    "rl": dict(learning_rate=5e-7, questions_per_step=64, samples_per_question=4, temperature=0.7, clip=0.2,
               steps=500, max_new_tokens=2048, minibatches=4, micro_batches=0, remat="auto", warmup_steps=10,
               checkpoint_every=20),
}


def apply(config: ml_collections.ConfigDict, preset: str) -> ml_collections.ConfigDict:
    if not preset:
        return config
    if preset == "tiny":
        sections = TINY
    elif preset in ARCHITECTURES:
        sections = PAPER
        config.model.architecture = ml_collections.ConfigDict(ARCHITECTURES[preset])
    else:
        raise ValueError(f"unknown preset {preset!r}; known: tiny, {', '.join(ARCHITECTURES)}")
    for section, values in sections.items():
        if section in config:
            config[section].update(values)
    return config
