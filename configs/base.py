"""Stage base: pretrain the built-in task's tiny initial policy from scratch."""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.stage = "base"
    return config
