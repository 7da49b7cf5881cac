"""The entry point: every kind of bad invocation ends in one line naming the fault, exit status 2."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_main(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sv_jax.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )


@pytest.mark.parametrize(
    "args, named",
    [
        (["--config=configs/rl.py", "--config.stage=nope"], "'nope'"),
        (["--config=configs/rl.py", "--config.model.no_such_key=1"], "model.no_such_key"),
        (["--config=configs/rl.py", "--config.no_such_section.x=1"], "no_such_section.x"),
        (["--config=configs/rl.py", "--config.seed=abc"], "--config.seed"),
        (["--config=configs/missing.py"], "configs/missing.py"),
        (["--config=configs/rl.py", "--no_such_flag"], "no_such_flag"),
        ([], "--config"),
        (["--config=configs/rl.py", "--config.distributed.num_processes=-2"], "distributed.num_processes"),
        (["--config=configs/rl.py", "--config.distributed.num_processes=2", "--config.distributed.process_id=2"],
         "distributed.process_id"),
        (["--config=configs/rl.py", "--config.rl.remat=everything"], "rl.remat"),
        (["--config=configs/sft.py", "--config.sft.remat=True"], "sft.remat"),
    ],
)
def test_bad_invocation_is_one_line_naming_it(args, named):
    result = run_main(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_stage_config_loads_from_another_directory(tmp_path):
    """`configs/sample.py` imports `configs.default`; it must work wherever the command runs."""
    result = run_main(f"--config={REPO / 'configs' / 'sample.py'}", f"--workdir={tmp_path}", cwd=tmp_path)
    assert "cannot load" not in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_every_stage_config_names_its_stage():
    from sv_jax.stages import STAGES

    for stage in STAGES:
        module = __import__(f"configs.{stage}", fromlist=["get_config"])
        assert module.get_config().stage == stage
