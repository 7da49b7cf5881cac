"""Two real processes of four CPU devices each, joined by jax.distributed over loopback (gloo): a
stage on their eight-device mesh computes what one process on eight devices does, and writes its
metrics once."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.cluster import REPO, run_cluster

MESH = ["--config.mesh.shape=(1,8,1)", "--config.mesh.axes=('data','fsdp','model')"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A tiny workdir with π₀ and stage 0's trajectories (one process)."""
    workdir = tmp_path_factory.mktemp("prepared")
    subprocess.run([sys.executable, "-m", "sv_jax.main", "--config=configs/data.py:tiny", f"--workdir={workdir}"],
                   cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"},
                   check=True, capture_output=True, timeout=300)
    return workdir


def test_sft_on_two_processes_equals_one_process_on_eight_devices(prepared, tmp_path):
    for name in ("one", "two"):
        shutil.copytree(prepared, tmp_path / name)
    args = ["--config=configs/sft.py:tiny", *MESH]
    subprocess.run([sys.executable, "-m", "sv_jax.main", *args, f"--workdir={tmp_path / 'one'}"], cwd=REPO,
                   env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu",
                        "XLA_FLAGS": "--xla_force_host_platform_device_count=8"},
                   check=True, capture_output=True, timeout=300)
    run_cluster([*args, f"--workdir={tmp_path / 'two'}"], processes=2, devices=4, timeout=300, logs=tmp_path / "logs")

    one, two = (load_file(tmp_path / name / "sft" / "model" / "model.safetensors") for name in ("one", "two"))
    assert one.keys() == two.keys()
    for name in one:
        np.testing.assert_allclose(two[name], one[name], atol=1e-5, err_msg=name)
    lines = [json.loads(line) for line in (tmp_path / "two" / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [2, 4]  # one line a logged step, not one a process
    logged = [json.loads(line) for line in (tmp_path / "one" / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert [line["loss"] for line in lines] == pytest.approx([line["loss"] for line in logged], rel=1e-5)
    printed = [(tmp_path / "logs" / f"process_{i}.out").read_text() for i in range(2)]
    assert "sft: policy written" in printed[0] and "sft:" not in printed[1]  # process 0 alone prints (gloo itself
    # writes a few lines to every process's standard output)
