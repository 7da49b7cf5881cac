"""Runs a stage's command to a checkpoint, kills it there, and compares its resumed result with an
uninterrupted run's: the exact-resume check every training stage's tests make."""

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from tests import FAST_COMPILE
from tests.cluster import REPO, environment

ENV = {**environment(), "XLA_FLAGS": FAST_COMPILE}  # one device; conftest adds the session's compilation cache


def stage_command(config: str, workdir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "sv_jax.main", f"--config={config}", f"--workdir={workdir}", *overrides]


def kill_and_resume(command, prepared: Path, root: Path, stage: str, killed_after: int) -> None:
    """Copies the `prepared` workdir to `root/a` and `root/b`; in `a` runs `command(workdir)` and
    SIGKILLs it once a checkpoint at or past step `killed_after` exists, then reruns it; in `b` runs
    it uninterrupted. The exported policies must be identical."""
    for name in "ab":
        shutil.copytree(prepared, root / name)
    killed = subprocess.Popen(command(root / "a"), cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    checkpoints = root / "a" / stage / "checkpoints"
    deadline = time.time() + 300
    while not (checkpoints.is_dir() and any(p.name.isdigit() and int(p.name) >= killed_after
                                            for p in checkpoints.iterdir())):
        assert killed.poll() is None and time.time() < deadline, f"{stage} ended before step {killed_after}"
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (root / "a" / stage / "model").exists()

    for workdir in (root / "a", root / "b"):
        subprocess.run(command(workdir), cwd=REPO, env=ENV, check=True, capture_output=True, timeout=300)
    resumed, uninterrupted = (load_file(root / w / stage / "model" / "model.safetensors") for w in "ab")
    assert resumed.keys() == uninterrupted.keys()
    for name in resumed:
        np.testing.assert_array_equal(resumed[name], uninterrupted[name], err_msg=name)
