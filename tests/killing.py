"""Kill a real training run at random moments with SIGKILL and restart it until it finishes.

Shared by tests/test_faults.py (a few kills) and benchmarks/kill_anywhere.py (many).
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np

from tests.launch import ROOT, env_for


@dataclasses.dataclass
class KillReport:
    kills: int = 0
    resumes: int = 0  # restarts that continued from a checkpoint
    lost: int = 0  # restarts that resumed from less than the newest finished checkpoint
    restarts_from_scratch: int = 0  # kills before any checkpoint existed
    resumed_steps: list[int] = dataclasses.field(default_factory=list)
    kill_times: list[float] = dataclasses.field(default_factory=list)
    final_returncode: int | None = None
    final_stdout: str = ""


def finished_steps(workdir: str) -> list[int]:
    """Steps with a finalised orbax checkpoint (tmp directories of interrupted saves excluded)."""
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        return []
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def run_with_kills(
    config: str,
    workdir: str,
    *,
    kills: int,
    seed: int = 0,
    delay: tuple[float, float] = (3.0, 12.0),
    timeout: float = 600.0,
) -> KillReport:
    """`run.py --config=config --workdir=workdir`, SIGKILLed `kills` times after a random
    `delay` (seconds from each start), then run to the end."""
    rng = np.random.default_rng(seed)
    report = KillReport()
    command = [sys.executable, "run.py", f"--config={config}", f"--workdir={workdir}"]
    for attempt in range(kills + 1):
        before = finished_steps(workdir)
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env_for(1),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if attempt < kills:
            wait = float(rng.uniform(*delay))
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                report.kills += 1
                report.kill_times.append(wait)
        out, err = proc.communicate(timeout=timeout)
        resumed = re.search(r"resuming from step (\d+)", out)
        if before:
            if resumed is None:
                # killed before it got as far as restoring: not a resume, nothing lost yet
                if proc.returncode == 0:
                    raise AssertionError(f"a run with checkpoints {before} did not resume:\n{err}")
            else:
                report.resumes += 1
                step = int(resumed.group(1))
                report.resumed_steps.append(step)
                report.lost += step < before[-1]
        elif attempt > 0 and resumed is None:
            report.restarts_from_scratch += 1
        if proc.returncode not in (0, -signal.SIGKILL):
            raise AssertionError(f"run failed with {proc.returncode}:\n{err[-4000:]}")
        if proc.returncode == 0:
            report.final_returncode = 0
            report.final_stdout = out
            if attempt < kills:  # it finished before the kill came: start a fresh cycle
                break
    return report


def wait_for(predicate, timeout: float = 60.0, every: float = 0.05) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False
