"""The memory plan: before a stage starts, what each device will hold, against what it has.

Per device: the parameters, the optimizer's moments, the gradients, the frozen reference policy,
the training step's activations (under its remat policy, logits tiles included), the sampler's
KV cache and its whole copy of the weights (`mesh.sampling_weights`). Parameter-sized figures are
counted exactly from the architecture's shapes and the mesh's shardings (no weights are read).
Activations come from the compiled training step's `memory_analysis()` at two and three layers,
extrapolated to the model's depth (a layer's saved activations are the difference); where a backend
gives no analysis, or a run has no device memory to weigh them against (CPU without
`config.hardware`; a dry run compiles all the same), from a rough analytic count.

`resolve` first turns the `auto` settings of the real-model presets (`configs/presets.py`) into
values for `config.hardware`: the mesh, float32 master parameters where they take at most half a
device, the target's remat policy, one row per device per micro-batch, and the sampler's gathered
copy of the weights where it takes at most a quarter of a device. `--config.dry_run=True`
prints the plan, writes `workdir/plan.json` and exits: status 0 when it fits, 1 with one line that
says what to change when it does not.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath

from sv_jax import hardware
from sv_jax.distributed import on_process_zero
from sv_jax.errors import UserError
from sv_jax.models import ModelConfig, logical_axes, param_shapes, param_shardings
from sv_jax.models.hf import read_hf_config
from sv_jax.models.partitioning import RULES
from sv_jax.sharding import (batch_sharding, data_parallelism, mesh_of, rows_sharding, split_over_model_only,
                             state_shardings)
from sv_jax.sampling import prompt_bucket
from sv_jax.training.lm import LMStep, init_train_state
from sv_jax.training.optimizer import make_optimizer
from sv_jax.training.offline import QUESTIONS_A_SAMPLER_BATCH
from sv_jax.training.ppo import PPOStep
from sv_jax.training.rollout import row_ladder

GIB = hardware.GIB
SAMPLING_WEIGHTS = ("auto", "gathered", "sharded")
BUILTIN_VOCAB = 1024  # the built-in task's tokenizer (sv_jax.tasks.tokenizer), rounded to 64


class DoesNotFit(UserError):
    """A dry run's plan exceeds the device memory (exit status 1)."""


