"""Stage 1: behavior initialization, masked cross-entropy SFT on the trajectories."""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.stage = "sft"
    return config
