"""Sampling: K completions per prompt from a model folder."""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.stage = "sample"
    return config
