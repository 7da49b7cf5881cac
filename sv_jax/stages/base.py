"""Stage `base` (built-in task only): pretrain π₀ from scratch and export it as an HF folder.

π₀ must stand where a real initial policy stands: right on some questions and wrong on others (its
corpus carries slips), able to check a proposed answer when asked (checking exercises), and never
verifying unprompted. Writes `workdir/base/{model, metrics.jsonl, checkpoints, eval.json}`.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import ml_collections
import numpy as np

from sv_jax.models import ModelConfig, init_params, load_tokenizer, save_hf
from sv_jax.sampling import Sampler, SamplingSpec, stop_sequences_for
from sv_jax.tasks import arithmetic as task
from sv_jax.tasks import builtin
from sv_jax.tasks.tokenizer import train_tokenizer
from sv_jax.training.lm import LMStep, init_train_state
from sv_jax.training.loop import train
from sv_jax.training.optimizer import make_optimizer
from sv_jax.trajectory import verdict


def run(config: ml_collections.ConfigDict) -> None:
    settings = config.base
    directory = Path(config.workdir) / "base"
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
    )
    optimizer, schedule = make_optimizer(settings.learning_rate, settings.steps, settings.warmup_steps,
                                         settings.weight_decay)
    state = init_train_state(init_params(model_config, jax.random.key(config.seed)), optimizer)
    step = jax.jit(LMStep(model_config, optimizer), donate_argnums=0)

    def batch_for_step(step_index: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([config.seed, step_index])
        return packed_batch(tokenizer, rng, settings)

    state = train(state, step, batch_for_step, settings.steps, directory, settings.checkpoint_every,
                  settings.log_every, schedule, description="base")
    save_hf(directory / "model", model_config, state.params, tokenizer)
    figures = measure_initial_policy(model_config, state.params, tokenizer, settings.eval_questions, config.seed)
    (directory / "eval.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"base: π₀ on {figures['n']} test questions: greedy accuracy {figures['accuracy']:.1%}, "
          f"checking exercises judged right {figures['check_accuracy']:.1%}, "
          f"verifies unprompted {figures['unprompted_verification']:.1%}")


def _tokenizer(folder: Path, seed: int):
    """Trained on the corpus's own text once, then read back, so a resumed run uses the same one."""
    if not (folder / "tokenizer.json").exists():
        rng = np.random.default_rng(seed)
        texts = [builtin.pretraining_document(task.draw_problem("train", rng), rng, 0.5, 0.5) for _ in range(3000)]
        texts += [builtin.CUES.verify, builtin.CUES.retry, builtin.CHECK_PROMPT, builtin.PROMPT]
        train_tokenizer(texts).save_pretrained(folder)
    return load_tokenizer(folder)


def packed_batch(tokenizer, rng: np.random.Generator, settings: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
    """`[1, batch, seq_len]` rows of documents on fresh training questions joined by EOS, one
    segment a row, so that attention and positions span the whole row as in long trajectories."""
    rows = np.zeros((settings.batch_size, settings.seq_len + 1), np.int32)
    for row in rows:
        filled = 0
        while filled < len(row):
            problem = task.draw_problem("train", rng)
            text = builtin.pretraining_document(problem, rng, settings.slip_rate, settings.check_share)
            ids = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
            take = min(len(ids), len(row) - filled)
            row[filled : filled + take] = ids[:take]
            filled += take
    time = settings.seq_len
    ones = np.ones((settings.batch_size, time), np.int32)
    batch = {
        "inputs": rows[:, :-1],
        "targets": rows[:, 1:],
        "positions": np.broadcast_to(np.arange(time, dtype=np.int32), (settings.batch_size, time)),
        "segment_ids": ones,
        "loss_mask": ones,
        "kl_mask": np.zeros_like(ones),
    }
    return {name: np.asarray(value)[None] for name, value in batch.items()}


def measure_initial_policy(model_config: ModelConfig, params, tokenizer, count: int, seed: int) -> dict:
    """π₀ on held-out test questions: greedy accuracy, whether it verifies unprompted, and the share
    of checking exercises (right and slipped answers, half each, both styles) it judges right."""
    problems = task.draw_problems("test", count, seed)
    sampler = Sampler(model_config, params)
    spec = SamplingSpec(max_new_tokens=96, temperature=0.0, stop_sequences=stop_sequences_for(tokenizer, ()),
                        vocab_size=len(tokenizer))
    encode = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    answers = sampler.sample([encode(builtin.prompt(p)) for p in problems], spec)
    texts = [tokenizer.decode(row[0].token_ids, skip_special_tokens=True) for row in answers]
    rng = np.random.default_rng(seed)
    exercises = []
    for i, problem in enumerate(problems):
        proposed = problem.answer if i % 2 == 0 else task.slipped_solution(problem, rng)[1]
        check_prompt, _ = builtin.check_exercise(problem, proposed, task.STYLES[(i // 2) % 2])
        exercises.append((check_prompt, proposed == problem.answer))
    checks = sampler.sample([encode(p) for p, _ in exercises], spec)
    judged = [verdict(tokenizer.decode(row[0].token_ids, skip_special_tokens=True), builtin.CUES) == truth
              for row, (_, truth) in zip(checks, exercises)]
    return {
        "n": len(problems),
        "accuracy": float(np.mean([task.grade(p, t) for p, t in zip(problems, texts)])),
        "check_accuracy": float(np.mean(judged)),
        "unprompted_verification": float(np.mean([builtin.CUES.verify.strip() in t for t in texts])),
    }
