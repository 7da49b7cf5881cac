"""Stage 2: PPO with outcome- or process-level rewards; the whole recipe's main job."""

import ml_collections

from configs import presets
from configs import default


def get_config(preset: str = "") -> ml_collections.ConfigDict:
    config = default.get_config()
    config.stage = "rl"
    return presets.apply(config, preset)
