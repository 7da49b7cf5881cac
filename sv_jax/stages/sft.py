"""Stage `sft` (stage 1, behavior initialization): masked cross-entropy on stage 0's trajectories.

Every verification, retry cue and the final attempt are learned; wrong attempts are not (mask 0),
and a KL to π₀ on every response token holds the first-attempt skill the mask no longer trains.
`sft.baseline = "correct_only"` trains the paper's comparison instead: the same questions' right
attempts alone, for `sft.baseline_steps`. Writes `workdir/<sft | sft_correct_only>/{model,
metrics.jsonl, tensorboard, checkpoints}`; runs `data` (and `base`) first when the workdir has no
trajectories.
"""

from __future__ import annotations

import math

import ml_collections
import numpy as np
from etils import epath

from sv_jax.datasets import read_tfds
from sv_jax.distributed import map_shares, to_global
from sv_jax.errors import UserError, require_steps
from sv_jax.io import numbered_jsonl
from sv_jax.models import load_hf, param_shardings, save_hf
from sv_jax.models.config import REMAT_POLICIES
from sv_jax.sharding import batch_sharding, data_parallelism, mesh_of
from sv_jax.stages import data
from sv_jax.tasks import fill, response_format
from sv_jax.training.batches import Batches, Example
from sv_jax.training.lm import LMStep, jit_lm_step, placed_train_state
from sv_jax.training.loop import train
from sv_jax.training.optimizer import make_optimizer
from sv_jax.trajectory import PROMPT, SOLVE, VERIFY, Action, Cues, tokenize

BASELINES = ("", "correct_only")
# Which response tokens the KL to π₀ covers: every one; every action's (not the cue and EOS tokens);
# every action's but the retries' (the attempts after the first); the solve actions' alone.
KL_TOKENS = ("response", "actions", "except_retries", "solves")


def output_name(baseline: str) -> str:
    return "sft_correct_only" if baseline == "correct_only" else "sft"


def check(config: ml_collections.ConfigDict) -> None:
    """Raises UserError for a bad `sft` setting; later stages call it before running this one."""
    settings = config.sft
    require_steps(settings, "sft", "steps", "baseline_steps")
    if settings.baseline not in BASELINES:
        raise UserError(f"config key 'sft.baseline': {settings.baseline!r} is not one of '', 'correct_only'")
    if settings.kl_tokens not in KL_TOKENS:
        raise UserError(f"config key 'sft.kl_tokens': {settings.kl_tokens!r} is not one of {', '.join(KL_TOKENS)}")
    if not 0 <= settings.one_round_share <= 1:
        raise UserError(f"config key 'sft.one_round_share' ({settings.one_round_share}) must be between 0 and 1")
    if settings.remat not in REMAT_POLICIES:
        raise UserError(f"config key 'sft.remat': {settings.remat!r} is not one of {', '.join(REMAT_POLICIES)}")
    if settings.epochs < 0:
        raise UserError(f"config key 'sft.epochs' ({settings.epochs}) must be 0 (sft.steps decides) or more")
    if settings.retry_weight < 1:
        raise UserError(f"config key 'sft.retry_weight' ({settings.retry_weight}) must be at least 1")
    if not config.model.path:  # the built-in task's initial policy is trained first
        from sv_jax.stages import base

        base.check(config)
    split = settings.micro_batches * data_parallelism(mesh_of(config))
    if settings.batch_size % split:
        raise UserError(f"config key 'sft.batch_size' ({settings.batch_size}) must be a multiple of "
                        f"micro_batches x the mesh's data-parallel devices ({split})")


