"""Stage `offline`: offline RL on responses sampled once (the paper's third training mode).

The S²R SFT policy samples `offline.samples_per_question` responses to every training question (or
`offline.responses` names a JSONL file, or a TFDS folder made by `datasets.prepare_tfds("responses",
...)`, of responses sampled elsewhere, e.g. by vLLM from the exported policy: they are tokenized and
graded here, with the parser and grader of online RL). Selection,
fixed baselines and the per-action objective are `sv_jax.training.offline`'s; the reference is the
SFT policy, fixed for the run. Writes `workdir/offline/questions.jsonl` (the training questions
and their prompts, to sample elsewhere), `summary.json` (counts at each filter), metrics,
checkpoints and the policy in `workdir/offline/model`.
"""

from __future__ import annotations

import copy
import functools
import json
import math

import ml_collections
import numpy as np
from etils import epath

from sv_jax.compilation import shared_jit
from sv_jax.distributed import map_shares, on_process_zero, to_global
from sv_jax.errors import UserError
from sv_jax.io import numbered_records, write_jsonl
from sv_jax.models import load_hf, param_shardings, save_hf
from sv_jax.sharding import data_parallelism, mesh_of, replicated, rows_sharding
from sv_jax.stages import eval as evaluate
from sv_jax.stages import rl
from sv_jax.tasks import fill, response_format
from sv_jax.training.lm import placed_train_state
from sv_jax.training.loop import train
from sv_jax.training.offline import QUESTIONS_A_SAMPLER_BATCH, OfflineStep, action_rewards, fixed_baselines, select
from sv_jax.training.optimizer import make_optimizer
from sv_jax.training.ppo import policy_outputs
from sv_jax.training.rewards import RewardValues, Scored, reward_values
from sv_jax.training.rollout import pack_rows, place

BASELINES = ("accuracy_position", "position", "prefix")


def run(config: ml_collections.ConfigDict) -> None:
    check(config)
    train_policy(config)


def check(config: ml_collections.ConfigDict) -> None:
    settings = config.offline
    if settings.reward not in ("process", "outcome"):
        raise UserError(f"config key 'offline.reward': {settings.reward!r} is not one of process, outcome")
    if settings.baseline not in BASELINES:
        raise UserError(f"config key 'offline.baseline': {settings.baseline!r} is not one of {', '.join(BASELINES)}")
    low, high = settings.accuracy_range
    if not 0 <= low <= high <= 1:
        raise UserError(f"config key 'offline.accuracy_range' {tuple(settings.accuracy_range)}: "
                        "need 0 <= low <= high <= 1")
    if settings.batch_size < 1 or settings.samples_per_question < 1:
        raise UserError("config keys 'offline.batch_size' and 'offline.samples_per_question' must be at least 1")


