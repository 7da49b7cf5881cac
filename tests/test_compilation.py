"""The persistent compilation cache: a second run of a command compiles nothing, and a corrupt or
unwritable cache folder costs one warning line, never the run."""

import json
import subprocess
import sys
from pathlib import Path

from sv_jax import compilation

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
