"""Stage `rl` (stage 2): PPO on the S²R SFT policy with outcome- or process-level rewards.

Each step samples `samples_per_question` responses to a batch of training questions with the
current policy (one jitted program), grades and scores them on the host (`sv_jax.training.rewards`),
turns the rewards into per-token advantages (critic-free baselines, or GAE with a value head), and
runs `epochs` passes of jitted PPO updates over minibatches of the rollout. With `rl.branches`, a
step also resamples groups of retries from where its own responses' first checks rejected an
attempt, so that retries are judged against retries from the same start. The policy written to
`workdir/rl` learns `rl.reward`; `rl.compare` trains the other reward levels into `workdir/rl_<reward>`,
and with `rl.report` the stage ends with the recipe's table on the test draw (the main job).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from tqdm.auto import tqdm

from sv_jax.checkpoint import Checkpointer
from sv_jax.compilation import shared_jit
from sv_jax.detokenize import token_pieces
from sv_jax.distributed import gather_by_index, map_shares, on_process_zero, to_global, to_host
from sv_jax.errors import UserError, require_steps
from sv_jax.evaluation import self_correction
from sv_jax.io import read_jsonl
from sv_jax.models import LoadedModel, load_hf, param_shardings, save_hf
from sv_jax.models.config import REMAT_POLICIES
from sv_jax.sampling import Sampler, SamplingSpec, prompt_bucket, stop_sequences_for
from sv_jax.sharding import data_parallelism, gathers_sampling_weights, mesh_of, replicated, rows_sharding
from sv_jax.stages import data
from sv_jax.stages import eval as evaluate
from sv_jax.stages import sft
from sv_jax.tasks import fill, response_format
from sv_jax.tasks.questions import Question, read_questions
from sv_jax.training.advantages import KeyedMeanBaseline, gae, whiten
from sv_jax.training.lm import placed_train_state
from sv_jax.training.loop import MetricsWriter, check_finite
from sv_jax.training.optimizer import make_optimizer
from sv_jax.training.ppo import PPOStep, init_value_head, policy_outputs
from sv_jax.training.rewards import (RewardValues, Scored, action_end_tokens, outcome_tokens, reward_values,
                                    score_response)
from sv_jax.training.rollout import (BASELINES, Packing, outcome_credit, pack_rows, place, process_credit,
                                     response_rewards, retry_point, reward_to_go, row_ladder)
from sv_jax.trajectory import SOLVE, VERIFY, Cues, parse, verdict

REWARDS = ("outcome", "process")
TABLE = (("base", "base"), ("sft_correct_only", "correct-only SFT"), ("sft", "S²R SFT"),
         ("rl_outcome", "S²R RL (outcome)"), ("rl_process", "S²R RL (process)"), ("offline", "S²R offline RL"))
TABLE_FIGURES = ("acc_first", "acc_final", "verify_acc", "error_recall", "wrong_to_right", "right_to_wrong",
                 "fix_rate", "repeat_rate", "break_rate", "mean_attempts")


def output_name(config: ml_collections.ConfigDict, reward: str) -> str:
    """`rl` for the run's own reward level, `rl_<reward>` for a comparison."""
    return "rl" if reward == config.rl.reward else f"rl_{reward}"


def run(config: ml_collections.ConfigDict) -> None:
    check(config)
    for reward in (config.rl.reward, *config.rl.compare):
        evaluate.ensure_policy(config, f"rl_{reward}")  # trained unless already exported
    if config.rl.report:
        report(config)


def check(config: ml_collections.ConfigDict) -> None:
    """Raises UserError for a bad `rl` setting, or a bad `sft` one: checked now, not when the report
    trains the correct-only baseline after both RL runs."""
    _check(config.rl)
    sft.check(config)


