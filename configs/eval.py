"""Evaluation: accuracy and self-verification figures of a policy on held-out questions."""

import ml_collections

from configs import presets
from configs import sft as sft_config


def get_config(preset: str = "") -> ml_collections.ConfigDict:
    config = sft_config.get_config()  # a policy missing from the workdir is trained with these settings
    config.stage = "eval"
    config.eval = ml_collections.ConfigDict()
    config.eval.policy = "sft"  # base | sft | sft_correct_only | rl | offline (from the workdir); "": model.path
    config.eval.dataset = ""  # a questions JSONL or TFDS folder; empty: the built-in task's test draw
    config.eval.split = "test"  # of a TFDS folder
    config.eval.num_questions = 500  # of the built-in test draw
    config.eval.name = ""  # output name under workdir/eval; empty: the policy's name
    config.eval.max_attempts = 4
    config.eval.max_new_tokens = 512
    config.eval.temperature = 0.0  # greedy
    config.eval.batch_size = 64
    config.eval.seed = 0
    from configs import rl as rl_config  # here, not above: configs/rl.py builds on this file

    config.rl = rl_config.settings()  # a missing RL policy is trained with these
    from configs import offline as offline_config

    config.offline = offline_config.settings()  # and a missing offline RL policy with these
    return presets.apply(config, preset)
