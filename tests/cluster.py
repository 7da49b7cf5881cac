"""A real cluster of local processes: N copies of `python -m sv_jax.main` joined through
`config.distributed` (a free loopback port, K simulated host devices each, gloo collectives), waited
for with a time bound and all killed as soon as one fails.

By hand, e.g. two processes of four devices each on a mesh of all eight:

    python -m tests.cluster 2 4 --config=configs/rl.py:tiny --workdir=/tmp/run \\
        --config.mesh.shape='(1,8,1)' --config.mesh.axes="('data','fsdp','model')"
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_cluster(args: list[str], processes: int, devices: int, timeout: float = 300,
                logs: Path | None = None) -> list[str]:
    """Runs the cluster to its end and returns each process's standard error; raises (after
    killing every process) when one exits non-zero or `timeout` seconds pass. Outputs go to
    `logs/process_<i>.{out,err}` (a temporary folder by default)."""
    logs = Path(logs or tempfile.mkdtemp(prefix="cluster-"))
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    running = []
    for index in range(processes):
        keys = [f"--config.distributed.coordinator=127.0.0.1:{port}",
                f"--config.distributed.num_processes={processes}", f"--config.distributed.process_id={index}"]
        with open(logs / f"process_{index}.out", "w") as out, open(logs / f"process_{index}.err", "w") as err:
            running.append(subprocess.Popen([sys.executable, "-m", "sv_jax.main", *args, *keys], cwd=REPO,
                                            env=env, stdout=out, stderr=err))
    deadline = time.monotonic() + timeout
    try:
        while True:
            codes = [p.poll() for p in running]
            failed = [i for i, code in enumerate(codes) if code not in (None, 0)]
            if failed:
                raise RuntimeError(f"process {failed[0]} exited with {codes[failed[0]]}:\n"
                                   + _tail(logs / f"process_{failed[0]}.err"))
            if all(code == 0 for code in codes):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the cluster ran past {timeout} s; logs in {logs}")
            time.sleep(0.2)
    finally:
        for process in running:
            if process.poll() is None:
                process.kill()
                process.wait()
    return [(logs / f"process_{i}.err").read_text() for i in range(processes)]


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text().splitlines()[-lines:])


if __name__ == "__main__":
    run_cluster(sys.argv[3:], int(sys.argv[1]), int(sys.argv[2]), timeout=3600, logs=Path("cluster-logs"))
    print("cluster: every process ended; logs in cluster-logs/")
