"""Evaluation: accuracy and self-verification figures of a policy on a questions file."""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.stage = "eval"
    return config
