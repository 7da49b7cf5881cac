"""Stage 0: sample the initial policy, grade, and build difficulty-aware trajectories."""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.stage = "data"
    return config
