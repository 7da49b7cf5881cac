"""Stage `data` (stage 0): π₀'s own samples → difficulty-aware trajectories with verifications.

Questions come from the built-in task (default: its solver writes exact verifications of both
styles) or from `data.questions` (a questions JSONL or TFDS folder: graded with math-verify, its
verifications written by a verifier model and kept only when their verdict agrees with the grader).
Writes `workdir/data/{trajectories.jsonl, tfds/, summary.json}`; runs `base` first when the workdir
has no π₀ and `model.path` is not set.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Hashable, Protocol, Sequence

import ml_collections
import numpy as np
from etils import epath

from sv_jax.construction import (Attempt, RouteOf, build_trajectory, candidates, choose_style, difficulty,
                                 with_false_rejection)
from sv_jax.datasets import prepare_tfds
from sv_jax.distributed import gather_by_index, map_shares, on_process_zero
from sv_jax.errors import UserError
from sv_jax.io import write_jsonl
from sv_jax.models import LoadedModel, load_hf
from sv_jax.sampling import Sampler, SamplingSpec, stop_sequences_for
from sv_jax.sharding import gathers_sampling_weights, mesh_of
from sv_jax.stages import base
from sv_jax.tasks import arithmetic as task
from sv_jax.tasks import builtin, fill, response_format
from sv_jax.tasks.grading import grade_rows
from sv_jax.tasks.questions import Question, read_questions
from sv_jax.trajectory import SOLVE, VERIFY, Action, Cues, build, parse, verdict

VerifyRequest = tuple[int, Attempt, str, bool]  # (question index, attempt, style, the verdict wanted)
RETRY_ROUTES = ("other", "any")  # data.retry_route: a retry after a rejection takes another route, or any


class Source(Protocol):
    """Where stage 0's questions come from, and how their samples are graded and verified."""

    questions: list[Question]
    cues: Cues
    right_per_question: int  # distinct right attempts (with routes: routes) a question's candidates keep

    def prompt(self, question: Question) -> str: ...

    def grade(self, questions: list[int], texts: list[list[str]]) -> list[list[Attempt]]:
        """The samples `texts[j]` of question `questions[j]` (an index), graded."""
        ...

    def verify(self, requests: Sequence[VerifyRequest]) -> list[str | None]: ...

    def route(self, question: int, attempt: Attempt) -> Hashable:
        """The approach `attempt` takes to question `question` (an index)."""
        ...

    def references(self, question: int) -> list[Attempt]:
        """Right solutions of question `question` (an index) by every route the source knows."""
        ...


def policy_folder(config: ml_collections.ConfigDict) -> epath.Path:
    """`model.path`, or the workdir's π₀ — pretrained first if it is not there yet."""
    if config.model.path:
        return epath.Path(config.model.path)
    folder = epath.Path(config.workdir) / "base" / "model"
    if not (folder / "config.json").exists():
        print("data: no initial policy in the workdir; running stage base first")
        base.run(config)
    return folder


