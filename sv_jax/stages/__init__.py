"""One module per stage of the recipe; `run` dispatches on `config.stage`."""

from __future__ import annotations

import importlib

import ml_collections

from sv_jax.errors import UserError

# Every stage of the recipe, in the order a fresh workdir needs them; each a module
# `sv_jax.stages.<name>` with a `run(config)`.
STAGES = ("base", "data", "sft", "rl", "eval", "sample")


def run(config: ml_collections.ConfigDict) -> None:
    stage = config.stage
    if stage not in STAGES:
        raise UserError(f"config key 'stage': unknown stage {stage!r}; known: {', '.join(STAGES)}")
    importlib.import_module(f"sv_jax.stages.{stage}").run(config)
