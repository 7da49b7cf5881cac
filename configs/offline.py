"""Offline RL: responses sampled once from the S²R SFT policy, learned per action (the paper's third mode).

On a fresh workdir it runs base → data → sft first, then samples, selects and trains into
workdir/offline/model.
"""

import ml_collections

from configs import presets
from configs import eval as eval_config


def get_config(preset: str = "") -> ml_collections.ConfigDict:
    config = eval_config.get_config(preset)  # every earlier stage's settings, and the offline ones
    config.stage = "offline"
    return presets.apply(config, preset)


def settings() -> ml_collections.ConfigDict:
    """The `offline` section (also in the eval config, which trains a missing offline policy with it)."""
    offline = ml_collections.ConfigDict()
    # JSONL of responses sampled elsewhere: {"id": a training question's id, "completion": text}, e.g.
    # the `sample` stage's output on offline/questions.jsonl, or a TFDS folder of them (its train split,
    # sv_jax.datasets.prepare_tfds("responses", ...)); empty: sample them here.
    offline.responses = ""
    offline.questions_only = False  # write offline/questions.jsonl and stop (to sample them elsewhere)
    offline.samples_per_question = 8
    offline.temperature = 0.8  # sampling's, and the ratios' (the distribution the data came from)
    offline.max_new_tokens = 512
    offline.accuracy_range = (0.1, 0.7)  # questions whose responses are right this often are kept
    offline.max_actions = 10  # a response with more actions is dropped
    offline.reward = "process"  # process (each action) | outcome (the response as one action)
    offline.rewards = ml_collections.ConfigDict(dict(right=1.0, wrong=-1.0, no_end=-1.0, verify_bonus=1.0,
                                                     retry_bonus=1.0, retry_bonus_on="to_right", repeat=0.0))
    # The fixed baseline of an action: the mean reward of the kept actions at its key, 0 under
    # `baseline_min_count`: accuracy_position (its question's accuracy, its position), position, prefix.
    offline.baseline = "accuracy_position"
    offline.baseline_min_count = 10
    offline.kl_coef = 0.15
    offline.clip = 0.2
    offline.epochs = 1
    offline.batch_size = 16  # responses a step, one a row
    offline.micro_batches = 1
    offline.remat = "none"
    # 5e-6: on seed 0, 5e-5 ended 11 points under the SFT policy it started from (experiments/RESULTS.md).
    offline.learning_rate = 5e-6
    offline.warmup_steps = 5
    offline.clip_norm = 1.0
    offline.checkpoint_every = 10
    offline.log_every = 1
    return offline
