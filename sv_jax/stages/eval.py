"""Stage `eval`: a policy's accuracy and self-verification figures on held-out questions.

The policy answers each question once (greedy by default) in the response format, stopping after a
"correct" verdict or `eval.max_attempts` attempts. Writes `workdir/eval/<name>.json` (the figures
of `sv_jax.evaluation`) and `workdir/eval/<name>.records.jsonl` (one record per question). A policy
named from the workdir (`base`, `sft`, `sft_correct_only`, `rl`, `offline`) is trained first if missing.
"""

from __future__ import annotations

import copy
import importlib
import json

import ml_collections
from etils import epath

from sv_jax.distributed import gather_by_index, map_shares, on_process_zero
from sv_jax.errors import UserError
from sv_jax.evaluation import Graded, read_attempts, score, truncate
from sv_jax.io import write_jsonl
from sv_jax.models import load_hf
from sv_jax.sampling import Sampler, SamplingSpec, stop_sequences_for
from sv_jax.sharding import gathers_sampling_weights, mesh_of
from sv_jax.tasks import arithmetic as task
from sv_jax.tasks import fill, response_format
from sv_jax.tasks.grading import grade_rows
from sv_jax.tasks.questions import Question, read_questions
from sv_jax.trajectory import build, parse

POLICIES = ("base", "sft", "sft_correct_only", "rl", "rl_outcome", "rl_process", "offline")


def policy_folder(config: ml_collections.ConfigDict) -> epath.Path:
    """The folder of `eval.policy` in the workdir (made first when missing), or `model.path`."""
    if not config.eval.policy:
        if not config.model.path:
            raise UserError("config keys 'eval.policy' and 'model.path' are both empty: name a policy to evaluate")
        return epath.Path(config.model.path)
    return ensure_policy(config, config.eval.policy)


def ensure_policy(config: ml_collections.ConfigDict, policy: str) -> epath.Path:
    """`workdir/<policy>/model`, trained first (with the config's settings) when it is missing.
    `rl` is the policy of `rl.reward`; `rl_<reward>` names one reward level's policy."""
    if policy not in POLICIES:
        raise UserError(f"config key 'eval.policy': {policy!r} is not one of {', '.join(POLICIES)}")
    if policy.startswith("rl"):
        from sv_jax.stages import rl

        reward = config.rl.reward if policy == "rl" else policy.removeprefix("rl_")
        policy = rl.output_name(config, reward)
    folder = epath.Path(config.workdir) / policy / "model"
    if not (folder / "config.json").exists():
        print(f"eval: no {policy} policy in the workdir; training it first")
        make = copy.deepcopy(config)
        if policy.startswith("sft"):
            make.sft.baseline = "correct_only" if policy == "sft_correct_only" else ""
            importlib.import_module("sv_jax.stages.sft").run(make)
        elif policy.startswith("rl"):
            rl.train_policy(make, reward)
        else:
            importlib.import_module(f"sv_jax.stages.{policy}").run(make)
    return folder


def questions_for(config: ml_collections.ConfigDict) -> list[Question]:
    if config.eval.dataset:
        return read_questions(config.eval.dataset, config.eval.split)
    return [Question(p.id, p.question, str(p.answer)) for p in
            task.draw_problems("test", config.eval.num_questions, config.eval.seed)]


def run(config: ml_collections.ConfigDict) -> dict:
    settings = config.eval
    questions = questions_for(config)  # bad input fails before any work
    policy = load_hf(policy_folder(config), config.model.dtype, config.model.param_dtype, mesh_of(config))
    tokenizer = policy.tokenizer
    template, cues = response_format(config)
    spec = SamplingSpec(max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                        stop_sequences=stop_sequences_for(tokenizer, (cues.verdict_correct,)),
                        vocab_size=len(tokenizer))
    prompts = map_shares(lambda q: tokenizer.encode(fill(template, question=q.question), add_special_tokens=False),
                         questions, "eval questions")
    sampler = Sampler(policy.config, policy.params, settings.batch_size,
                      gather_weights=gathers_sampling_weights(config))
    here = sampler.sample(prompts, spec, 1, settings.seed, progress=True)
    # each process grades the responses its devices sampled
    responses = {i: truncate(parse(tokenizer.decode(rows[0].token_ids, skip_special_tokens=True), cues), cues,
                             settings.max_attempts) for i, rows in here.items()}
    texts = [[a.text for a in r if a.kind == "solve"] for r in responses.values()]
    grades = iter(grade(config, [questions[i] for i in responses], texts, from_file=bool(settings.dataset)))
    local = {}
    for i, response in responses.items():
        joined = build(response, cues)[0]
        local[i] = (read_attempts(response, cues, lambda _: next(grades)), joined,
                     len(tokenizer.encode(joined, add_special_tokens=False)))
    attempts, joined, lengths = zip(*gather_by_index(local, len(questions)))
    figures = score(list(attempts), list(lengths))

    name = settings.name or settings.policy or "model"
    directory = epath.Path(config.workdir) / "eval"

    def write() -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n")
        write_jsonl(directory / f"{name}.records.jsonl", (
            {"id": q.id, "question": q.question, "answer": q.answer, "response": response,
             "attempts": [{"correct": a.correct, "verdict": a.verdict, "answer": a.answer} for a in graded]}
            for q, response, graded in zip(questions, joined, attempts)))

    on_process_zero(write, f"eval {name}")
    print(f"eval {name}: " + ", ".join(f"{k} {show(v)}" for k, v in figures.items()))
    return figures


def grade(config: ml_collections.ConfigDict, questions: list[Question], texts: list[list[str]],
          from_file: bool) -> list[Graded]:
    """Each attempt (in order, question by question) graded: exactly on the built-in task, with
    math-verify on questions from a file."""
    if not from_file:
        return [task.graded(task.problem_of(q.id), text) for q, row in zip(questions, texts) for text in row]
    results = grade_rows([q.answer for q in questions], texts, config.data.grader.workers, config.data.grader.timeout_s)
    return [graded for row in results for graded in row]


def show(value) -> str:
    return "n/a" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))