def _check(settings: ml_collections.ConfigDict) -> None:
    require_steps(settings, "rl", "steps")
    for key, rewards in (("reward", (settings.reward,)), ("compare", settings.compare)):
        for reward in rewards:
            if reward not in REWARDS:
                raise UserError(f"config key 'rl.{key}': {reward!r} is not one of {', '.join(REWARDS)}")
    choices = {"baseline": BASELINES, "process_credit": ("action", "reward_to_go"),
               "advantage": ("baseline", "gae"), "kl_in": ("loss", "reward"), "remat": REMAT_POLICIES}
    for key, known in choices.items():
        if settings[key] not in known:
            raise UserError(f"config key 'rl.{key}': {settings[key]!r} is not one of {', '.join(known)}")
    if not 0 <= settings.min_level <= 5:
        raise UserError(f"config key 'rl.min_level' ({settings.min_level}) must be a difficulty level from 0 (every "
                        "question) to 5")
    rows = settings.questions_per_step * settings.samples_per_question
    if rows % settings.minibatches:
        raise UserError(f"config key 'rl.minibatches' ({settings.minibatches}) must divide the rollout's "
                        f"{rows} rows (rl.questions_per_step x rl.samples_per_question)")
    if settings.micro_batches < 1 or rows // settings.minibatches % settings.micro_batches:
        raise UserError(f"config key 'rl.micro_batches' ({settings.micro_batches}) must be 1 or more and divide a "
                        f"minibatch's {rows // settings.minibatches} rows (rl.questions_per_step x "
                        "rl.samples_per_question / rl.minibatches)")
    if settings.row_buckets < 1:
        raise UserError(f"config key 'rl.row_buckets' ({settings.row_buckets}) must be 1 or more")
    if settings.retry_kl < 0:
        raise UserError(f"config key 'rl.retry_kl' ({settings.retry_kl}) must be 0 or more")
    if settings.branches < 0:
        raise UserError(f"config key 'rl.branches' ({settings.branches}) must be 0 (none) or more")
    if settings.branches and (settings.advantage, settings.baseline) != ("baseline", "leave_one_out"):
        raise UserError("config key 'rl.branches': branches are judged by the leave-one-out baseline of their "
                        "group; set rl.advantage=baseline and rl.baseline=leave_one_out")
    if settings.baseline == "leave_one_out" and settings.advantage == "baseline" and settings.samples_per_question < 2:
        raise UserError("config key 'rl.samples_per_question' must be at least 2 for a leave-one-out baseline")


@dataclasses.dataclass
class Rollout:
    """One step's rows. Each holds a prompt (a question, plus the `given` start of a response for a
    branch), the tokens the policy sampled after it, and the whole response scored. The first
    `fresh` rows answer the step's questions (k rows a question); branches follow, k rows each."""

    prompts: list[list[int]]
    sampled: list[list[int]]
    given: list[int]
    scored: list[Scored]
    levels: list[int]
    questions: list[Question]
    fresh: int


