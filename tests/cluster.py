"""A real cluster of local processes: N copies of `python -m sv_jax.main` joined through
`config.distributed` (a free loopback port, K simulated host devices each, gloo collectives), waited
for with a time bound and all killed as soon as one fails.

By hand, e.g. the tiny main job on two processes of four devices each, a mesh of all eight:

    python -m tests.cluster 2 4 --config=configs/rl.py:tiny --workdir=/tmp/run \\
        --config.mesh.shape='(1,8,1)' --config.mesh.axes="('data','fsdp','model')"
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests import FAST_COMPILE

REPO = Path(__file__).resolve().parent.parent


def environment() -> dict[str, str]:
    """A bare environment for a run of the package: the test session's compilation cache, if any."""
    cache = {k: os.environ[k] for k in ("JAX_COMPILATION_CACHE_DIR",) if k in os.environ}
    return {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu", **cache}


def xla_flags(devices: int) -> str:
    return f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Cluster:
    """Starts the processes; `wait` ends them all (by killing, on failure or time-out); used as a
    context manager, none outlives the block. Outputs go to `logs/process_<i>.{out,err}`."""

    def __init__(self, args: list[str], processes: int, devices: int, logs: Path | None = None):
        self.logs = Path(logs or tempfile.mkdtemp(prefix="cluster-"))
        self.logs.mkdir(parents=True, exist_ok=True)
        port = free_port()
        env = {**environment(), "XLA_FLAGS": xla_flags(devices)}
        self.processes = []
        for index in range(processes):
            keys = [f"--config.distributed.coordinator=127.0.0.1:{port}",
                    f"--config.distributed.num_processes={processes}", f"--config.distributed.process_id={index}"]
            with open(self.log(index, "out"), "w") as out, open(self.log(index, "err"), "w") as err:
                self.processes.append(subprocess.Popen([sys.executable, "-m", "sv_jax.main", *args, *keys],
                                                       cwd=REPO, env=env, stdout=out, stderr=err))

    def log(self, index: int, stream: str) -> Path:
        return self.logs / f"process_{index}.{stream}"

    def running(self) -> bool:
        return any(p.poll() is None for p in self.processes)

    def wait(self, timeout: float) -> None:
        """Until every process has ended well; raises (all killed) when one fails or time runs out."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                failed = [i for i, p in enumerate(self.processes) if p.poll() not in (None, 0)]
                if failed:
                    tail = "\n".join(self.log(failed[0], "err").read_text().splitlines()[-20:])
                    raise RuntimeError(f"process {failed[0]} exited with {self.processes[failed[0]].returncode}:\n{tail}")
                if not self.running():
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the cluster ran past {timeout} s; logs in {self.logs}")
                time.sleep(0.2)
        finally:
            self.kill()

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc_info) -> None:
        self.kill()


def run_cluster(args: list[str], processes: int, devices: int, timeout: float = 300,
                logs: Path | None = None) -> Cluster:
    """Runs the cluster to its end (see `Cluster.wait`) and returns it, for its logs."""
    with Cluster(args, processes, devices, logs) as cluster:
        cluster.wait(timeout)
    return cluster


if __name__ == "__main__":
    run_cluster(sys.argv[3:], int(sys.argv[1]), int(sys.argv[2]), timeout=3600, logs=Path("cluster-logs"))
    print("cluster: every process ended; logs in cluster-logs/")