def run(config: ml_collections.ConfigDict) -> None:
    settings = config.data
    if not 0 <= settings.false_rejections <= 1:
        raise UserError(f"config key 'data.false_rejections' ({settings.false_rejections}) must be between 0 and 1")
    if settings.correct_from_check and settings.questions:
        raise UserError("config key 'data.correct_from_check' needs the built-in task: a questions file's checks "
                        "carry no difference its source can read a retry off")
    if settings.retry_route not in RETRY_ROUTES:
        raise UserError(f"config key 'data.retry_route' ({settings.retry_route!r}) must be one of "
                        f"{', '.join(RETRY_ROUTES)}")
    questions = read_questions(settings.questions, settings.split) if settings.questions else None  # fail early
    policy = load_hf(policy_folder(config), config.model.dtype, config.model.param_dtype, mesh_of(config))
    source: Source = (QuestionsSource(config, questions, policy) if questions is not None
                      else BuiltinSource(settings.num_questions, config.seed,
                                         builtin.learned_routes(base.route_shares(config.base))))
    tokenizer = policy.tokenizer
    spec = SamplingSpec(max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                        stop_sequences=stop_sequences_for(tokenizer, (source.cues.verify, source.cues.retry)),
                        vocab_size=len(tokenizer))
    prompts = map_shares(lambda q: tokenizer.encode(source.prompt(q), add_special_tokens=False), source.questions,
                         "questions")
    sampler = Sampler(policy.config, policy.params, settings.batch_size,
                      gather_weights=gathers_sampling_weights(config))
    here = sampler.sample(prompts, spec, settings.k, config.seed, progress=True)
    # A sample that starts to verify or retry unprompted is cut there: an attempt is one solve action,
    # kept as sampled (its leading space included) so that SFT sees the tokens π₀ writes. Each
    # process grades the samples its devices made.
    texts = {i: [parse(tokenizer.decode(s.token_ids, skip_special_tokens=True), source.cues)[0].text for s in row]
             for i, row in here.items()}
    graded = source.grade(list(texts), list(texts.values()))
    attempts = gather_by_index(dict(zip(texts, graded)), len(prompts))
    # false rejections draw from their own stream, so that their share leaves every other draw as it was
    records, summary = construct(source, attempts, settings, np.random.default_rng(config.seed),
                                 np.random.default_rng([config.seed, 1]))

    directory = epath.Path(config.workdir) / "data"

    def write() -> None:
        write_jsonl(directory / "trajectories.jsonl", records)
        if settings.tfds:
            prepare_tfds("trajectories", {"train": directory / "trajectories.jsonl"}, directory / "tfds")
        (directory / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    on_process_zero(write, "data trajectories")
    print(json.dumps(summary, indent=2))


def construct(source: Source, attempts: list[list[Attempt]], settings: ml_collections.ConfigDict,
              rng: np.random.Generator, rejections_rng: np.random.Generator) -> tuple[list[dict], dict]:
    """Graded samples → levels → verified candidate attempts → trajectory records, and the summary.
    A `data.false_rejections` share of the questions at one-round levels open with a false rejection;
    with `data.retry_route=other`, only where a right attempt by another route can follow it."""
    def route_of(index: int) -> RouteOf | None:
        return (lambda attempt: source.route(index, attempt)) if settings.retry_route == "other" else None

    levels, pools, requests = [], [], []
    for index, (question, sampled) in enumerate(zip(source.questions, attempts)):
        accuracy = sum(a.correct for a in sampled) / len(sampled)
        levels.append((accuracy, difficulty(accuracy, settings.level_bounds)))
        pool = list(sampled)
        if accuracy == 0 and settings.use_reference and question.solution:
            pool.append(Attempt(question.solution, question.answer, True))
        if settings.reference_routes:  # after π₀'s own: candidates take the first right attempt of a route
            pool += source.references(index)
        pools.append(pool)
        requests += [(index, a, choose_style(settings.verification, rng, settings.confirmative_share), a.correct)
                     for a in candidates(pool, source.right_per_question, route_of(index))]
    for index, (pool, (_, level)) in enumerate(zip(pools, levels)):
        if settings.rounds[level - 1] == 1 and rejections_rng.random() < settings.false_rejections:
            for attempt in candidates(pool, source.right_per_question, route_of(index)):
                if attempt.correct:
                    style = choose_style(settings.verification, rejections_rng, settings.confirmative_share)
                    # a correction read off a confirmative false rejection would teach a wrong answer
                    if not (settings.correct_from_check and style == "confirmative"):
                        requests.append((index, attempt, style, False))
    verified = source.verify(requests)
    kept: list[dict[Attempt, str]] = [{} for _ in pools]
    rejecting: list[dict[str, str]] = [{} for _ in pools]  # attempt text → a check that wrongly rejects it
    for (index, attempt, _, wanted), text in zip(requests, verified):
        if text is not None and wanted == attempt.correct:
            kept[index][attempt] = text
        elif text is not None:
            rejecting[index][attempt.text] = text

    records, skipped, corrections = [], Counter(), 0
    for index, (question, (accuracy, level), pool, verifications, false_checks) in enumerate(
            zip(source.questions, levels, pools, kept, rejecting)):
        routes = route_of(index)
        actions = build_trajectory(pool, settings.rounds[level - 1], verifications, rng, routes)
        if actions is None:
            skipped["no right attempt" if not any(a.correct for a in pool) else "no kept verification of a right attempt"] += 1
            continue
        solution = actions[-2].text  # the right attempt standing alone, before any correction
        if settings.correct_from_check and len(actions) > 2:
            retry = source.correction(index, actions[-4].text, actions[-3].text)
            if retry is not None:
                actions[-2] = Action(SOLVE, retry, correct=True, mask=1)
                corrections += 1
        if actions[0].text in false_checks:  # asked for one-round levels only
            retry = None if routes is None else _retry_by_another_route(actions[0].text, verifications, routes)
            if routes is None or retry is not None:
                actions = with_false_rejection(actions, false_checks[actions[0].text], retry)
        records.append({
            "id": question.id, "question": question.question, "answer": question.answer,
            "difficulty": level, "accuracy": accuracy, "solution": solution,
            "actions": [{"kind": a.kind, "text": a.text, "correct": a.correct, "mask": a.mask} for a in actions],
            "text": build(actions, source.cues)[0],
        })
    summary = summarize(records, source.cues, len(source.questions), settings.k, attempts, skipped)
    summary["verification_keep_rate"] = sum(t is not None for t in verified) / max(len(verified), 1)
    summary["corrections"] = corrections
    return records, summary


def _retry_by_another_route(rejected: str, verifications: dict[Attempt, str],
                            route_of: RouteOf) -> tuple[Attempt, str] | None:
    """A right attempt by another route than the falsely rejected one's (text `rejected`), with the
    check that confirms it; None if the question has none."""
    route = next(route_of(a) for a in verifications if a.text == rejected)
    return next(((a, check) for a, check in verifications.items() if a.correct and route_of(a) != route), None)


def summarize(records: list[dict], cues: Cues, questions: int, k: int, attempts: list[list[Attempt]],
              skipped: Counter) -> dict:
    """What a researcher checks before training on the data: levels, lengths, verdict balance."""
    verdicts_by_position: dict[int, list[bool]] = {}
    for record in records:
        # the verdicts SFT learns: a false rejection (mask 0) is shown, not taught
        verifications = [a for a in record["actions"] if a["kind"] == VERIFY and a["mask"]]
        for position, action in enumerate(verifications, start=1):
            verdicts_by_position.setdefault(position, []).append(verdict(action["text"], cues) is True)
    flat = [a for row in attempts for a in row]
    return {
        "questions": questions,
        "samples": questions * k,
        "sample_accuracy": float(np.mean([a.correct for a in flat])) if flat else 0.0,
        "samples_without_final_answer": sum(a.answer is None for a in flat),
        "trajectories": len(records),
        "levels": {str(level): count for level, count in sorted(Counter(r["difficulty"] for r in records).items())},
        "mean_actions": float(np.mean([len(r["actions"]) for r in records])) if records else 0.0,
        "false_rejections": sum(a["kind"] == VERIFY and not a["mask"] for r in records for a in r["actions"]),
        "correct_verdict_share_by_position": {str(p): float(np.mean(v)) for p, v in sorted(verdicts_by_position.items())},
        "skipped": dict(skipped),
    }


class BuiltinSource:
    """The built-in task's training draw; the task's solver grades exactly and writes every check."""

    cues = builtin.CUES

    def __init__(self, count: int, seed: int, routes: tuple[str, ...] = task.ROUTES):
        self.problems = task.draw_problems("train", count, seed)
        self.routes = routes  # those π₀ learned: `data.reference_routes` writes solutions by these
        self.right_per_question = max(2, len(routes))
        self.slips = np.random.default_rng([seed, 2])
        self.questions = [
            Question(p.id, p.question, str(p.answer), " " + task.solution_text(task.solution_steps(p)))
            for p in self.problems
        ]

    def prompt(self, question: Question) -> str:
        return builtin.PROMPT.format(question=question.question)

    def grade(self, questions: list[int], texts: list[list[str]]) -> list[list[Attempt]]:
        graded = []
        for problem, row in zip((self.problems[i] for i in questions), texts):
            answers = [task.final_answer(text) for text in row]
            graded.append([Attempt(text, None if a is None else str(a), a == problem.answer) for text, a in zip(row, answers)])
        return graded

    def verify(self, requests: Sequence[VerifyRequest]) -> list[str | None]:
        # After the cue, as after the checking exercises' "Check:" that π₀ learned to check from, by
        # the route the attempt did not take. A verdict wanted against the truth is a check with a slip in it.
        checks = []
        for i, attempt, style, wanted in requests:
            problem, proposed, route = self.problems[i], int(attempt.answer), self.route(i, attempt)
            checks.append(" " + (task.verification(problem, proposed, style, route) if wanted == attempt.correct
                                 else task.slipped_verification(problem, proposed, style, self.slips, route)))
        return checks

    def route(self, question: int, attempt: Attempt) -> str:
        return task.solution_route(self.problems[question], attempt.text)

    def correction(self, question: int, rejected: str, check: str) -> str | None:
        """A retry read off `check`, which rejected the attempt `rejected`, where it is confirmative
        (`data.correct_from_check`); None after a problem-solving check."""
        problem, proposed = self.problems[question], task.final_answer(rejected)
        if task.written_style(problem, proposed, check) != "confirmative":
            return None
        return " " + task.correction(problem, proposed, task.check_difference(check))

    def references(self, question: int) -> list[Attempt]:
        problem = self.problems[question]
        return [Attempt(" " + task.solution_text(task.solution_steps(problem, route=route)), str(problem.answer), True)
                for route in self.routes]


class QuestionsSource:
    """A questions file: math-verify grades; a verifier model writes verifications in the asked
    style, up to `tries` samples each, and the first with the verdict wanted (the grader's, or against it for
    a false rejection) is kept."""

    right_per_question = 2

    def __init__(self, config: ml_collections.ConfigDict, questions: list[Question], policy: LoadedModel):
        settings = config.data
        self.questions = questions
        self.template, self.cues = response_format(config)
        self.settings = settings
        self.seed = config.seed
        self.gather_weights = gathers_sampling_weights(config)
        if "{question}" not in self.template:
            raise UserError("config key 'data.prompt' must contain {question}")
        for style, template in settings.verifier.prompts.items():
            if "{question}" not in template or "{attempt}" not in template:
                raise UserError(f"config key 'data.verifier.prompts.{style}' must contain {{question}} and {{attempt}}")
        verifier = settings.verifier
        self.verifier = (load_hf(verifier.path, config.model.dtype, config.model.param_dtype, mesh_of(config))
                         if verifier.path else policy)

    def prompt(self, question: Question) -> str:
        return fill(self.template, question=question.question)

    def grade(self, questions: list[int], texts: list[list[str]]) -> list[list[Attempt]]:
        grader = self.settings.grader
        results = grade_rows([self.questions[i].answer for i in questions], texts, grader.workers, grader.timeout_s)
        return [[Attempt(text, answer, correct) for text, (correct, answer) in zip(row, graded)]
                for row, graded in zip(texts, results)]

    def verify(self, requests: Sequence[VerifyRequest]) -> list[str | None]:
        verifier, settings = self.verifier, self.settings.verifier
        tokenizer = verifier.tokenizer
        prompts = map_shares(lambda request: tokenizer.encode(
            fill(settings.prompts[request[2]], question=self.questions[request[0]].question, attempt=request[1].text,
                 correct=self.cues.verdict_correct, incorrect=self.cues.verdict_incorrect),
            add_special_tokens=False), requests, "verification requests")
        spec = SamplingSpec(
            max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
            stop_sequences=stop_sequences_for(tokenizer, (self.cues.verdict_correct, self.cues.verdict_incorrect)),
            vocab_size=len(tokenizer))
        here = Sampler(verifier.config, verifier.params, self.settings.batch_size,
                       gather_weights=self.gather_weights).sample(prompts, spec, settings.tries, self.seed + 1,
                                                                  progress=True)
        kept = {}  # each process reads the tries its devices sampled
        for r, tries in here.items():
            wanted = requests[r][3]
            texts = [tokenizer.decode(s.token_ids, skip_special_tokens=True).strip() for s in tries]
            agreeing = [t for t in texts if verdict(t, self.cues) == wanted and self._is_one_action(t)]
            kept[r] = agreeing[0] if agreeing else None
        return gather_by_index(kept, len(requests))

    def route(self, question: int, attempt: Attempt) -> str:
        return attempt.text  # no routes known: any other right solution counts as another way

    def references(self, question: int) -> list[Attempt]:
        return []  # a file's one reference solution serves `data.use_reference`

    def _is_one_action(self, text: str) -> bool:
        return self.cues.verify not in text and self.cues.retry not in text

