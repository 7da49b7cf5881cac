"""Stage `sample`: K completions per prompt of a JSONL file, in input order, to workdir/samples.jsonl
(with each input's `id`, if it has one)."""

from __future__ import annotations

import ml_collections
from absl import logging
from etils import epath

from sv_jax.distributed import gather_by_index, map_shares, on_process_zero
from sv_jax.errors import UserError
from sv_jax.io import read_jsonl, write_jsonl
from sv_jax.models import load_hf
from sv_jax.sampling import Sampler, SamplingSpec, stop_sequences_for
from sv_jax.sharding import gathers_sampling_weights, mesh_of


def run(config: ml_collections.ConfigDict) -> None:
    settings = config.sample
    if not config.model.path:
        raise UserError("config key 'model.path' is empty: set it to a local HF model folder")
    if not settings.input:
        raise UserError("config key 'sample.input' is empty: set it to a JSONL file of prompts or questions")
    inputs = read_jsonl(settings.input, any_of=("prompt", "question"))
    try:
        prompts = [r["prompt"] if "prompt" in r else settings.question_template.format(question=r["question"])
                   for r in inputs]
    except (KeyError, IndexError) as error:
        raise UserError(f"config key 'sample.question_template': no field {error} to fill; use {{question}}") from None

    model = load_hf(config.model.path, config.model.dtype, config.model.param_dtype, mesh_of(config))
    tokenizer = model.tokenizer
    spec = SamplingSpec(
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        top_k=settings.top_k,
        top_p=settings.top_p,
        stop_sequences=stop_sequences_for(tokenizer, tuple(settings.stop)),
        vocab_size=len(tokenizer),
    )
    sampler = Sampler(model.config, model.params, batch_size=settings.batch_size,
                      gather_weights=gathers_sampling_weights(config))
    here = sampler.sample(map_shares(tokenizer.encode, prompts, "prompts"), spec, settings.num_samples, settings.seed,
                          progress=True)
    logging.info("sample: %d programs compiled", sampler.compilations)
    # each process decodes the samples its devices made; an input's id comes along (offline RL reads it)
    decoded = {i: [{**({"id": inputs[i]["id"]} if "id" in inputs[i] else {}), "prompt": prompts[i],
                    "sample_index": sample.sample_index,
                    "completion": tokenizer.decode(sample.token_ids, skip_special_tokens=True),
                    "token_ids": sample.token_ids, "logprob": sample.logprob} for sample in samples]
               for i, samples in here.items()}
    records = [record for samples in gather_by_index(decoded, len(prompts)) for record in samples]

    output = epath.Path(config.workdir) / "samples.jsonl"
    on_process_zero(lambda: write_jsonl(output, records), "sample output")
    print(f"sample: wrote {len(records)} samples of {len(prompts)} prompts to {output}")
