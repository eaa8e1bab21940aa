"""Runs `run.py` as one or several local processes, as a user would launch it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CONFIG_FILE = """
import sys
sys.path.insert(0, {root!r})
from tests.helpers import tiny_config

def get_config():
    return tiny_config({npz!r}, **{overrides!r})
"""


def write_config(directory: str, npz: str, **overrides) -> str:
    """A config file for run.py: `tests.helpers.tiny_config(npz, **overrides)`."""
    path = os.path.join(directory, "tiny_config.py")
    with open(path, "w", encoding="utf-8") as f:
        f.write(CONFIG_FILE.format(root=ROOT, npz=npz, overrides=overrides))
    return path


# Added to every test process's XLA flags (here by `xla_flags`, in-process by conftest.py):
# tests compile far more than they compute, and XLA's CPU backend at optimisation level 0
# compiles about 40% faster. Results are the same IEEE arithmetic; only the code runs slower.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"


def xla_flags(devices: int) -> str:
    """XLA_FLAGS for a test's child process on `devices` simulated CPU devices."""
    return f"{TEST_XLA_FLAGS} --xla_force_host_platform_device_count={devices}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for(devices: int) -> dict[str, str]:
    return {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "XLA_FLAGS": xla_flags(devices),
    }


def run_py_once(config: str, workdir: str, *flags: str, timeout=600) -> subprocess.CompletedProcess:
    """`run.py` as one process on one CPU device, whatever its outcome (for tests of failures)."""
    return subprocess.run(
        [sys.executable, "run.py", f"--config={config}", f"--workdir={workdir}", *flags],
        cwd=ROOT,
        env=env_for(1),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_py(
    config: str, workdir: str, *flags: str, processes: int = 1, devices: int = 1, timeout=300
) -> list[subprocess.CompletedProcess]:
    """`run.py` on `processes` processes of `devices` CPU devices each; asserts they succeed."""
    command = [sys.executable, "run.py", f"--config={config}", f"--workdir={workdir}", *flags]
    if processes > 1:
        command.append(f"--coordinator_address=127.0.0.1:{free_port()}")
        command.append(f"--num_processes={processes}")
    procs = [
        subprocess.Popen(
            command + ([f"--process_id={i}"] if processes > 1 else []),
            cwd=ROOT,
            env=env_for(devices),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(processes)
    ]
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    finally:
        for proc in procs:
            proc.kill()
    for result in results:
        assert result.returncode == 0, result.stderr[-4000:]
    return results
