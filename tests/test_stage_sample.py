"""Stage `sample` end to end: input order, output fields, and bad input as one line."""

import json
import subprocess
import sys
from pathlib import Path

from configs import sample as sample_config
from sv_jax.models import load_hf
from sv_jax.sampling import Sampler, SamplingSpec
from sv_jax.stages import sample

REPO = Path(__file__).resolve().parent.parent


def test_writes_k_samples_per_prompt_in_input_order(qwen2_folder, tmp_path):
    questions = ["What is 12 + 3 ?", "Tom has 7 apples .", "A number increased by 27 is 93 ."]
    (tmp_path / "in.jsonl").write_text(
        json.dumps({"prompt": questions[0]}) + "\n" + "".join(json.dumps({"question": q}) + "\n" for q in questions[1:])
    )
    config = sample_config.get_config()
    config.workdir = str(tmp_path / "work")
    config.model.path = str(qwen2_folder)
    config.sample.input = str(tmp_path / "in.jsonl")
    config.sample.num_samples = 2
    config.sample.temperature = 0.0
    config.sample.max_new_tokens = 6
    sample.run(config)

    lines = [json.loads(line) for line in (tmp_path / "work" / "samples.jsonl").read_text().splitlines()]
    expected_prompts = [questions[0]] + [f"Question: {q}\nAnswer:" for q in questions[1:]]
    assert [(r["prompt"], r["sample_index"]) for r in lines] == [(p, i) for p in expected_prompts for i in (0, 1)]
    model = load_hf(qwen2_folder)
    tokenizer = model.tokenizer
    greedy = Sampler(model.config, model.params).sample(
        [tokenizer.encode(p) for p in expected_prompts],
        SamplingSpec(max_new_tokens=6, temperature=0.0, stop_sequences=((tokenizer.eos_token_id,),),
                     vocab_size=len(tokenizer)),
    )
    for record, prompt_samples in zip(lines[::2], greedy.values()):
        assert record["token_ids"] == prompt_samples[0].token_ids
        assert record["completion"] == tokenizer.decode(record["token_ids"], skip_special_tokens=True)
        assert isinstance(record["logprob"], float) and record["logprob"] <= 0


def test_malformed_line_is_named_and_earlier_output_kept(qwen2_folder, tmp_path):
    (tmp_path / "in.jsonl").write_text('{"prompt": "fine"}\n{"prompt": broken\n')
    (tmp_path / "samples.jsonl").write_text("earlier output\n")
    result = subprocess.run(
        [sys.executable, "-m", "sv_jax.main", "--config=configs/sample.py", f"--workdir={tmp_path}",
         f"--config.model.path={qwen2_folder}", f"--config.sample.input={tmp_path / 'in.jsonl'}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"sv_jax: error: {tmp_path / 'in.jsonl'}:2: not valid JSON: Expecting value"]
    assert (tmp_path / "samples.jsonl").read_text() == "earlier output\n"


def test_unreadable_model_folder_is_one_line(tmp_path):
    (tmp_path / "in.jsonl").write_text('{"prompt": "fine"}\n')
    result = subprocess.run(
        [sys.executable, "-m", "sv_jax.main", "--config=configs/sample.py", f"--workdir={tmp_path}",
         f"--config.model.path={tmp_path / 'nowhere'}", f"--config.sample.input={tmp_path / 'in.jsonl'}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert str(tmp_path / "nowhere") in result.stderr
