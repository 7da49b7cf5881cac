"""One module per stage of the recipe; `run` dispatches on `config.stage`."""

from __future__ import annotations

import importlib

import ml_collections

from sv_jax.errors import UserError

# Every stage of the recipe, in the order a fresh workdir needs them; each a module
# `sv_jax.stages.<name>` with a `run(config)`.
STAGES = ("base", "data", "sft", "rl", "offline", "eval", "sample")


def run(config: ml_collections.ConfigDict) -> None:
    stage = config.stage
    if stage not in STAGES:
        raise UserError(f"config key 'stage': unknown stage {stage!r}; known: {', '.join(STAGES)}")
    from sv_jax import plan  # after the cluster is joined: the plan lays shardings out on the mesh

    module = importlib.import_module(f"sv_jax.stages.{stage}")
    plan.resolve(config)
    if hasattr(module, "check"):  # a bad setting is one line before the plan compiles anything
        module.check(config)
    plan.announce(config)
    if not config.dry_run:
        module.run(config)
