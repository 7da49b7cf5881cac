"""The S²R reproduction on the built-in arithmetic task: the main job for several seeds, then the
results table (mean ± std over seeds) and plots.

    python experiments/s2r_arith/reproduce.py --seeds=0,1,2 --root=runs/s2r_arith
    python experiments/s2r_arith/reproduce.py --seeds=0 --root=runs/s2r_arith --skip_runs   # tables and plots only

Each seed runs `python -m sv_jax.main --config=configs/rl.py --config.seed=S --workdir=ROOT/seed_S`
(base → data → sft → rl → eval, resuming whatever a seed already finished). Writes
`ROOT/results.md` and `ROOT/{accuracy_by_stage, self_correction, rl_curves, attempts}.png`. Plots need matplotlib
(`pip install -r experiments/requirements.txt`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
FIGURES = ("acc_first", "acc_final", "verify_acc", "error_recall", "correct_recall", "wrong_to_right",
           "right_to_wrong", "fix_rate", "repeat_rate", "break_rate", "mean_attempts")
SELF_CORRECTION = {"fix_rate": "retry right after a true catch", "repeat_rate": "retry repeats a rejected answer",
                   "break_rate": "ends wrong after a false rejection"}
RL_RUNS = {"S²R RL (process)": "rl", "S²R RL (outcome)": "rl_outcome"}
EVAL_NAMES = {"base": "base", "correct-only SFT": "sft_correct_only", "S²R SFT": "sft",
              "S²R RL (outcome)": "rl_outcome", "S²R RL (process)": "rl_process", "S²R offline RL": "offline"}


def run_seed(seed: int, workdir: Path, overrides: list[str]) -> None:
    command = [sys.executable, "-m", "sv_jax.main", "--config=configs/rl.py", f"--config.seed={seed}",
               f"--workdir={workdir}", *overrides]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, cwd=REPO, check=True)


def table(tables: list[dict]) -> tuple[str, dict]:
    """Markdown of every policy × figure as mean ± std over the seeds' `eval/table.json`."""
    lines = ["| policy | " + " | ".join(FIGURES) + " |", "|" + "---|" * (len(FIGURES) + 1)]
    summary = {}
    for policy in tables[0]:
        cells, summary[policy] = [], {}
        for figure in FIGURES:
            values = [t[policy][figure] for t in tables if t.get(policy, {}).get(figure) is not None]
            mean, std = (float(np.mean(values)), float(np.std(values))) if values else (None, None)
            summary[policy][figure] = (mean, std)
            cells.append("n/a" if mean is None else f"{mean:.3f} ± {std:.3f}")
        lines.append(f"| {policy} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n", summary


def plots(workdirs: list[Path], tables: list[dict], summary: dict, root: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    policies = list(summary)
    figure, (axis, paired) = plt.subplots(1, 2, figsize=(13, 4), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.38
    for offset, name in ((-width / 2, "acc_first"), (width / 2, "acc_final")):
        means = [summary[p][name][0] or 0.0 for p in policies]
        errors = [summary[p][name][1] or 0.0 for p in policies]
        axis.bar(np.arange(len(policies)) + offset, means, width, yerr=errors, capsize=3, label=name)
    axis.set_xticks(np.arange(len(policies)), policies, rotation=15)
    axis.set_ylabel("accuracy on the test draw")
    axis.set_ylim(0, 1)
    axis.legend()
    axis.set_title(f"Accuracy by stage ({len(workdirs)} seed{'s' * (len(workdirs) > 1)})")
    # The differences that matter are a few points: each seed's final accuracy against its own
    # correct-only SFT policy (the bar S²R must clear), one line per seed.
    contenders = [p for p in policies if p.startswith("S²R")]
    for workdir, row in zip(workdirs, tables):
        gains = [100 * (row[p]["acc_final"] - row["correct-only SFT"]["acc_final"]) if p in row else np.nan
                 for p in contenders]
        paired.plot(range(len(contenders)), gains, marker="o", alpha=0.8, label=workdir.name)
    paired.axhline(0, color="grey", linewidth=1)
    paired.set_xticks(range(len(contenders)), contenders, rotation=15)
    paired.set_ylabel("acc_final − correct-only SFT (points)")
    paired.set_title("Against correct-only SFT, per seed")
    paired.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(root / "accuracy_by_stage.png", dpi=120)

    figure, axis = plt.subplots(figsize=(9, 3.6))
    learners = [p for p in policies if summary[p]["fix_rate"][0] is not None]
    width = 0.8 / len(SELF_CORRECTION)
    for offset, (name, meaning) in enumerate(SELF_CORRECTION.items()):
        axis.bar(np.arange(len(learners)) + (offset - 1) * width, [summary[p][name][0] for p in learners], width,
                 yerr=[summary[p][name][1] for p in learners], capsize=3, label=f"{name}: {meaning}")
    axis.set_xticks(np.arange(len(learners)), learners, rotation=15)
    axis.set_ylim(0, 1)
    axis.set_ylabel("share (test draw)")
    axis.set_title("Self-correction after a rejection")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(root / "self_correction.png", dpi=120)

    figure, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for label, name in RL_RUNS.items():
        for index, workdir in enumerate(workdirs):
            path = workdir / name / "metrics.jsonl"
            if not path.exists():
                continue
            metrics = [json.loads(line) for line in path.read_text().splitlines()]
            steps = [m["step"] for m in metrics]
            for axis, key in zip(axes, ("reward", "acc_final", "kl", "fix_rate")):
                axis.plot(steps, [m.get(key, np.nan) for m in metrics], alpha=0.8, label=label if index == 0 else None,
                          color="C0" if name == "rl" else "C1")
    for axis, key in zip(axes, ("mean reward (final answer, ±1)", "rollout final accuracy", "KL to SFT",
                                "rollout fix_rate (gaps: no catch)")):
        axis.set_title(key)
        axis.set_xlabel("RL step")
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(root / "rl_curves.png", dpi=120)

    figure, axis = plt.subplots(figsize=(7, 3.6))
    for offset, (label, name) in enumerate(EVAL_NAMES.items()):
        counts: Counter = Counter()
        for workdir in workdirs:
            path = workdir / "eval" / f"{name}.records.jsonl"
            if path.exists():
                counts.update(len(json.loads(line)["attempts"]) for line in path.read_text().splitlines())
        total = sum(counts.values()) or 1
        attempts = np.arange(1, 5)
        width = 0.8 / len(EVAL_NAMES)
        axis.bar(attempts + (offset - len(EVAL_NAMES) / 2 + 0.5) * width, [counts[a] / total for a in attempts], width,
                 label=label)
    axis.set_xlabel("attempts in the response")
    axis.set_ylabel("share of test questions")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(root / "attempts.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--root", default="runs/s2r_arith")
    parser.add_argument("--skip_runs", action="store_true", help="only tabulate and plot finished seeds")
    parser.add_argument("overrides", nargs="*", help="extra --config.key=value flags for every seed")
    args = parser.parse_args()
    root = Path(args.root).absolute()
    workdirs = [root / f"seed_{seed}" for seed in map(int, args.seeds.split(","))]
    if not args.skip_runs:
        for seed, workdir in zip(map(int, args.seeds.split(",")), workdirs):
            run_seed(seed, workdir, args.overrides)
    tables = [json.loads((w / "eval" / "table.json").read_text()) for w in workdirs]
    markdown, summary = table(tables)
    (root / "results.md").write_text(markdown)
    print(markdown)
    plots(workdirs, tables, summary, root)


if __name__ == "__main__":
    main()