class Rollouts:
    """Samples, grades and scores one step's responses; everything depends on the step alone."""

    def __init__(self, config: ml_collections.ConfigDict, policy: LoadedModel):
        self.config, self.settings = config, config.rl
        self.tokenizer = policy.tokenizer
        template, self.cues = response_format(config)
        questions = training_questions(config)
        levels = _levels(config, questions)
        # `rl.min_level` keeps the questions stage 0 found hard, where first attempts fail and retries happen
        kept = [i for i, level in enumerate(levels) if level >= self.settings.min_level]
        if not kept:
            raise UserError(f"config key 'rl.min_level' ({self.settings.min_level}): no training question has a "
                            "stage 0 difficulty level that high")
        self.questions, self.levels = [questions[i] for i in kept], [levels[i] for i in kept]
        self.prompts = map_shares(
            lambda q: self.tokenizer.encode(fill(template, question=q.question), add_special_tokens=False),
            self.questions, "training questions")
        self.spec = SamplingSpec(max_new_tokens=self.settings.max_new_tokens, temperature=self.settings.temperature,
                                 stop_sequences=stop_sequences_for(self.tokenizer, (self.cues.verdict_correct,)),
                                 vocab_size=len(self.tokenizer))
        # every step's questions are padded as the longest of all: one sampling program for the run
        longest = max(map(len, self.prompts))
        self.sampler = Sampler(policy.config, policy.params, self.settings.questions_per_step, longest,
                               gather_weights=gathers_sampling_weights(config))
        # a row fits the longest prompt and a full response; scoring and updates pack several a row
        self.row_length = prompt_bucket(longest) + self.settings.max_new_tokens

    def chosen(self, step: int) -> np.ndarray:
        """The step's questions: a fresh permutation of the training questions each epoch."""
        per_step, count = self.settings.questions_per_step, len(self.questions)
        positions = [divmod(p, count) for p in range(step * per_step, (step + 1) * per_step)]
        orders = {epoch: np.random.default_rng([self.config.seed, epoch]).permutation(count)
                  for epoch in {epoch for epoch, _ in positions}}
        return np.array([orders[epoch][within] for epoch, within in positions])

    def __call__(self, params, step: int, values: RewardValues) -> Rollout:
        chosen = self.chosen(step)
        k = self.settings.samples_per_question
        self.sampler.params = params
        prompts, questions = [self.prompts[i] for i in chosen], [self.questions[i] for i in chosen]
        sampled, scored = self.responses(prompts, questions, [[]] * len(chosen), self.config.seed * 1_000_003 + step,
                                          values)
        rollout = Rollout([p for p in prompts for _ in range(k)], sampled, [0] * len(sampled), scored,
                          [self.levels[i] for i in chosen for _ in range(k)], [q for q in questions for _ in range(k)],
                          len(sampled))
        return self.branch(rollout, step, values) if self.settings.branches else rollout

    def responses(self, prompts: list[list[int]], questions: list[Question], given: list[list[int]], seed: int,
                   values: RewardValues) -> tuple[list[list[int]], list[Scored]]:
        """k responses to each prompt (which ends with the `given` start of a response), graded and
        scored by the process whose devices sampled them; every process gets all, prompt by prompt."""
        k, budget = self.settings.samples_per_question, self.settings.max_new_tokens
        here = self.sampler.sample(prompts, self.spec, k, seed=seed)
        # a response's budget counts its given start too
        sampled = {i: [s.token_ids[: budget - len(given[i])] for s in rows] for i, rows in here.items()}
        scored = iter(self.score([questions[i] for i in sampled for _ in range(k)],
                                 [given[i] for i in sampled for _ in range(k)],
                                 [tokens for rows in sampled.values() for tokens in rows], values))
        local = {i: (rows, [next(scored) for _ in rows]) for i, rows in sampled.items()}
        responses = gather_by_index(local, len(prompts))
        return [t for rows, _ in responses for t in rows], [s for _, scores in responses for s in scores]

    def score(self, questions: list[Question], given: list[list[int]], sampled: list[list[int]],
              values: RewardValues) -> list[Scored]:
        """Each whole response (`given` tokens, then `sampled` ones) graded and scored."""
        pieces = [token_pieces(self.tokenizer, [*g, *s]) for g, s in zip(given, sampled)]
        solves = [[a.text for a in parse("".join(p), self.cues) if a.kind == SOLVE] for p in pieces]
        grades = iter(evaluate.grade(self.config, questions, solves, from_file=bool(self.config.data.questions)))
        stops = set(self.spec.stop_sequences)
        return [score_response(p, _ended(s, stops), self.cues, lambda _: next(grades), values)
                for p, s in zip(pieces, sampled)]

    def branch(self, rollout: Rollout, step: int, values: RewardValues) -> Rollout:
        """`rl.branches` groups of k retries added to the rollout, each sampled after the first
        verification of one of its responses that rejected its attempt (rightly or not), so that the
        group's leave-one-out baseline judges retries from the same start."""
        points = [(row, at) for row, scored in enumerate(rollout.scored)
                  if (at := retry_point(scored, self.cues)) is not None]
        if not points:
            return rollout
        rng = np.random.default_rng([self.config.seed, step])
        count = self.settings.branches
        starts = [points[i] for i in rng.choice(len(points), count, replace=len(points) < count)]
        given = [rollout.sampled[row][:at] for row, at in starts]
        sampled, scored = self.responses([[*rollout.prompts[row], *g] for (row, _), g in zip(starts, given)],
                                          [rollout.questions[row] for row, _ in starts], given,
                                          int(rng.integers(2**31)), values)
        k = self.settings.samples_per_question
        rows = [(row, at) for row, at in starts for _ in range(k)]
        return Rollout(rollout.prompts + [rollout.prompts[row] + rollout.sampled[row][:at] for row, at in rows],
                       rollout.sampled + sampled, rollout.given + [at for _, at in rows], rollout.scored + scored,
                       rollout.levels + [rollout.levels[row] for row, _ in rows],
                       rollout.questions + [rollout.questions[row] for row, _ in rows], rollout.fresh)


def training_questions(config: ml_collections.ConfigDict) -> list[Question]:
    """Stage 0's questions: the built-in training draw, or `data.questions`."""
    if config.data.questions:
        return read_questions(config.data.questions, config.data.split)
    return data.BuiltinSource(config.data.num_questions, config.seed).questions


