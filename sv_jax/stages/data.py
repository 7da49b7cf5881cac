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
from sv_jax.sampling import Sampler, SamplingSpec, stop_sequences_for
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
                        stop_sequences=stop_sequences_for(tokenizer, ()), vocab_size=len(tokenizer))
    samples = Sampler(model.config, model.params, settings.batch_size).sample(
        [tokenizer.encode(builtin.prompt(p), add_special_tokens=False) for p in problems],
        spec, settings.k, config.seed, progress=True)

    rng = np.random.default_rng(config.seed)
    records, skipped, unanswered_samples, right_samples = [], Counter(), 0, 0
    for problem, question_samples in zip(problems, samples):
        attempts = [graded_attempt(problem, tokenizer.decode(s.token_ids, skip_special_tokens=True).strip())
                    for s in question_samples]
        right_samples += sum(a.correct for a in attempts)
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
    summary = summarize(records, len(problems), settings.k, right_samples / (len(problems) * settings.k), skipped)
    summary["samples_without_final_answer"] = unanswered_samples
    (directory / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


def graded_attempt(problem: task.Problem, text: str) -> Attempt:
    answer = task.final_answer(text)
    return Attempt(text, None if answer is None else str(answer), answer == problem.answer)


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
