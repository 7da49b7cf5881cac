"""Stage `base` (built-in task only): pretrain π₀ from scratch and export it as an HF folder.

π₀ must stand where a real initial policy stands: right on some questions and wrong on others (its
corpus carries slips), able to check a proposed answer when asked (checking exercises), and never
verifying unprompted. Writes `workdir/base/{model, metrics.jsonl, checkpoints, validation.jsonl,
eval.json}`, and `workdir/base/cooldown/` (the annealing steps after an early stop).
"""

from __future__ import annotations

import json

import jax
import ml_collections
import numpy as np
from etils import epath

from sv_jax.distributed import gather_by_index, map_shares, on_process_zero, to_global
from sv_jax.errors import UserError, require_steps
from sv_jax.io import written_locally
from sv_jax.models import ModelConfig, init_params, load_tokenizer, param_shardings, save_hf
from sv_jax.sampling import Sampler, SamplingSpec, stop_sequences_for
from sv_jax.sharding import batch_sharding, data_parallelism, gathers_sampling_weights, mesh_of
from sv_jax.tasks import arithmetic as task
from sv_jax.tasks import builtin
from sv_jax.tasks.tokenizer import train_tokenizer
from sv_jax.training.lm import LMStep, jit_lm_step, placed_train_state
from sv_jax.training.loop import train
from sv_jax.training.optimizer import clipped_adamw, linear_cooldown, make_optimizer
from sv_jax.trajectory import verdict


def check(config: ml_collections.ConfigDict) -> None:
    """Raises UserError for a bad `base` setting; later stages call it before running this one."""
    require_steps(config.base, "base", "steps")
    route_shares(config.base)


def route_shares(settings: ml_collections.ConfigDict) -> tuple[float, float]:
    """The shares of π₀'s solutions by the `parts` and `over` routes (the rest are `direct`)."""
    shares = (settings.parts_route_share, settings.over_route_share)
    if min(shares) < 0 or sum(shares) > 1:
        raise UserError(f"config keys 'base.parts_route_share' ({shares[0]}) and 'base.over_route_share' "
                        f"({shares[1]}) must be at least 0 and sum to at most 1")
    return shares


