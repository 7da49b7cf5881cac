"""Sampling: K completions per prompt from a model folder, written to workdir/samples.jsonl."""

import ml_collections

from configs import presets
from configs import default


def get_config(preset: str = "") -> ml_collections.ConfigDict:
    config = default.get_config()
    config.stage = "sample"
    config.sample = ml_collections.ConfigDict()
    config.sample.input = ""  # JSONL of {"prompt": ...} or {"question": ...} (the latter gets the template)
    config.sample.question_template = "Question: {question}\nAnswer:"
    config.sample.num_samples = 1
    config.sample.temperature = 1.0  # 0 samples greedily
    config.sample.top_p = 1.0
    config.sample.top_k = 0  # 0: no top-k truncation
    config.sample.max_new_tokens = 256
    config.sample.stop = ()  # stop strings (EOS always stops), kept at the end of the completion
    config.sample.batch_size = 64  # prompts per device program; each brings num_samples rows
    config.sample.seed = 0
    return presets.apply(config, preset)
