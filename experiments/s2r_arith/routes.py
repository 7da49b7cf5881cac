"""Each policy's greedy accuracy by solution route: the built-in task's test questions answered once
from each route's first step, so that a route the policy seldom picks is measured on every question.

A retry by another route can fix a wrong attempt only where that route is right; π₀'s own figures
are in `workdir/base/eval.json` (`accuracy_by_route`, the routes it learned). Any HF folder of the
task's policies (`--routes direct,parts` for one whose π₀ learned two):

    python experiments/s2r_arith/routes.py runs/s2r_arith/seed_0/{base,sft,rl}/model
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from configs import default  # noqa: E402
from sv_jax.models import load_hf  # noqa: E402
from sv_jax.sampling import Sampler  # noqa: E402
from sv_jax.sharding import mesh_of  # noqa: E402
from sv_jax.stages.base import measure_routes  # noqa: E402
from sv_jax.tasks import arithmetic  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path, help="HF model folders")
    parser.add_argument("--questions", type=int, default=500, help="test questions (default: 500)")
    parser.add_argument("--seed", type=int, default=0, help="of the test draw (default: 0)")
    parser.add_argument("--routes", default=",".join(arithmetic.ROUTES),
                        help=f"comma-separated (default: {','.join(arithmetic.ROUTES)})")
    args = parser.parse_args()
    routes = tuple(args.routes.split(","))
    if not set(routes) <= set(arithmetic.ROUTES):
        parser.error(f"--routes {args.routes}: known routes are {', '.join(arithmetic.ROUTES)}")
    problems = arithmetic.draw_problems("test", args.questions, args.seed)
    families = [str(f) for f in arithmetic.FAMILIES]
    print("| model | route | all | " + " | ".join(f"family {f}" for f in families) + " | where the others are wrong |")
    print("|---|---|---|" + "---|" * len(families) + "---|")
    for folder in args.models:
        model = load_hf(folder, mesh=mesh_of(default.get_config()))
        figures = measure_routes(Sampler(model.config, model.params), model.tokenizer, problems, routes)
        for route, by in figures.items():
            cells = [by["all"], *(by.get(f, float("nan")) for f in families), by["where_others_wrong"]]
            print(f"| {folder} | {route} | " + " | ".join(f"{cell:.3f}" for cell in cells) + " |")


if __name__ == "__main__":
    main()
