"""The persistent compilation cache: a second run of a command compiles nothing, and a corrupt or
unwritable cache folder costs one warning line, never the run. Stages of one process share equal
jitted programs."""

import functools
import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from sv_jax import compilation
from sv_jax.models import ModelConfig
from sv_jax.training.lm import LMStep
from sv_jax.training.optimizer import make_optimizer

REPO = Path(__file__).resolve().parent.parent


def sample(tmp_path: Path, model: Path, cache: Path) -> subprocess.CompletedProcess:
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ("1 + 2 =", "Tom has")))
    command = [sys.executable, "-m", "sv_jax.main", "--config=configs/sample.py", f"--workdir={tmp_path / 'work'}",
               f"--config.model.path={model}", f"--config.sample.input={tmp_path / 'in.jsonl'}",
               "--config.sample.max_new_tokens=8", f"--config.compilation_cache_dir={cache}"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


def counts(done: subprocess.CompletedProcess) -> tuple[int, int]:
    line = next(line for line in done.stdout.splitlines() if line.startswith("compilation cache:"))
    words = line.split()
    return int(words[2]), int(words[5])  # "compilation cache: L programs loaded, C compiled (dir)"


def test_a_second_run_loads_every_program_and_a_corrupt_cache_is_one_warning(qwen2_folder, tmp_path):
    cache = tmp_path / "cache"
    loaded, compiled = counts(sample(tmp_path, qwen2_folder, cache))  # (a program met twice loads the second time)
    assert compiled > 0
    assert counts(sample(tmp_path, qwen2_folder, cache)) == (loaded + compiled, 0)
    for entry in (p for p in cache.rglob("*") if p.is_file()):
        entry.write_bytes(b"not an executable")
    corrupt = sample(tmp_path, qwen2_folder, cache)
    warnings = [line for line in corrupt.stderr.splitlines() if "compilation cache" in line]
    assert warnings == [f"sv_jax: warning: compilation cache {cache}: an entry could not be read; compiled without it"]
    again = counts(corrupt)
    assert sum(again) == loaded + compiled and again[1] >= compiled  # every unreadable entry compiled anew


def test_an_unwritable_cache_folder_is_one_warning_and_no_cache(capsys):
    assert compilation.enable("/proc/sv_jax-cache") is None
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sv_jax: warning: compilation cache /proc/sv_jax-cache is not writable")


def test_equal_steps_and_buffers_share_one_jitted_function_and_unequal_ones_do_not():
    """What rl and rl_outcome, or sft and sft_correct_only, build with equal settings is one function,
    so the second stage compiles nothing; any difference (settings, layout) is another function."""
    config = ModelConfig(family="qwen2", vocab_size=64, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2,
                         num_kv_heads=2, head_dim=8)

    def step(learning_rate: float):
        return compilation.shared_jit(LMStep(config, make_optimizer(learning_rate, 10)[0]), donate_argnums=0)

    assert step(1e-3) is step(1e-3)
    assert step(2e-3) is not step(1e-3)
    mesh = Mesh(np.array(jax.devices()[:2]), ("fsdp",))

    def zeros(shape, spec):
        return compilation.shared_jit(functools.partial(jnp.zeros, shape, jnp.float32),
                                      out_shardings=NamedSharding(mesh, spec))

    assert zeros((4, 2), PartitionSpec("fsdp")) is zeros((4, 2), PartitionSpec("fsdp"))
    assert zeros((4, 2), PartitionSpec()) is not zeros((4, 2), PartitionSpec("fsdp"))
    assert zeros((6, 2), PartitionSpec("fsdp")) is not zeros((4, 2), PartitionSpec("fsdp"))
