"""Settings every stage shares. Stage files import `get_config` and change what they need."""

import os

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.stage = ""  # base | data | sft | rl | offline | eval | sample
    config.workdir = "workdir"  # every stage reads and writes under it (--workdir overrides)
    config.seed = 0
    # A named target (sv_jax/hardware.py: v5e-8, v5e-64, v6e-8, v5p-8, v5p-32, 1xh100, 8xh100, 1xh200,
    # 8xh200): the memory plan budgets against its devices, and the presets' `auto` settings resolve for it.
    config.hardware = ""
    # JAX's persistent compilation cache (sv_jax/compilation.py): a program compiled once on this
    # machine loads in later runs and stages. Empty: off. JAX_COMPILATION_CACHE_DIR sets the default.
    config.compilation_cache_dir = os.environ.get("JAX_COMPILATION_CACHE_DIR", "~/.cache/sv_jax/jax")
    config.dry_run = False  # print the memory plan, write workdir/plan.json and exit (1 if it does not fit)
    config.plan = ml_collections.ConfigDict()
    config.plan.prompt_tokens = 256  # the longest prompt the plan sizes rows and KV caches for

    config.model = ml_collections.ConfigDict()
    config.model.path = ""  # a local HF folder (config.json, *.safetensors, tokenizer files)
    config.model.dtype = "float32"  # compute dtype; bfloat16 on GPU / TPU (slower than float32 on CPU)
    config.model.param_dtype = "float32"  # Adam's moments are float32 whatever this is
    # The architecture as HF config.json keys, for a plan without the model folder (the presets set it).
    config.model.architecture = ml_collections.ConfigDict()

    config.mesh = ml_collections.ConfigDict()
    config.mesh.shape = (-1,)  # devices per mesh axis; -1 takes the rest
    config.mesh.axes = ("data",)
    # The sampler's weights: "gathered" once per call into a whole copy on every device (split only
    # over `model`) so that decode steps need no FSDP all-gather of every layer; "sharded": decode from
    # the FSDP shards (chips too small for the copy); "auto": gathered where the copy, in the compute
    # dtype, takes at most a quarter of a device (or the device's memory is unknown).
    config.mesh.sampling_weights = "auto"

    # Several processes (hosts) as one run, through jax.distributed: 1 process needs none of it;
    # num_processes 0, an empty coordinator and process_id -1 are detected (TPU VM pods, SLURM).
    config.distributed = ml_collections.ConfigDict()
    config.distributed.coordinator = ""  # host:port of process 0
    config.distributed.num_processes = 1
    config.distributed.process_id = -1
    return config