def _levels(config: ml_collections.ConfigDict, questions: list[Question]) -> list[int]:
    """Each question's stage 0 difficulty level (0 where stage 0 built no trajectory for it)."""
    path = epath.Path(config.workdir) / "data" / "trajectories.jsonl"
    known = {str(r["id"]): int(r["difficulty"]) for r in read_jsonl(path)} if path.exists() else {}
    return [known.get(str(q.id), 0) for q in questions]


def _ended(token_ids: list[int], stops: set[tuple[int, ...]]) -> bool:
    return any(tuple(token_ids[len(token_ids) - len(s):]) == s for s in stops if len(token_ids) >= len(s))


def train_policy(config: ml_collections.ConfigDict, reward: str) -> epath.Path:
    """PPO from the S²R SFT policy with `reward`; returns the exported policy's folder."""
    settings = config.rl
    name = output_name(config, reward)
    directory = epath.Path(config.workdir) / name
    mesh = mesh_of(config)
    policy = load_hf(evaluate.ensure_policy(config, "sft"), config.model.dtype, config.model.param_dtype, mesh)
    rollouts = Rollouts(config, policy)
    values = reward_values(settings.rewards, "rl.rewards")
    optimizer, schedule = make_optimizer(settings.learning_rate, settings.steps * settings.epochs * settings.minibatches,
                                         settings.warmup_steps, 0.0, settings.clip_norm)
    reference = policy.params
    params, param_layout = {"policy": reference}, {"policy": param_shardings(policy.config, mesh)}
    if settings.advantage == "gae":
        params["value"] = init_value_head(policy.config)
        param_layout["value"] = replicated(mesh)
    state, layout = placed_train_state(params, optimizer, param_layout, mesh)
    rows = rows_sharding(mesh)
    update = shared_jit(PPOStep(policy.config.replace(remat=settings.remat), optimizer, settings.temperature,
                                settings.clip, settings.kl_coef if settings.kl_in == "loss" else 0.0,
                                settings.entropy_coef, settings.value_coef, settings.micro_batches), donate_argnums=0,
                        in_shardings=(layout, rows), out_shardings=(layout, replicated(mesh)))
    # one program scores the policy and the reference (given the policy's value head, its estimates unused)
    score = shared_jit(functools.partial(policy_outputs, policy.config, temperature=settings.temperature),
                       in_shardings=(layout.params, rows), out_shardings=rows)
    programs_before = _programs(score), _programs(update)  # an earlier stage of this process may have compiled some
    # every packed row count is a rung of a fixed ladder, so that the run compiles a few programs; the
    # top rungs hold a step's most responses (its questions' and its branches') one a row
    most = (settings.questions_per_step + settings.branches) * settings.samples_per_question
    dp = data_parallelism(mesh)
    scoring_ladder = row_ladder(most, dp, settings.row_buckets)
    update_ladder = row_ladder(-(-most // settings.minibatches), dp * settings.micro_batches, settings.row_buckets)
    running = KeyedMeanBaseline(settings.baseline_momentum) if settings.baseline != "leave_one_out" else None
    print(f"rl {name}: {reward} reward, {len(rollouts.questions)} questions, "
          f"{settings.questions_per_step} x {settings.samples_per_question} responses a step, rows of "
          f"{rollouts.row_length}, packed in {'/'.join(map(str, scoring_ladder))} rows to score and "
          f"{'/'.join(map(str, update_ladder))} to update")

    with Checkpointer(directory / "checkpoints", every=settings.checkpoint_every) as checkpointer:
        start, resumed = 0, checkpointer.resume(state)
        if resumed:
            start, state, metadata = resumed
            print(f"rl {name}: resuming from step {start}")
            if running is not None:
                running.means = {_key(k): v for k, v in metadata.get("baseline", [])}
        writer = MetricsWriter(directory, start)
        bar = tqdm(total=settings.steps, initial=start, desc=name, unit="step", disable=jax.process_index() != 0)
        for step in range(start, settings.steps):
            began = time.perf_counter()
            rollout = rollouts(state.params["policy"], step, values)
            batch = pack_rows(rollout.prompts, rollout.sampled, rollouts.row_length)
            scoring = Packing.of(batch["segment_ids"], range(len(rollout.sampled)), scoring_ladder)
            packed = to_global(scoring.pack(_rows(batch)), rows)
            policy_logprobs, _, value_estimates = score(state.params, packed)
            reference_logprobs, _, _ = score({**state.params, "policy": reference}, packed)
            policy_logprobs, reference_logprobs, value_estimates = to_host(
                (policy_logprobs, reference_logprobs, value_estimates))
            batch["old_logprobs"], batch["reference_logprobs"] = map(scoring.unpack, (policy_logprobs, reference_logprobs))
            value_estimates = None if value_estimates is None else scoring.unpack(value_estimates)
            batch.update(token_advantages(settings, reward, rollout, batch, running, values, value_estimates))
            state, update_metrics = _updates(lambda s, b: update(s, to_global(b, rows)), state, batch, settings,
                                             config.seed, step, update_ladder)
            metrics = {**_rollout_metrics(rollout, values, rollouts.cues), **update_metrics,
                       "lr": float(schedule(int(state.step) - 1)), "seconds": time.perf_counter() - began,
                       "packed_rows": scoring.filled, "scoring_rows": len(scoring.real),
                       "programs": _programs(score, update), "sampler_programs": rollouts.sampler.compilations}
            writer.write(step + 1, metrics)
            check_finite(metrics, step + 1, f"rl {name}", checkpointer)
            bar.set_postfix(reward=f"{metrics['reward']:.2f}", acc=f"{metrics['acc_final']:.2f}")
            bar.update(1)
            metadata = {"baseline": [[_plain(k), v] for k, v in running.means.items()]} if running else {}
            checkpointer.save(step + 1, state, metadata, force=step + 1 == settings.steps)
        bar.close()
        writer.close()
        checkpointer.wait()
    print(f"rl {name}: compiled {_programs(score) - programs_before[0]} scoring, "
          f"{_programs(update) - programs_before[1]} update and "
          f"{rollouts.sampler.compilations} sampling programs")
    save_hf(directory / "model", policy.config, state.params["policy"], policy.tokenizer)
    print(f"rl: policy written to {directory / 'model'}")
    return directory / "model"


def _programs(*jitted) -> int:
    """The programs these jitted functions have compiled: jax's count of each one's cached executables
    (one per distinct input shape and layout)."""
    return sum(function._cache_size() for function in jitted)


def _rows(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The batch's `[rows, time]` arrays (not the per-response `offsets`)."""
    return {name: value for name, value in batch.items() if name != "offsets"}


def token_advantages(settings, reward: str, rollout: Rollout, batch: dict, running: KeyedMeanBaseline | None,
                     values: RewardValues, value_estimates) -> dict:
    """Per-token `advantages` (and `returns` for the value head) on the batch's target positions:
    each response's credit from its sampled tokens on (a branch's given start is not learned); and
    `kl_weights`, the KL coefficient's factor on each token (`rl.retry_kl` on a retry's, else 1)."""
    offsets, length = np.asarray(batch["offsets"]), batch["inputs"].shape[1]
    scored = rollout.scored
    mask = np.asarray(batch["response_mask"], np.float32)
    k = settings.samples_per_question
    kl_weights = place(_sampled_part([np.where(s.retry_tokens(), settings.retry_kl, 1.0) for s in scored], rollout),
                       offsets, length, fill=1.0)
    kl_penalty = np.zeros_like(mask)
    if settings.kl_in == "reward":
        log_ratio = np.asarray(batch["old_logprobs"] - batch["reference_logprobs"])
        kl_penalty = -settings.kl_coef * kl_weights * log_ratio * mask
    if settings.advantage == "gae":
        per_token = [outcome_tokens(s, len(s.token_action), values) if reward == "outcome"
                     else action_end_tokens(s, len(s.token_action), values) for s in scored]
        rewards = place(_sampled_part(per_token, rollout), offsets, length) + kl_penalty
        advantages, returns = gae(jnp.asarray(rewards), value_estimates, jnp.asarray(mask), settings.gae_gamma,
                                  settings.gae_lambda)
    else:
        if reward == "outcome":
            credit = outcome_credit(scored, k, values, settings.baseline, running, rollout.levels)
        else:
            credit = process_credit(scored, k, values, settings.baseline, settings.process_credit, running,
                                    rollout.levels)
        advantages = place(_sampled_part(credit, rollout), offsets, length) + reward_to_go(kl_penalty, mask)
        returns = None
    if settings.whiten:
        advantages = whiten(advantages, jnp.asarray(mask))
    return {"advantages": advantages, "kl_weights": kl_weights} | ({"returns": returns} if returns is not None else {})


def _sampled_part(per_response: list[np.ndarray], rollout: Rollout) -> list[np.ndarray]:
    return [values[given:] for values, given in zip(per_response, rollout.given)]


def _updates(update, state, batch: dict, settings, seed: int, step: int, ladder: tuple[int, ...]):
    """`epochs` passes over the rollout in `minibatches` shuffled slices of its responses, each
    packed into a row count of `ladder` (the order a function of the run's seed and the step, so a
    resumed run shuffles as the uninterrupted one); mean metrics."""
    rows = batch["inputs"].shape[0]
    rng = np.random.default_rng([seed, step])
    batch = _rows(batch)
    collected = []
    for _ in range(settings.epochs):
        order = rng.permutation(rows)
        for members in np.array_split(order, settings.minibatches):
            packing = Packing.of(batch["segment_ids"], members, ladder)
            state, metrics = update(state, packing.pack(batch))
            collected.append(metrics)
    collected = to_host(collected)
    return state, {name: float(np.mean([m[name] for m in collected])) for name in collected[0]}


def _rollout_metrics(rollout: Rollout, values: RewardValues, cues: Cues) -> dict:
    """The fresh rows' figures (comparable with or without branches), and the branches' final accuracy."""
    scored = rollout.scored[: rollout.fresh]
    verifies = [a for s in scored for a in s.actions if a.kind == VERIFY]
    matches = [r > 0 for s in scored for a, r in zip(s.actions, s.action_rewards) if a.kind == VERIFY]
    first = np.array([bool(s.solve_correct) and s.solve_correct[0] for s in scored])
    final = np.array([s.final_correct for s in scored])
    branches = rollout.scored[rollout.fresh :]
    return {
        "reward": float(np.mean(response_rewards(scored, values))),
        "acc_first": float(first.mean()),
        "acc_final": float(final.mean()),
        # self-correction as the evaluation counts it (a response with no attempt is wrong at both)
        "wrong_to_right": float(np.mean(~first & final)),
        "right_to_wrong": float(np.mean(first & ~final)),
        # NaN in a step with no catch (or no false rejection) to count
        **{name: math.nan if rate is None else rate
           for name, rate in self_correction([s.attempts(cues) for s in scored]).items()},
        "verify_acc": float(np.mean(matches)) if matches else 0.0,
        "correct_verdicts": float(np.mean([verdict(a.text, cues) is True for a in verifies])) if verifies else 0.0,
        "attempts": float(np.mean([len(s.solve_correct) for s in scored])),
        "ended": float(np.mean([s.ended for s in scored])),
        "response_tokens": float(np.mean([len(t) for t in rollout.sampled[: rollout.fresh]])),
        "branch_rows": len(branches),
        "branch_acc_final": float(np.mean([s.final_correct for s in branches])) if branches else 0.0,
    }


def _plain(key):
    """A baseline key as JSON (tuples become lists)."""
    return [_plain(k) for k in key] if isinstance(key, tuple) else key


def _key(value):
    return tuple(_key(v) for v in value) if isinstance(value, list) else value


def report(config: ml_collections.ConfigDict) -> dict[str, dict]:
    """Every policy of the recipe evaluated on the test draw, printed as one table and written to
    `workdir/eval/table.{json,md}`."""
    rows = {}
    for policy, label in TABLE:
        if policy.startswith("rl_") and policy.removeprefix("rl_") not in (config.rl.reward, *config.rl.compare):
            continue
        if policy == "offline" and not config.rl.offline:
            continue
        settings = copy.deepcopy(config)
        settings.eval.policy, settings.eval.name = policy, policy  # eval finds rl_<reward> where it was written
        rows[label] = evaluate.run(settings)
    header = "| policy | " + " | ".join(TABLE_FIGURES) + " |"
    lines = [header, "|" + "---|" * (len(TABLE_FIGURES) + 1)]
    lines += ["| " + label + " | " + " | ".join(evaluate.show(figures[f]) for f in TABLE_FIGURES) + " |"
              for label, figures in rows.items()]
    directory = epath.Path(config.workdir) / "eval"

    def write() -> None:
        (directory / "table.json").write_text(json.dumps(rows, indent=2) + "\n")
        (directory / "table.md").write_text("\n".join(lines) + "\n")

    on_process_zero(write, "rl report table")
    print("\n".join(lines))
    return rows
