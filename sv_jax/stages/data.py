"""Stage `data` (stage 0) on the built-in task: π₀'s own samples → trajectories with verifications.

Writes `workdir/data/trajectories.jsonl` (DESIGN.md section 3) and `workdir/data/summary.json`.
Runs `base` first when the workdir has no π₀ and `model.path` is not set.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import ml_collections
import numpy as np

from sv_jax.construction import Attempt, build_trajectory, difficulty
from sv_jax.io import write_jsonl
from sv_jax.models import load_hf
from sv_jax.sampling import Sampler, SamplingSpec
from sv_jax.tasks import arithmetic as task
from sv_jax.tasks import builtin
from sv_jax.trajectory import VERIFY, build, verdict


def policy_folder(config: ml_collections.ConfigDict) -> Path:
    """`model.path`, or the workdir's π₀ — pretrained first if it is not there yet."""
    if config.model.path:
        return Path(config.model.path)
    folder = Path(config.workdir) / "base" / "model"
    if not (folder / "config.json").exists():
        from sv_jax.stages import base

        print("data: no initial policy in the workdir; running stage base first")
        base.run(config)
    return folder


def run(config: ml_collections.ConfigDict) -> None:
    settings = config.data
    model = load_hf(policy_folder(config), config.model.dtype, config.model.param_dtype)
    tokenizer = model.tokenizer
    problems = task.draw_problems("train", settings.num_questions, config.seed)
    spec = SamplingSpec(max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                        stop_sequences=((tokenizer.eos_token_id,),), vocab_size=len(tokenizer))
    samples = Sampler(model.config, model.params, settings.batch_size).sample(
        [tokenizer.encode(builtin.prompt(p), add_special_tokens=False) for p in problems],
        spec, settings.k, config.seed, progress=True)

    rng = np.random.default_rng(config.seed)
    records, skipped, unanswered_samples = [], Counter(), 0
    for problem, question_samples in zip(problems, samples):
        texts = [tokenizer.decode(s.token_ids, skip_special_tokens=True).strip() for s in question_samples]
        attempts = [Attempt(t, None if task.final_answer(t) is None else str(task.final_answer(t)), task.grade(problem, t))
                    for t in texts]
        accuracy = sum(a.correct for a in attempts) / len(attempts)
        level = difficulty(accuracy, settings.level_bounds)
        if accuracy == 0 and settings.use_reference:
            reference = task.solution_text(task.solution_steps(problem))
            attempts.append(Attempt(reference, str(problem.answer), True))
        usable = [a for a in attempts if a.answer is not None]
        unanswered_samples += len(attempts) - len(usable)

        def verify(attempt: Attempt, style: str) -> str:
            return task.verification(problem, int(attempt.answer), style)

        actions = build_trajectory(usable, settings.rounds[level - 1], verify, settings.verification, rng)
        if actions is None:
            skipped["no right sample"] += 1
            continue
        records.append({
            "id": problem.id, "question": problem.question, "answer": str(problem.answer),
            "difficulty": level, "accuracy": accuracy,
            "actions": [{"kind": a.kind, "text": a.text, "correct": a.correct, "mask": a.mask} for a in actions],
            "text": build(actions, builtin.CUES)[0],
        })

    directory = Path(config.workdir) / "data"
    write_jsonl(directory / "trajectories.jsonl", records)
    summary = summarize(records, len(problems), settings.k, samples_accuracy(samples, problems, tokenizer), skipped)
    summary["samples_without_final_answer"] = unanswered_samples
    (directory / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


def samples_accuracy(samples, problems, tokenizer) -> float:
    graded = [task.grade(p, tokenizer.decode(s.token_ids, skip_special_tokens=True))
              for p, row in zip(problems, samples) for s in row]
    return float(np.mean(graded))


def summarize(records: list[dict], questions: int, k: int, accuracy: float, skipped: Counter) -> dict:
    """What a researcher checks before training on the data: levels, lengths, verdict balance."""
    verdicts_by_position: dict[int, list[bool]] = {}
    for record in records:
        verifications = [a for a in record["actions"] if a["kind"] == VERIFY]
        for position, action in enumerate(verifications, start=1):
            verdicts_by_position.setdefault(position, []).append(verdict(action["text"], builtin.CUES) is True)
    return {
        "questions": questions,
        "samples": questions * k,
        "sample_accuracy": accuracy,
        "trajectories": len(records),
        "levels": {str(level): count for level, count in sorted(Counter(r["difficulty"] for r in records).items())},
        "mean_actions": float(np.mean([len(r["actions"]) for r in records])) if records else 0.0,
        "correct_verdict_share_by_position": {str(p): float(np.mean(v)) for p, v in sorted(verdicts_by_position.items())},
        "skipped": dict(skipped),
    }
