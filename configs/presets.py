"""Scale presets any stage config takes after a colon: `--config=configs/rl.py:tiny`.

`tiny` shrinks every section to seconds of CPU work: the tests' smoke runs of the whole recipe.
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
}


def apply(config: ml_collections.ConfigDict, preset: str) -> ml_collections.ConfigDict:
    if not preset:
        return config
    if preset != "tiny":
        raise ValueError(f"unknown preset {preset!r}; known: tiny")
    for section, values in TINY.items():
        if section in config:
            config[section].update(values)
    return config