def run(config: ml_collections.ConfigDict) -> None:
    check(config)
    settings = config.base
    directory = epath.Path(config.workdir) / "base"
    tokenizer = _tokenizer(directory / "tokenizer", config.seed)
    model_config = ModelConfig(
        family="llama",
        vocab_size=-(-len(tokenizer) // 64) * 64,
        hidden_size=settings.hidden_size,
        intermediate_size=settings.intermediate_size,
        num_layers=settings.num_layers,
        num_heads=settings.num_heads,
        num_kv_heads=settings.num_heads,
        head_dim=settings.hidden_size // settings.num_heads,
        max_position_embeddings=settings.seq_len,
        tie_word_embeddings=True,
        dtype=config.model.dtype,
        param_dtype=config.model.param_dtype,
        mesh=mesh_of(config),
    )
    optimizer, schedule = make_optimizer(settings.learning_rate, settings.steps, settings.warmup_steps,
                                         settings.weight_decay)
    shardings = param_shardings(model_config, model_config.mesh)
    # One program drawing each device's shards in place: eagerly, the init compiles ~100 small programs.
    draw = jax.jit(lambda: init_params(model_config, jax.random.key(config.seed)), out_shardings=shardings)
    state, layout = placed_train_state(draw(), optimizer, shardings, model_config.mesh)
    step = jit_lm_step(LMStep(model_config, optimizer), layout, model_config.mesh)

    def batch_for_step(step_index: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([config.seed, step_index])
        batch = packed_batch(tokenizer, rng, settings, long_rows=(step_index + 1) % settings.long_every == 0,
                             row_multiple=data_parallelism(model_config.mesh))
        return to_global(batch, batch_sharding(model_config.mesh))

    sampler = Sampler(model_config, state.params, gather_weights=gathers_sampling_weights(config))
    validations = directory / "validation.jsonl"
    validation_problems = task.draw_problems("validation", settings.validation_questions, config.seed)

    def competent(step_index: int, state) -> bool:
        """Whether π₀ already solves and checks as well as the config asks (validation draw)."""
        if step_index < settings.validate_from:
            return False
        sampler.params = state.params
        figures = measure_initial_policy(sampler, tokenizer, validation_problems, config.seed)

        def write() -> None:
            with validations.open("a") as out:
                out.write(json.dumps({"step": step_index, **figures}) + "\n")

        on_process_zero(write, f"base validation {step_index}")
        return (figures["accuracy"] >= settings.stop_accuracy
                and figures["check_accuracy"] >= settings.stop_check_accuracy)

    state = train(state, step, batch_for_step, settings.steps, directory, settings.checkpoint_every,
                  settings.log_every, schedule, description="base", stop=competent, stop_every=settings.validate_every)
    stopped_at = int(state.step)
    if stopped_at < settings.steps and settings.cooldown_steps:
        state = _cool_down(state, layout, model_config, schedule, stopped_at,
                           lambda i: batch_for_step(stopped_at + i), directory / "cooldown", settings)
    save_hf(directory / "model", model_config, state.params, tokenizer)
    sampler.params = state.params
    test_problems = task.draw_problems("test", settings.eval_questions, config.seed)
    figures = measure_initial_policy(sampler, tokenizer, test_problems, config.seed)
    routes = builtin.learned_routes(route_shares(settings))
    figures["accuracy_by_route"] = measure_routes(sampler, tokenizer, test_problems, routes)
    on_process_zero(lambda: (directory / "eval.json").write_text(json.dumps(figures, indent=2) + "\n"), "base eval")
    print(f"base: π₀ on {figures['n']} test questions: greedy accuracy {figures['accuracy']:.1%}, "
          f"checking exercises judged right {figures['check_accuracy']:.1%}, "
          f"verifies unprompted {figures['unprompted_verification']:.1%}; from each route's first step: "
          + ", ".join(f"{route} {figures['accuracy_by_route'][route]['all']:.1%}" for route in routes))


def _cool_down(state, layout, model_config: ModelConfig, schedule, stopped_at: int, batch_for_step,
               directory: epath.Path, settings: ml_collections.ConfigDict):
    """`cooldown_steps` more steps on the same corpus with the learning rate falling linearly to 0,
    checkpointed in `directory` (steps counted from the stop). The stop rule fires mid-schedule, at
    a high learning rate, where both skills swing ±5 points between validations; annealed, π₀
    lands higher on both, checks most (experiments/RESULTS.md)."""
    cooldown = linear_cooldown(float(schedule(stopped_at)), stopped_at, settings.cooldown_steps)
    optimizer = clipped_adamw(cooldown, settings.weight_decay)
    step = jit_lm_step(LMStep(model_config, optimizer), layout, model_config.mesh)
    return train(state, step, batch_for_step, settings.cooldown_steps, directory, settings.checkpoint_every,
                 settings.log_every, lambda i: cooldown(stopped_at + i), description="base cool-down")


def _tokenizer(folder: epath.Path, seed: int):
    """Trained on the corpus's own text once (by process 0), then read back, so a resumed run and
    every process use the same one."""
    def write() -> None:
        if not (folder / "tokenizer.json").exists():
            rng = np.random.default_rng(seed)
            texts = ["".join(builtin.pretraining_document(task.draw_problem("train", rng), rng, 0.5, 0.5, 0.5))
                     for _ in range(3000)]
            texts += [builtin.CUES.verify, builtin.CUES.retry, builtin.CHECK_PROMPT, builtin.PROMPT]
            with written_locally(folder) as local:
                train_tokenizer(texts).save_pretrained(local)

    on_process_zero(write, "base tokenizer")
    return load_tokenizer(folder)


def packed_batch(tokenizer, rng: np.random.Generator, settings: ml_collections.ConfigDict,
                 long_rows: bool = False, row_multiple: int = 1) -> dict[str, np.ndarray]:
    """`[micro_batches, rows, time]` rows of corpus documents joined by EOS, one segment a row, so
    that attention and positions span the whole row. Most batches hold short rows (cheap); long
    ones, as long as stage 0's longest trajectory, train the attention distances a trajectory needs,
    with about as many tokens. Questions carry no loss unless `learn_questions`: π₀ is given them,
    as an instruction model is. Micro-batches only save time: smaller matrices stay in the CPU's cache.
    Each micro-batch's rows are a multiple of `row_multiple` (a mesh's data-parallel devices)."""
    time = settings.seq_len if long_rows else settings.short_seq_len
    micro = settings.micro_batches
    unit = micro * row_multiple
    rows = unit * max(1, round(settings.batch_size / unit * settings.short_seq_len / time))
    tokens = np.zeros((rows, time + 1), np.int32)
    learned = np.zeros((rows, time + 1), np.int32)
    for row, row_learned in zip(tokens, learned):
        filled = 0
        while filled < len(row):
            context, continuation = _document(rng, settings)
            context_ids = tokenizer.encode(context, add_special_tokens=False) if context else []
            ids = context_ids + tokenizer.encode(continuation, add_special_tokens=False) + [tokenizer.eos_token_id]
            learn = np.ones(len(ids), np.int32)
            learn[: len(context_ids)] = int(settings.learn_questions)
            take = min(len(ids), len(row) - filled)
            row[filled : filled + take] = ids[:take]
            row_learned[filled : filled + take] = learn[:take]
            filled += take
    ones = np.ones((rows, time), np.int32)
    batch = {
        "inputs": tokens[:, :-1],
        "targets": tokens[:, 1:],
        "positions": np.broadcast_to(np.arange(time, dtype=np.int32), (rows, time)),
        "segment_ids": ones,
        "loss_mask": learned[:, 1:],
        "kl_mask": np.zeros_like(ones),
    }
    return {name: np.asarray(value).reshape(micro, rows // micro, time) for name, value in batch.items()}


def _document(rng: np.random.Generator, settings: ml_collections.ConfigDict) -> tuple[str, str]:
    if rng.random() < settings.drill_share:
        return "", builtin.arithmetic_drill(rng, settings.drill_facts, settings.confirmative_share,
                                            route_shares(settings), settings.drill_shape_power)
    problem = task.draw_problem("train", rng)
    return builtin.pretraining_document(problem, rng, settings.slip_rate, settings.check_share,
                                        settings.confirmative_share, route_shares(settings))


def measure_initial_policy(sampler: Sampler, tokenizer, problems: list[task.Problem], seed: int) -> dict:
    """π₀ on held-out `problems`: greedy accuracy, the route it takes, whether it verifies
    unprompted, and the share of checking exercises (right and slipped answers, half each) it judges
    right, by the answer's truth and by the style π₀ chose to check in (the prompt does not name one)."""
    rng = np.random.default_rng(seed)  # which checking exercises propose a slipped answer
    proposals = [p.answer if i % 2 == 0 else task.slipped_solution(p, rng)[1] for i, p in enumerate(problems)]
    # the questions and the checking exercises in one call: one sampling program for both
    prompts = ([builtin.prompt(p) for p in problems]
               + [builtin.check_prompt(p, proposed) for p, proposed in zip(problems, proposals)])
    answers = _greedy(sampler, tokenizer, prompts, "measurement prompts")
    texts, checks = answers[: len(problems)], answers[len(problems) :]
    truths = np.array([proposed == p.answer for p, proposed in zip(problems, proposals)])
    judged = np.array([verdict(check, builtin.CUES) == truth for check, truth in zip(checks, truths)])
    styles = np.array([task.written_style(p, proposed, check)
                       for p, proposed, check in zip(problems, proposals, checks)])
    right = np.array([task.grade(p, t) for p, t in zip(problems, texts)])
    families = np.array([p.family for p in problems])
    routes = np.array([task.solution_route(p, t) for p, t in zip(problems, texts)])
    return {
        "n": len(problems),
        "accuracy": float(np.mean(right)),
        "check_accuracy": float(np.mean(judged)),
        "unprompted_verification": float(np.mean([builtin.CUES.verify.strip() in t for t in texts])),
        "accuracy_by_family": {str(f): float(np.mean(right[families == f])) for f in sorted(set(families))},
        "route_share": {r: float(np.mean(routes == r)) for r in task.ROUTES},
        "check_accuracy_by_answer": {name: float(np.mean(judged[truths == proposed_right]))
                                     for name, proposed_right in (("right", True), ("slipped", False))},
        "check_style_share": {s: float(np.mean(styles == s)) for s in sorted(set(styles))},
        "check_accuracy_by_style": {s: float(np.mean(judged[styles == s])) for s in sorted(set(styles))},
    }


def measure_routes(sampler: Sampler, tokenizer, problems: list[task.Problem],
                   routes: tuple[str, ...] = task.ROUTES) -> dict:
    """Greedy accuracy by each of `routes`, overall and by family: every question is answered
    once per route from that route's first operation (` 52 - 2 =`), so that a route the policy
    seldom picks is measured on every question. A retry by another route can fix an attempt
    only where that route is right: `where_others_wrong` is a route's accuracy on the questions
    every other of `routes` gets wrong."""
    openings = [(p, route, task.solution_steps(p, route=route)[0]) for route in routes for p in problems]
    prompts = [builtin.prompt(p) + f" {step.left} {step.op} {step.right} =" for p, _, step in openings]
    completions = _greedy(sampler, tokenizer, prompts, "route prompts")
    # a policy past π₀ may go on to check and retry: the first attempt is graded
    right = np.array([task.grade(p, (prompt + completion).split(builtin.CUES.verify)[0])
                      for (p, _, _), prompt, completion in zip(openings, prompts, completions)])
    by_route = right.reshape(len(routes), len(problems))  # openings run route by route
    families = np.array([p.family for p in problems])
    figures = {}
    for i, route in enumerate(routes):
        # where every other route is wrong: the most a retry by this route can fix
        rescued = by_route[i][~np.delete(by_route, i, axis=0).any(axis=0)]
        figures[route] = {"all": float(np.mean(by_route[i])),
                          **{str(f): float(np.mean(by_route[i][families == f])) for f in sorted(set(families))},
                          "where_others_wrong": float(np.mean(rescued)) if len(rescued) else float("nan")}
    return figures


def _greedy(sampler: Sampler, tokenizer, prompts: list[str], what: str) -> list[str]:
    """Every prompt's greedy completion (up to 96 tokens), in one sampler call, on every process."""
    spec = SamplingSpec(max_new_tokens=96, temperature=0.0, stop_sequences=stop_sequences_for(tokenizer, ()),
                        vocab_size=len(tokenizer))
    here = sampler.sample(map_shares(lambda text: tokenizer.encode(text, add_special_tokens=False), prompts, what),
                          spec)
    # each process decodes the rows its devices sampled
    decoded = {i: tokenizer.decode(rows[0].token_ids, skip_special_tokens=True) for i, rows in here.items()}
    return gather_by_index(decoded, len(prompts))
