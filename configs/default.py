"""Settings every stage shares. Stage files import `get_config` and change what they need."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.stage = ""  # base | data | sft | rl | eval | sample
    config.workdir = "workdir"  # every stage reads and writes under it (--workdir overrides)
    config.seed = 0

    config.model = ml_collections.ConfigDict()
    config.model.path = ""  # a local HF folder (config.json, *.safetensors, tokenizer files)
    config.model.dtype = "float32"  # compute dtype; bfloat16 on GPU / TPU (slower than float32 on CPU)
    config.model.param_dtype = "float32"

    config.mesh = ml_collections.ConfigDict()
    config.mesh.shape = (-1,)  # devices per mesh axis; -1 takes the rest
    config.mesh.axes = ("data",)

    # Several processes (hosts) as one run, through jax.distributed: 1 process needs none of it;
    # num_processes 0, an empty coordinator and process_id -1 are detected (TPU VM pods, SLURM).
    config.distributed = ml_collections.ConfigDict()
    config.distributed.coordinator = ""  # host:port of process 0
    config.distributed.num_processes = 1
    config.distributed.process_id = -1
    return config