def architecture(config: ml_collections.ConfigDict, param_dtype: str = "") -> ModelConfig:
    """The model a run trains or samples, without its weights: `model.path`'s config.json, else the
    preset's `model.architecture`, else the built-in task's initial policy (`config.base`)."""
    dtypes = dict(dtype=config.model.dtype, param_dtype=param_dtype or config.model.param_dtype)
    if config.model.path:
        source = epath.Path(config.model.path) / "config.json"
        return ModelConfig.from_hf(read_hf_config(config.model.path), str(source), **dtypes)
    if config.model.get("architecture"):
        return ModelConfig.from_hf(config.model.architecture.to_dict(), "config key 'model.architecture'", **dtypes)
    if "base" not in config:
        raise UserError("config key 'model.path' is empty: no model to plan for")
    base = config.base
    return ModelConfig(family="llama", vocab_size=BUILTIN_VOCAB, hidden_size=base.hidden_size,
                       intermediate_size=base.intermediate_size, num_layers=base.num_layers,
                       num_heads=base.num_heads, num_kv_heads=base.num_heads,
                       head_dim=base.hidden_size // base.num_heads, tie_word_embeddings=True, **dtypes)


def resolve(config: ml_collections.ConfigDict) -> None:
    """Replaces the `auto` settings (mesh axes `("auto",)`, dtype or remat `"auto"`, micro-batches 0)
    with values for `config.hardware` (or for this machine when it names none)."""
    target = hardware.target(config.hardware) if config.hardware else None
    if target and jax.device_count() != target.devices:
        raise UserError(f"config key 'hardware': {target.name} has {target.devices} devices, this run has "
                        f"{jax.device_count()}")
    if tuple(config.mesh.axes) == ("auto",):
        parallel = target.model_parallel if target else 1
        config.mesh.shape, config.mesh.axes = ((-1, parallel), ("fsdp", "model")) if parallel > 1 else ((-1,), ("fsdp",))
    if config.model.dtype == "auto":
        config.model.dtype = "bfloat16" if target else "float32"
    if config.model.param_dtype == "auto":
        # float32 master parameters (with their gradients and the reference) where they take at
        # most half a device; else bfloat16 (Adam's moments stay float32 either way)
        count = sum(math.prod(x.shape) for x in jax.tree.leaves(param_shapes(architecture(config, "float32"))))
        fits = target is None or (4 + 8 + 4 + 4) * count / target.devices <= 0.5 * target.memory_bytes
        config.model.param_dtype = "float32" if fits else "bfloat16"
    _resolve_sampling_weights(config, target)
    dp = data_parallelism(mesh_of(config))
    for section, rows in (("sft", lambda: config.sft.batch_size),
                          ("rl", lambda: config.rl.questions_per_step * config.rl.samples_per_question
                           // max(config.rl.minibatches, 1))):
        if section not in config:
            continue
        if config[section].remat == "auto":
            config[section].remat = target.remat if target else "none"
        if config[section].micro_batches == 0:  # about one row per data-parallel device per micro-batch
            micro = max(rows() // dp, 1) if target else 1
            while rows() % micro:
                micro -= 1
            config[section].micro_batches = micro


def _resolve_sampling_weights(config: ml_collections.ConfigDict, target: hardware.Target | None) -> None:
    """`mesh.sampling_weights` auto: gathered where the copy takes at most a quarter of a device, or
    where the device's memory (or the model) is unknown."""
    setting = config.mesh.sampling_weights
    if setting not in SAMPLING_WEIGHTS:
        raise UserError(f"config key 'mesh.sampling_weights': {setting!r} is not one of {', '.join(SAMPLING_WEIGHTS)}")
    if setting != "auto":
        return
    memory = target.memory_bytes if target else _device_memory()
    try:
        mesh = mesh_of(config)
        fits = memory is None or _sampling_copy_bytes(architecture(config).replace(mesh=mesh), mesh) <= memory / 4
    except UserError:  # no model to weigh: its stage says why in its own words
        fits = True
    config.mesh.sampling_weights = "gathered" if fits else "sharded"


def _update_rows(config: ml_collections.ConfigDict, multiple: int) -> int:
    """The most rows a PPO update packs: every response of a minibatch (branches too) in its own row."""
    rl = config.rl
    return row_ladder(-(-(rl.questions_per_step + rl.branches) * rl.samples_per_question // rl.minibatches),
                      multiple, 1)[0]


@dataclasses.dataclass(frozen=True)
class Training:
    """A stage's training step: `rows` of `time` tokens in `micro_batches` slices."""

    kind: str  # lm | ppo
    rows: int
    time: int
    micro_batches: int
    remat: str
    reference: bool


def training(config: ml_collections.ConfigDict, stage: str, dp: int) -> Training | None:
    """The stage's training step at its largest (an RL update: every response of a minibatch a row)."""
    if stage == "base":
        base = config.base
        return Training("lm", base.batch_size, base.seq_len, base.micro_batches, "none", False)
    if stage == "sft":
        sft = config.sft
        return Training("lm", sft.batch_size, sft.seq_len, sft.micro_batches, sft.remat, bool(sft.kl_coef))
    if stage == "rl":
        rl = config.rl
        time = prompt_bucket(config.plan.prompt_tokens) + rl.max_new_tokens
        return Training("ppo", _update_rows(config, dp * rl.micro_batches), time, rl.micro_batches, rl.remat, True)
    if stage == "offline":  # one response a row, the step of PPO's shape (its objective differs, not its memory)
        offline = config.offline
        time = prompt_bucket(config.plan.prompt_tokens) + offline.max_new_tokens
        rows = -(-offline.batch_size // (dp * offline.micro_batches)) * dp * offline.micro_batches
        return Training("ppo", rows, time, offline.micro_batches, offline.remat, True)
    return None


def sampling(config: ml_collections.ConfigDict, stage: str) -> tuple[int, int] | None:
    """Rows and slots of the stage's largest KV cache."""
    prompt = prompt_bucket(config.plan.prompt_tokens)
    if stage == "data":
        return config.data.batch_size * config.data.k, prompt + config.data.max_new_tokens
    if stage == "eval":
        return config.eval.batch_size, prompt + config.eval.max_new_tokens
    if stage == "rl":
        return config.rl.questions_per_step * config.rl.samples_per_question, prompt + config.rl.max_new_tokens
    if stage == "sample":
        return config.sample.batch_size * config.sample.num_samples, prompt + config.sample.max_new_tokens
    if stage == "offline":  # unless the responses come from a file
        return (None if config.offline.responses else (QUESTIONS_A_SAMPLER_BATCH * config.offline.samples_per_question,
                                                       prompt + config.offline.max_new_tokens))
    return None


def memory_plan(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The stage's plan as a JSON-able dict (bytes per device)."""
    stage = config.stage
    mesh = mesh_of(config)
    model = architecture(config).replace(mesh=mesh)
    dp = data_parallelism(mesh)
    target = hardware.target(config.hardware) if config.hardware else None
    param_bytes = _shard_bytes(model, mesh)
    figures = {"parameters": param_bytes, "optimizer": 0, "gradients": 0, "reference": 0, "activations": 0,
               "kv_cache": 0, "sampling_weights": 0}
    step = training(config, stage, dp)
    memory = target.memory_bytes if target else _device_memory()
    source = "none"
    if step is not None:
        figures["optimizer"] = 2 * _shard_bytes(model.replace(param_dtype="float32"), mesh)
        figures["gradients"] = param_bytes * (2 if step.micro_batches > 1 else 1)  # and the accumulated sum
        figures["reference"] = param_bytes if step.reference else 0
        model = model.replace(remat=step.remat)
        if memory is None and not config.dry_run:  # nothing to weigh it against: the rough count, no compiling
            figures["activations"], source = _analytic_activations(model, step, mesh), "analytic"
        elif memory is None or sum(figures.values()) <= memory:  # no compiling when the weights alone are too many
            figures["activations"], source = _activations(model, step, mesh)
    shape = sampling(config, stage)
    if shape is not None:
        rows, slots = shape
        figures["kv_cache"] = _kv_cache_bytes(model, -(-rows // dp), slots, mesh)
        if config.mesh.sampling_weights == "gathered":
            figures["sampling_weights"] = _sampling_copy_bytes(model, mesh)
    persistent = figures["parameters"] + figures["optimizer"] + figures["reference"]
    total = persistent + max(figures["gradients"] + figures["activations"], _sampling_bytes(figures))
    plan = {
        "stage": stage, "hardware": config.hardware or None, "devices": mesh.size, "mesh": dict(mesh.shape),
        "model": {"family": model.family, "layers": model.num_layers,
                  "parameters": sum(math.prod(x.shape) for x in jax.tree.leaves(param_shapes(model)))},
        "dtype": model.dtype, "param_dtype": model.param_dtype,
        "training": dataclasses.asdict(step) if step else None,
        "sampling": {"rows": shape[0], "slots": shape[1]} if shape else None,
        "bytes_per_device": {**figures, "total": total}, "device_memory": memory,
        "fits": memory is None or total <= memory, "activations_from": source,
        "undivided": undivided_dimensions(model, mesh),
    }
    plan["advice"] = None if plan["fits"] else _advice(config, plan)
    return plan


def _shard_bytes(model: ModelConfig, mesh, gathered: bool = False) -> int:
    """Bytes of one device's shards of every parameter (`gathered`: whole but for the `model` split)."""
    shapes, shardings = param_shapes(model), param_shardings(model, mesh)
    if gathered:
        shardings = split_over_model_only(shardings)
    return sum(math.prod(s.shard_shape(x.shape)) * x.dtype.itemsize
               for x, s in zip(jax.tree.leaves(shapes), jax.tree.leaves(shardings)))


def _sampling_copy_bytes(model: ModelConfig, mesh) -> int:
    """One device's part of the sampler's gathered copy of the weights (in the compute dtype)."""
    return _shard_bytes(model.replace(param_dtype=model.dtype), mesh, gathered=True)


def _sampling_bytes(figures: dict[str, int]) -> int:
    """What sampling holds beside the persistent state: its KV cache and its copy of the weights."""
    return figures["kv_cache"] + figures["sampling_weights"]


def _kv_cache_bytes(model: ModelConfig, rows: int, slots: int, mesh) -> int:
    """Keys and values of every layer for one device's rows (KV heads split over `model` when it divides them)."""
    parallel = mesh.shape.get("model", 1)
    heads = model.num_kv_heads // parallel if model.num_kv_heads % parallel == 0 else model.num_kv_heads
    return 2 * model.num_layers * rows * heads * slots * model.head_dim * jnp.dtype(model.dtype).itemsize


def _device_memory() -> int | None:
    stats = jax.local_devices()[0].memory_stats() or {}
    return stats.get("bytes_limit")


def _activations(model: ModelConfig, step: Training, mesh) -> tuple[int, str]:
    """The step's temporaries beyond its gradients, at the model's depth: compiled at two and three
    layers and extrapolated, or counted analytically where the backend gives no memory analysis."""
    depths = (2, 3)  # (a scan of one layer compiles differently: its figure is off the line)
    measured = [_compiled_temporaries(model.replace(num_layers=n), step, mesh) for n in depths]
    if None in measured:
        return _analytic_activations(model, step, mesh), "analytic"
    grads = [_shard_bytes(model.replace(num_layers=n), mesh) * (2 if step.micro_batches > 1 else 1) for n in depths]
    two, three = (t - g for t, g in zip(measured, grads))
    return max(two + (three - two) * (model.num_layers - 2), 0), "compiled"


def _compiled_temporaries(model: ModelConfig, step: Training, mesh) -> int | None:
    optimizer, _ = make_optimizer(1e-5, 10, warmup_steps=1)
    params = param_shapes(model)
    layout = param_shardings(model, mesh)
    init = functools.partial(init_train_state, optimizer=optimizer)
    if step.kind == "ppo":
        params, layout = {"policy": params}, {"policy": layout}
    state = jax.eval_shape(init, params)
    state_layout = state_shardings(state, layout, optimizer, mesh)
    state = _abstract(state, state_layout)
    if step.kind == "lm":
        tokens = jax.ShapeDtypeStruct((step.micro_batches, step.rows // step.micro_batches, step.time), jnp.int32,
                                      sharding=batch_sharding(mesh))
        batch = {k: tokens for k in ("inputs", "targets", "positions", "segment_ids", "loss_mask", "kl_mask")}
        program = LMStep(model, optimizer, kl_coef=0.1 if step.reference else 0.0)
        extra = (_abstract(params, layout),) if step.reference else ()
    else:
        rows = rows_sharding(mesh)
        ints = jax.ShapeDtypeStruct((step.rows, step.time), jnp.int32, sharding=rows)
        floats = jax.ShapeDtypeStruct((step.rows, step.time), jnp.float32, sharding=rows)
        batch = {**{k: ints for k in ("inputs", "targets", "positions", "segment_ids", "response_mask")},
                 **{k: floats for k in ("old_logprobs", "reference_logprobs", "advantages", "kl_weights")}}
        program = PPOStep(model, optimizer, temperature=1.0, kl_coef=0.05, micro_batches=step.micro_batches)
        extra = ()
    compiled = jax.jit(program, donate_argnums=0).lower(state, batch, *extra).compile()
    analysis = compiled.memory_analysis()
    return None if analysis is None else int(analysis.temp_size_in_bytes)


def _abstract(tree, shardings):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def _analytic_activations(model: ModelConfig, step: Training, mesh) -> int:
    """A rough count (the fallback): per layer, what its backward pass keeps for one device's
    micro-batch (bytes per token by remat policy, and the causal attention's float32 weights
    without remat), plus one layer's working set and one tile of logits."""
    parallel = mesh.shape.get("model", 1)
    rows = max(step.rows // step.micro_batches // data_parallelism(mesh), 1)
    tokens, width = rows * step.time, jnp.dtype(model.dtype).itemsize
    hidden, mlp = model.hidden_size, model.intermediate_size / parallel
    heads = model.num_heads / parallel
    projections = (heads + 2 * model.num_kv_heads / parallel) * model.head_dim
    per_token = {"full": hidden, "dots": 2 * hidden + projections + heads * model.head_dim + 3 * mlp,
                 "none": 6 * hidden + 2 * projections + 2 * heads * model.head_dim + 5 * mlp}
    scores = rows * heads * step.time * step.time / 2 * 4
    kept = tokens * per_token[step.remat] * width + (scores if step.remat == "none" else 0)
    working = tokens * per_token["none"] * width + scores
    vocab_tile = min(model.vocab_chunk or model.vocab_size, model.vocab_size) / parallel
    logits = 3 * rows * min(model.logits_chunk or step.time, step.time) * vocab_tile * 4
    return int(model.num_layers * kept + working + logits)


def undivided_dimensions(model: ModelConfig, mesh) -> list[str]:
    """Parameter dimensions a mesh axis of more than one device should split but does not divide
    (they stay whole on that axis: more memory per device than the mesh suggests)."""
    found = {}
    names = jax.tree.leaves(logical_axes(model), is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    for spec, shape in zip(names, jax.tree.leaves(param_shapes(model))):
        for name, size in zip(spec, shape.shape):
            for axis in RULES.get(name, ()):
                devices = mesh.shape.get(axis, 1)
                if devices > 1 and size % devices:
                    found[(name, size, axis)] = f"{name} ({size}) is not divisible by {axis}={devices}: whole on {axis}"
    return sorted(found.values())


def _advice(config: ml_collections.ConfigDict, plan: dict) -> str:
    """What to change, from the largest part of the plan."""
    figures, memory = plan["bytes_per_device"], plan["device_memory"]
    step, stage = plan["training"], plan["stage"]
    persistent = figures["parameters"] + figures["optimizer"] + figures["reference"]
    if persistent + figures["gradients"] > 0.8 * memory:
        return ("set model.param_dtype=bfloat16 or use more devices" if plan["param_dtype"] == "float32"
                else "use more devices (a larger slice or more nodes)")
    sampling_peak = _sampling_bytes(figures) >= figures["gradients"] + figures["activations"]
    if sampling_peak and figures["sampling_weights"] >= figures["kv_cache"]:
        return "set mesh.sampling_weights=sharded (sampling's whole copy of the weights)"
    if sampling_peak:
        key = {"data": "data.batch_size", "eval": "eval.batch_size", "sample": "sample.batch_size",
               "rl": "rl.questions_per_step", "offline": "offline.samples_per_question"}[stage]
        return f"lower {key} (the KV cache holds its rows)"
    if step["remat"] != "full":
        return f"set {stage}.remat=full"
    if step["rows"] // step["micro_batches"] > plan["devices"]:
        return f"raise {stage}.micro_batches"
    return "use shorter rows or more devices"


def describe(plan: dict) -> str:
    figures = plan["bytes_per_device"]
    parts = ", ".join(f"{name} {figures[name] / GIB:.2f}" for name in figures if name != "total")
    memory = plan["device_memory"]
    against = f" of {memory / GIB:.2f} GiB" if memory else " (device memory unknown)"
    lines = [f"plan: {plan['stage']} on {plan['devices']} devices {plan['mesh']}, {plan['model']['parameters'] / 1e9:.3f} B "
             f"parameters in {plan['param_dtype']}: {figures['total'] / GIB:.2f} GiB per device{against} "
             f"({parts}; activations {plan['activations_from']})"]
    lines += [f"plan: {note}" for note in plan["undivided"]]
    if not plan["fits"]:
        lines.append(f"plan: does not fit; {plan['advice']}")
    return "\n".join(lines)


def announce(config: ml_collections.ConfigDict) -> dict | None:
    """Prints the stage's plan (its `auto` settings resolved) and writes it to `workdir/plan.json`;
    a dry run then ends here. Without a readable model a run goes on without a plan (the stage says
    what is wrong with the model in its own words, after what it checks first)."""
    try:
        plan = memory_plan(config)
    except UserError as error:
        if config.dry_run:
            raise
        print(f"plan: none ({error})")
        return None
    print(describe(plan))
    directory = epath.Path(config.workdir)

    def write() -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "plan.json").write_text(json.dumps(plan, indent=2, default=_plain) + "\n")

    on_process_zero(write, "memory plan")
    if config.dry_run and not plan["fits"]:
        memory = plan["device_memory"]
        raise DoesNotFit(f"the {plan['stage']} stage needs {plan['bytes_per_device']['total'] / GIB:.1f} GiB per device "
                         f"of {memory / GIB:.1f} on {config.hardware or 'this machine'}: {plan['advice']}")
    return plan


def _plain(value):
    return value.item() if isinstance(value, np.generic) else str(value)
