"""The main job as a user starts it, `python -m sv_jax.main --config=configs/rl.py:tiny`, on one
process of eight devices: every stage runs and it ends with the table. Then on two real processes of
four CPU devices each, joined by jax.distributed over loopback (gloo), killed during RL and rerun: it
computes what the one process did and writes each output once. One module in one xdist group
(pytest.ini: --dist loadgroup), so that the one-process job runs once for both tests."""

import json
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import transformers
from safetensors.numpy import load_file

from configs import rl as rl_config
from tests.cluster import REPO, Cluster, environment, run_cluster, xla_flags

pytestmark = pytest.mark.xdist_group("main_job")
MAIN_JOB = ["--config=configs/rl.py:tiny", "--config.mesh.shape=(1,8,1)", "--config.mesh.axes=('data','fsdp','model')"]
TRAINED = ("base", "sft", "sft_correct_only", "rl", "rl_outcome")


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The workdir of the tiny main job on one process of 8 devices, mesh (1, 8, 1)."""
    workdir = tmp_path_factory.mktemp("one_process")
    done = subprocess.run([sys.executable, "-m", "sv_jax.main", *MAIN_JOB, f"--workdir={workdir}"], cwd=REPO,
                          env={**environment(), "XLA_FLAGS": xla_flags(8)}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return workdir


def test_main_job_runs_every_stage_and_ends_with_the_table(one_process):
    """base → data → sft → rl (process, then outcome) → eval of every policy."""
    table = json.loads((one_process / "eval" / "table.json").read_text())
    assert list(table) == ["base", "correct-only SFT", "S²R SFT", "S²R RL (outcome)", "S²R RL (process)"]
    assert all(row["n"] == rl_config.get_config("tiny").eval.num_questions for row in table.values())
    assert all({"fix_rate", "repeat_rate", "break_rate"} <= set(row) for row in table.values())
    assert (one_process / "eval" / "table.md").read_text().count("\n") == 2 + len(table)
    for name in ("rl", "rl_outcome"):
        logged = metrics(one_process, name)
        assert [m["step"] for m in logged] == [1, 2]
        assert {"reward", "acc_final", "verify_acc", "wrong_to_right", "right_to_wrong", "fix_rate", "repeat_rate",
                "break_rate", "kl", "clip_fraction", "loss", "lr"} <= set(logged[-1])
        for m in logged:  # the final answer differs from the first exactly by the corrections
            assert m["acc_final"] - m["acc_first"] == pytest.approx(m["wrong_to_right"] - m["right_to_wrong"])
        assert (one_process / name / "tensorboard").is_dir()
        transformers.AutoModelForCausalLM.from_pretrained(one_process / name / "model")


def read_rows(log: str, process: int, what: str) -> tuple[int, int, int]:
    """The first rows (first, last, of how many) of `what` that process `process` says it read."""
    found = re.search(rf"process {process} of 2: {what} (\d+)-(\d+) of (\d+)", log)
    assert found, f"process {process} logged no share of {what}"
    return tuple(map(int, found.groups()))


def assert_trained_alike(got: np.ndarray, want: np.ndarray, name: str) -> None:
    """Equal weights up to the order of the cross-process sums. Adam scales each gradient element to
    about one learning rate, so an element whose gradient is near those sums' rounding noise (a rarely
    used embedding row) may move differently by up to ~lr a step (5e-5 in RL here; 2.2e-5 seen on an
    AVX2 CPU); a lost optimizer state or a skipped step moves most elements, which this still fails."""
    difference = np.abs(got - want)
    assert (difference > 1e-5).mean() <= 0.01 and difference.max() <= 1e-4, (
        f"{name}: {(difference > 1e-5).sum()} of {difference.size} elements differ by over 1e-5, "
        f"at most {difference.max():.2e}")


def metrics(workdir, stage):
    return [json.loads(line) for line in (workdir / stage / "metrics.jsonl").read_text().splitlines()]


def test_main_job_on_two_processes_killed_during_rl_and_rerun_equals_one_process(one_process, tmp_path):
    """The tiny main job on 2 processes of 4 devices, both SIGKILLed at RL's first checkpoint and then
    rerun: the rerun resumes RL there and the run ends with the one process's table, metrics (a line
    a step, not a process), evaluation records and parameters."""
    root = tmp_path
    two = [*MAIN_JOB, f"--workdir={root / 'two'}"]
    with Cluster(two, processes=2, devices=4, logs=root / "killed_logs") as killed:
        checkpoint, deadline = root / "two" / "rl" / "checkpoints" / "1", time.monotonic() + 300
        while not checkpoint.is_dir():
            assert killed.running() and time.monotonic() < deadline, "the run ended before RL's first checkpoint"
            time.sleep(0.05)
        killed.kill()  # SIGKILL, both processes
    assert not (root / "two" / "rl" / "model").exists()
    rerun = run_cluster(two, processes=2, devices=4, timeout=300, logs=root / "rerun_logs")
    printed = [rerun.log(i, "out").read_text() for i in range(2)]
    assert re.search(r"rl rl: resuming from step [1-9]", printed[0]), printed[0]

    workdirs = (one_process, root / "two")
    assert (workdirs[1] / "eval" / "table.md").read_text() == (workdirs[0] / "eval" / "table.md").read_text()
    for stage in TRAINED:
        one, two = (metrics(w, stage) for w in workdirs)
        assert [line["step"] for line in two] == [line["step"] for line in one]  # a line a step, not a process
        for want, got in zip(one, two):
            for key in ("loss", "kl", "reward", "acc_final"):
                if key in want:
                    assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), (stage, key)
        exported = [load_file(w / stage / "model" / "model.safetensors") for w in workdirs]
        for name in exported[0]:
            assert_trained_alike(exported[1][name], exported[0][name], f"{stage} {name}")
    for name in ("sft", "rl_process"):
        records = [(w / "eval" / f"{name}.records.jsonl").read_text() for w in workdirs]
        assert records[1] == records[0]
    # process 0 alone prints (gloo itself writes a few lines to every process's standard output)
    assert "S²R RL (process)" in printed[0] and "rl_outcome:" not in printed[1] and "| policy |" not in printed[1]
    logged = [killed.log(i, "err").read_text() + rerun.log(i, "err").read_text() for i in range(2)]
    for what in ("questions", "trajectories", "training questions", "eval questions"):
        (first, last, total), (second_first, second_last, second_total) = (
            read_rows(logged[i], i, what) for i in range(2))  # each process tokenized its own share
        assert first == 0 and second_first == last + 1 and second_last + 1 == total == second_total, what
