"""Stage 0: sample the initial policy, grade, and build difficulty-aware trajectories."""

import ml_collections

from configs import base as base_config


def get_config() -> ml_collections.ConfigDict:
    config = base_config.get_config()  # a fresh workdir runs `base` first, with these settings
    config.stage = "data"
    config.data = ml_collections.ConfigDict()
    config.data.num_questions = 2000  # questions of the built-in task's training draw
    config.data.k = 5  # samples per question
    config.data.temperature = 0.7
    config.data.max_new_tokens = 96
    config.data.batch_size = 64
    config.data.verification = "mixed"  # problem_solving | confirmative | mixed
    config.data.level_bounds = (0.9, 0.7, 0.5, 0.3)  # accuracy at or above each: levels 1..4; below: 5
    config.data.rounds = (1, 2, 2, 3, 4)  # solve-verify rounds at levels 1..5
    config.data.use_reference = True  # a question with no right sample ends on the reference solution
    return config