def run(config: ml_collections.ConfigDict) -> None:
    check(config)
    settings = config.sft
    mesh = mesh_of(config)
    records = read_trajectories(config)
    policy = load_hf(data.policy_folder(config), config.model.dtype, config.model.param_dtype, mesh=mesh)
    template, cues = response_format(config)
    examples = map_shares(lambda pair: to_example(policy.tokenizer, fill(template, question=pair[0]["question"]),
                                                  pair[1], cues, settings.baseline, settings.kl_tokens,
                                                  settings.retry_weight),
                          training_actions(records, settings, config.seed), "trajectories")
    rows, row_length = row_shape(examples, settings)
    batches = Batches(examples, rows, row_length, settings.micro_batches, config.seed, settings.pack)
    steps = settings.baseline_steps if settings.baseline else settings.steps
    if settings.epochs:
        steps = max(math.ceil(settings.epochs * batches.rows_per_epoch / rows), 1)
    epochs = steps * rows / batches.rows_per_epoch
    extra = f" (+{len(examples) - len(records)} as one round)" if len(examples) > len(records) else ""
    print(f"sft: {len(records)} trajectories{extra}, {rows} rows of {row_length} a step, {batches.rows_per_epoch} rows "
          f"an epoch, {epochs:.1f} epochs" + (f", {batches.truncated} cut at seq_len {settings.seq_len}"
                                              if batches.truncated else ""))

    model_config = policy.config.replace(remat=settings.remat)
    optimizer, schedule = make_optimizer(settings.learning_rate, steps, settings.warmup_steps,
                                         settings.weight_decay, settings.clip_norm)
    reference = policy.params if settings.kl_coef else None
    state, layout = placed_train_state(policy.params, optimizer, param_shardings(policy.config, mesh), mesh)
    step = jit_lm_step(LMStep(model_config, optimizer, settings.kl_coef), layout, mesh, reference is not None)
    directory = epath.Path(config.workdir) / output_name(settings.baseline)
    on_mesh = batch_sharding(mesh)
    step_fn = step if reference is None else lambda s, batch: step(s, batch, reference)
    state = train(state, step_fn, lambda i: to_global(batches(i), on_mesh),
                  steps, directory, settings.checkpoint_every, settings.log_every, schedule,
                  description=output_name(settings.baseline))
    save_hf(directory / "model", policy.config, state.params, policy.tokenizer)
    print(f"sft: policy written to {directory / 'model'}")


def training_actions(records: list[dict], settings: ml_collections.ConfigDict,
                     seed: int) -> list[tuple[dict, list[dict]]]:
    """Each record with its actions (correct-only SFT: its last round, of which it learns the right
    attempt alone), and for a `one_round_share` of the multi-round records (S²R only) their last round
    once more on its own: the right attempt first, then its confirming check.

    A multi-round trajectory trains its right attempt only after a retry cue, so without these the
    first attempt learns from the easy questions alone, where correct-only SFT learns it from all."""
    if settings.baseline:
        return [(r, last_round(r)) for r in records]
    pairs = [(r, r["actions"]) for r in records]
    if not settings.one_round_share:
        return pairs
    chosen = np.random.default_rng(seed).random(len(records)) < settings.one_round_share
    return pairs + [(r, last_round(r)) for r, take in zip(records, chosen) if take and len(r["actions"]) > 2]


def last_round(record: dict) -> list[dict]:
    """The record's right attempt standing alone (its `solution` where the trajectory ends on a
    correction read off a check, which means nothing without the rejected attempt) and its check."""
    attempt = {**record["actions"][-2], "text": record.get("solution", record["actions"][-2]["text"])}
    return [attempt, record["actions"][-1]]


def row_shape(examples: list[Example], settings: ml_collections.ConfigDict) -> tuple[int, int]:
    """Rows a step and their length: packed rows `seq_len` / 2^j long, the shortest that still fits
    the longest example, and 2^j times `batch_size` of them, so a step holds the same tokens. The
    correct-only baseline's ~70-token examples need no 512-token rows, where attention over the
    whole row costs more than the tokens themselves."""
    if not settings.pack:
        return settings.batch_size, settings.seq_len
    longest = max(len(e.tokens) - 1 for e in examples)
    halvings = 0
    while settings.seq_len % (2 << halvings) == 0 and settings.seq_len >> (halvings + 1) >= longest:
        halvings += 1
    return settings.batch_size << halvings, settings.seq_len >> halvings


