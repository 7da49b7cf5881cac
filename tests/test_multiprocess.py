"""Two real processes of four CPU devices each, joined by jax.distributed over loopback (gloo): the
tiny main job on their eight-device mesh computes what one process on eight devices does, writes
each output once, and a run whose processes are all killed during RL resumes exactly."""

import json
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.cluster import REPO, Cluster, run_cluster

MAIN_JOB = ["--config=configs/rl.py:tiny", "--config.mesh.shape=(1,8,1)", "--config.mesh.axes=('data','fsdp','model')"]
TRAINED = ("base", "sft", "sft_correct_only", "rl", "rl_outcome")


def read_rows(log: str, process: int, what: str) -> tuple[int, int, int]:
    """The first rows (first, last, of how many) of `what` that process `process` says it read."""
    found = re.search(rf"process {process} of 2: {what} (\d+)-(\d+) of (\d+)", log)
    assert found, f"process {process} logged no share of {what}"
    return tuple(map(int, found.groups()))


def metrics(workdir, stage):
    return [json.loads(line) for line in (workdir / stage / "metrics.jsonl").read_text().splitlines()]


def test_main_job_on_two_processes_equals_one_process_and_resumes_after_both_are_killed(tmp_path):
    """One test, so that xdist runs its main jobs once: on one process of 8 devices, on 2 processes
    of 4 uninterrupted, and on 2 processes killed during RL and rerun."""
    root = tmp_path
    subprocess.run([sys.executable, "-m", "sv_jax.main", *MAIN_JOB, f"--workdir={root / 'one'}"], cwd=REPO,
                   env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu",
                        "XLA_FLAGS": "--xla_force_host_platform_device_count=8"},
                   check=True, capture_output=True, timeout=300)
    cluster = run_cluster([*MAIN_JOB, f"--workdir={root / 'two'}"], processes=2, devices=4, timeout=300,
                          logs=root / "logs")
    assert (root / "two" / "eval" / "table.md").read_text() == (root / "one" / "eval" / "table.md").read_text()
    for stage in TRAINED:
        one, two = metrics(root / "one", stage), metrics(root / "two", stage)
        assert [line["step"] for line in two] == [line["step"] for line in one]  # a line a step, not a process
        for want, got in zip(one, two):
            for key in ("loss", "kl", "reward", "acc_final"):
                if key in want:
                    assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), (stage, key)
        exported = [load_file(root / w / stage / "model" / "model.safetensors") for w in ("one", "two")]
        for name in exported[0]:
            np.testing.assert_allclose(exported[1][name], exported[0][name], atol=1e-5, err_msg=f"{stage} {name}")
    for name in ("sft", "rl_process"):
        records = [(root / w / "eval" / f"{name}.records.jsonl").read_text() for w in ("one", "two")]
        assert records[1] == records[0]
    printed = [cluster.log(i, "out").read_text() for i in range(2)]
    # process 0 alone prints (gloo itself writes a few lines to every process's standard output)
    assert "S²R RL (process)" in printed[0] and "sft:" not in printed[1] and "| policy |" not in printed[1]
    logged = [cluster.log(i, "err").read_text() for i in range(2)]
    for what in ("questions", "trajectories", "training questions", "eval questions"):
        (first, last, total), (second_first, second_last, second_total) = (
            read_rows(logged[i], i, what) for i in range(2))  # each process tokenized its own share
        assert first == 0 and second_first == last + 1 and second_last + 1 == total == second_total, what

    # the stages before RL as the uninterrupted run left them; RL alone (no table) killed and rerun
    workdir, rl_only = tmp_path / "killed", [*MAIN_JOB, "--config.rl.report=False"]
    for stage in ("base", "data", "sft"):
        shutil.copytree(root / "two" / stage, workdir / stage)
    with Cluster([*rl_only, f"--workdir={workdir}"], processes=2, devices=4, logs=tmp_path / "killed_logs") as cluster:
        checkpoint, deadline = workdir / "rl" / "checkpoints" / "1", time.monotonic() + 300
        while not checkpoint.is_dir():
            assert cluster.running() and time.monotonic() < deadline, "the run ended before RL's first checkpoint"
            time.sleep(0.05)
        cluster.kill()  # SIGKILL, both processes
    assert not (workdir / "rl" / "model").exists()
    run_cluster([*rl_only, f"--workdir={workdir}"], processes=2, devices=4, timeout=300, logs=tmp_path / "rerun_logs")
    for stage in ("rl", "rl_outcome"):
        resumed, uninterrupted = (load_file(w / stage / "model" / "model.safetensors") for w in (workdir, root / "two"))
        for name in resumed:
            np.testing.assert_array_equal(resumed[name], uninterrupted[name], err_msg=f"{stage} {name}")
    assert [line["step"] for line in metrics(workdir, "rl")] == [line["step"] for line in metrics(root / "two", "rl")]
