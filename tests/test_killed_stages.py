"""SIGKILL at a random point of `base` and of `data`: the rerun writes byte-identical outputs (π₀'s
weights; stage 0's trajectories)."""

import random
import shutil
import subprocess
import time

from tests.killing import ENV, REPO, stage_command


def run(command: list[str]) -> float:
    """Runs `command` to its end; its wall time."""
    began = time.perf_counter()
    subprocess.run(command, cwd=REPO, env=ENV, check=True, capture_output=True, timeout=600)
    return time.perf_counter() - began


def killed_then_rerun(command: list[str], duration: float) -> str:
    """Runs `command`, SIGKILLs it at a random point of an uninterrupted run's `duration`, then reruns it
    to its end; says when it was killed (for a failure's message)."""
    delay = random.uniform(0.1, 0.95) * duration
    process = subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        process.wait(timeout=delay)
        when = f"ended before the kill at {delay:.1f} s"
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        when = f"killed at {delay:.1f} s of {duration:.1f}"
    run(command)
    return when


def test_base_killed_anywhere_reruns_to_the_same_weights(tmp_path):
    def command(name):
        return stage_command("configs/base.py:tiny", tmp_path / name)

    duration = run(command("uninterrupted"))
    when = killed_then_rerun(command("killed"), duration)
    weights = [(tmp_path / name / "base" / "model" / "model.safetensors").read_bytes()
               for name in ("uninterrupted", "killed")]
    assert weights[0] == weights[1], when


def test_data_killed_anywhere_reruns_to_the_same_trajectories(tmp_path):
    run(stage_command("configs/base.py:tiny", tmp_path / "prepared"))
    for name in ("uninterrupted", "killed"):
        shutil.copytree(tmp_path / "prepared", tmp_path / name)

    def command(name):
        return stage_command("configs/data.py:tiny", tmp_path / name)

    duration = run(command("uninterrupted"))
    when = killed_then_rerun(command("killed"), duration)
    written = [(tmp_path / name / "data" / "trajectories.jsonl").read_bytes() for name in ("uninterrupted", "killed")]
    assert written[0] == written[1], when