def train_policy(config: ml_collections.ConfigDict) -> epath.Path:
    """Samples (or reads), selects, and trains from the S²R SFT policy; returns the exported folder
    (not there yet with `offline.questions_only`, which stops once the questions are written)."""
    settings = config.offline
    directory = epath.Path(config.workdir) / "offline"
    mesh = mesh_of(config)
    policy = load_hf(evaluate.ensure_policy(config, "sft"), config.model.dtype, config.model.param_dtype, mesh)
    rollouts = rl.Rollouts(_sampling_config(config), policy)
    template, _ = response_format(config)
    on_process_zero(lambda: write_jsonl(directory / "questions.jsonl", [
        {"id": q.id, "prompt": fill(template, question=q.question)} for q in rollouts.questions]), "offline questions")
    if settings.questions_only:
        print(f"offline: {len(rollouts.questions)} training questions written to {directory / 'questions.jsonl'}")
        return directory / "model"
    values = reward_values(settings.rewards, "offline.rewards")
    question_of, sampled, scored = _responses(config, rollouts, values)

    chosen = select(scored, question_of, tuple(settings.accuracy_range), settings.max_actions,
                    np.random.default_rng(config.seed))
    if not chosen.kept:
        raise UserError(f"offline: no response survives selection ({chosen.counts}); widen "
                        "config key 'offline.accuracy_range' or sample more (offline.samples_per_question)")
    rewards = [action_rewards(scored[i], actions, settings.reward) for i, actions in zip(chosen.kept, chosen.actions)]
    baselines = fixed_baselines(rewards, chosen.accuracy, settings.baseline, settings.baseline_min_count)
    summary = {**chosen.counts, "mean_reward": float(np.mean(np.concatenate(rewards)))}
    on_process_zero(lambda: (directory / "summary.json").write_text(json.dumps(summary, indent=2) + "\n"),
                    "offline summary")
    print(f"offline: {json.dumps(chosen.counts)}")

    prompts = [rollouts.prompts[question_of[i]] for i in chosen.kept]
    responses = [sampled[i][:tokens] for i, tokens in zip(chosen.kept, chosen.tokens)]
    learned = [_learned_actions(scored[i], tokens, settings.reward) for i, tokens in zip(chosen.kept, chosen.tokens)]
    advantages = [np.where(owner >= 0, (r - b)[np.maximum(owner, 0)], 0.0).astype(np.float32)
                  for owner, r, b in zip(learned, rewards, baselines)]
    dp = data_parallelism(mesh)
    rows = -(-settings.batch_size // (dp * settings.micro_batches)) * dp * settings.micro_batches
    most_actions = settings.max_actions if settings.reward == "process" else 1
    steps = max(math.ceil(settings.epochs * len(chosen.kept) / settings.batch_size), 1)

    optimizer, schedule = make_optimizer(settings.learning_rate, steps, settings.warmup_steps, 0.0, settings.clip_norm)
    reference = policy.params
    state, layout = placed_train_state({"policy": reference}, optimizer,
                                       {"policy": param_shardings(policy.config, mesh)}, mesh)
    on_rows = rows_sharding(mesh)
    update = shared_jit(OfflineStep(policy.config.replace(remat=settings.remat), optimizer, settings.temperature,
                                    settings.clip, settings.kl_coef, micro_batches=settings.micro_batches,
                                    num_actions=rows * most_actions),
                        donate_argnums=0, in_shardings=(layout, on_rows), out_shardings=(layout, replicated(mesh)))
    score = shared_jit(functools.partial(policy_outputs, policy.config, temperature=settings.temperature),
                       in_shardings=(layout.params, on_rows), out_shardings=on_rows)
    row_length = rollouts.row_length

    def batch_for_step(step: int) -> dict:
        """The step's responses, one a row: a permutation of the kept ones each epoch (by seed)."""
        count = len(chosen.kept)
        positions = [divmod(p, count) for p in range(step * settings.batch_size, (step + 1) * settings.batch_size)]
        orders = {epoch: np.random.default_rng([config.seed, epoch]).permutation(count) for epoch, _ in positions}
        members = [orders[epoch][within] for epoch, within in positions]
        members += [members[-1]] * (rows - len(members))  # filler rows, not learned
        batch = pack_rows([prompts[m] for m in members], [responses[m] for m in members], row_length)
        offsets = batch.pop("offsets")
        batch.pop("response_mask")
        ids = [np.where(learned[m] >= 0, row * most_actions + learned[m], -1) if row < settings.batch_size
               else np.full(len(learned[m]), -1) for row, m in enumerate(members)]
        batch["action_ids"] = place(ids, offsets, row_length, fill=-1, dtype=np.int32)
        batch["advantages"] = place([advantages[m] for m in members], offsets, row_length)
        batch = to_global(batch, on_rows)
        reference_logprobs, _, _ = score({"policy": reference}, batch)
        return {**batch, "reference_logprobs": reference_logprobs}

    print(f"offline: {len(chosen.kept)} responses, {settings.batch_size} a step in rows of {row_length}, "
          f"{steps} steps")
    state = train(state, update, batch_for_step, steps, directory, settings.checkpoint_every, settings.log_every,
                  schedule, description="offline")
    save_hf(directory / "model", policy.config, state.params["policy"], policy.tokenizer)
    print(f"offline: policy written to {directory / 'model'}")
    return directory / "model"


def _sampling_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The config RL's rollouts sample and grade with, set to offline's sampling."""
    made = copy.deepcopy(config)
    made.rl.samples_per_question = config.offline.samples_per_question
    made.rl.temperature = config.offline.temperature
    made.rl.max_new_tokens = config.offline.max_new_tokens
    made.rl.questions_per_step = QUESTIONS_A_SAMPLER_BATCH
    made.rl.min_level = 0
    return made


def _responses(config: ml_collections.ConfigDict, rollouts: rl.Rollouts,
               values: RewardValues) -> tuple[list[int], list[list[int]], list[Scored]]:
    """Each response's question (an index into the rollouts' questions), tokens and score."""
    settings = config.offline
    if not settings.responses:
        count, k = len(rollouts.questions), settings.samples_per_question
        sampled, scored = rollouts.responses(rollouts.prompts, rollouts.questions, [[]] * count, config.seed, values)
        return [i for i in range(count) for _ in range(k)], sampled, scored
    index = {q.id: i for i, q in enumerate(rollouts.questions)}
    records = []
    for where, record in numbered_records(settings.responses, required=("id", "completion")):
        if str(record["id"]) not in index:
            raise UserError(f"{where}: id {record['id']!r} is not a training question's "
                            f"(see {epath.Path(config.workdir) / 'offline' / 'questions.jsonl'})")
        records.append((index[str(record["id"])], record["completion"]))
    tokenizer = rollouts.tokenizer
    budget = settings.max_new_tokens  # a longer response is cut there (and counts as unended)
    sampled = map_shares(lambda r: tokenizer.encode(r[1], add_special_tokens=False)[:budget], records, "responses")
    question_of = [q for q, _ in records]
    scored = rollouts.score([rollouts.questions[q] for q in question_of], [[]] * len(records), sampled, values)
    return question_of, sampled, scored


def _learned_actions(scored: Scored, tokens: int, reward: str) -> np.ndarray:
    """Each learned token's action (process level: cue tokens -1, not learned; outcome level: every
    token of the kept part is the one action 0)."""
    owner = scored.token_action[:tokens]
    return np.zeros_like(owner) if reward == "outcome" else owner
