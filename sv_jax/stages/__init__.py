"""One module per stage of the recipe; `run` dispatches on `config.stage`."""

from __future__ import annotations

import importlib

import ml_collections

from sv_jax.errors import UserError

# Every stage of the recipe, in the order a fresh workdir needs them.
STAGES = ("base", "data", "sft", "rl", "eval", "sample")
# The stages this version implements, each a module `sv_jax.stages.<name>` with a `run(config)`.
IMPLEMENTED = ("base", "data", "sft", "eval", "sample")


def run(config: ml_collections.ConfigDict) -> None:
    stage = config.stage
    if stage not in STAGES:
        raise UserError(f"config key 'stage': unknown stage {stage!r}; known: {', '.join(STAGES)}")
    if stage not in IMPLEMENTED:
        raise UserError(f"stage {stage!r} is not implemented yet in this version of sv_jax")
    importlib.import_module(f"sv_jax.stages.{stage}").run(config)