def to_example(tokenizer, prompt: str, actions: list[dict], cues: Cues, baseline: str,
               kl_tokens: str, retry_weight: int = 1) -> Example:
    """One trajectory as a training sequence; for `correct_only`, its final (right) attempt alone.

    `kl_tokens` (one of KL_TOKENS) picks the tokens the KL to π₀ covers; masked wrong attempts are
    always among them. Cue and EOS tokens are the new behaviour itself (π₀ ends after an answer and
    has never written a cue): a KL there holds the policy back from opening verifications and retries.
    The right retry's tokens weigh `retry_weight` in the loss (the other learned tokens 1)."""
    chosen = [Action(a["kind"], a["text"], a["correct"], a["mask"]) for a in actions]
    if baseline == "correct_only":
        chosen = [Action(SOLVE, chosen[-2].text, True, 1)]
    tokenized = tokenize(tokenizer, prompt, chosen, cues)
    solves = [i for i, action in enumerate(chosen) if action.kind == SOLVE]
    in_retry = np.isin(tokenized.action, solves[1:])  # the attempts after the first
    if kl_tokens == "response":
        kl_mask = tokenized.action != PROMPT
    elif kl_tokens == "actions":
        kl_mask = tokenized.action >= 0  # cue and EOS tokens are CUE, prompt tokens PROMPT: both negative
    elif kl_tokens == "except_retries":
        # π₀ never saw the retry cue that opens each attempt after the first, so its next-token
        # distribution there holds no skill to keep (a KL to it made retries read like checks).
        kl_mask = (tokenized.action >= 0) & ~in_retry
    else:
        kl_mask = np.isin(tokenized.action, solves)
    loss_weight = tokenized.loss_mask * np.where(in_retry, retry_weight, 1)
    return Example(tokenized.tokens, loss_weight.astype(np.int32), kl_mask.astype(np.int32))


def read_trajectories(config: ml_collections.ConfigDict) -> list[dict]:
    """`sft.trajectories` (JSONL or TFDS folder), or the workdir's stage 0 output, made first if missing."""
    source = config.sft.trajectories
    if not source:
        folder = epath.Path(config.workdir) / "data"
        if not (folder / "trajectories.jsonl").exists():
            print("sft: no trajectories in the workdir; running stage data first")
            data.run(config)
        source = folder / "trajectories.jsonl"
    source = epath.Path(source)
    if source.is_dir():
        return [_checked(r, f"{source} example {i}") for i, r in enumerate(read_tfds(source, "train"))]
    return [_checked(r, f"{source}:{n}") for n, r in numbered_jsonl(source, required=("question", "actions"))]


def _checked(record: dict, where: str) -> dict:
    """A trajectory record whose actions alternate solve / verify and end on a right attempt's verification."""
    actions = record["actions"]
    if not isinstance(actions, list) or len(actions) < 2 or len(actions) % 2:
        raise UserError(f"{where}: 'actions' must be a list of solve, verify pairs")
    for i, action in enumerate(actions):
        if not isinstance(action, dict) or action.get("kind") != (SOLVE, VERIFY)[i % 2]:
            raise UserError(f"{where}: action {i} must be a {(SOLVE, VERIFY)[i % 2]} action")
        if not isinstance(action.get("text"), str) or action.get("mask") not in (0, 1):
            raise UserError(f"{where}: action {i} needs a string 'text' and a 'mask' of 0 or 1")
    if not isinstance(record.get("solution", ""), str):
        raise UserError(f"{where}: 'solution' must be a string")
    if not actions[-2].get("correct"):
        raise UserError(f"{where}: the last attempt is not marked correct")
    return record
