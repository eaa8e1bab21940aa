"""Kill a real training run at random moments with SIGKILL and restart it until it finishes.

Shared by tests/test_faults.py (a few kills) and benchmarks/kill_anywhere.py (many).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from flaxcls.rundir import files
from flaxcls.testing.launch import ROOT, env_for


@dataclasses.dataclass
class KillReport:
    kills: int = 0
    resumes: int = 0  # restarts that continued from a checkpoint
    lost: int = 0  # restarts that resumed from less than the newest finished checkpoint
    resumed_steps: list[int] = dataclasses.field(default_factory=list)
    kill_times: list[float] = dataclasses.field(default_factory=list)
    final_returncode: int | None = None
    final_stdout: str = ""


def finished_steps(workdir: str) -> list[int]:
    """Steps with a finalised orbax checkpoint (tmp directories of interrupted saves excluded)."""
    directory = files.checkpoint_dir(workdir)
    if not os.path.isdir(directory):
        return []
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def _collect_stdout(proc: subprocess.Popen) -> tuple[list[str], threading.Thread]:
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    return lines, reader


def _training(proc: subprocess.Popen, workdir: str, newest_before: int) -> bool:
    """True once the run trains: it has finished a checkpoint newer than any before it
    started (compilation and restoring are behind it)."""
    if proc.poll() is not None:
        return True
    steps = finished_steps(workdir)
    return bool(steps) and steps[-1] > newest_before


def run_with_kills(
    config: str,
    workdir: str,
    *,
    kills: int,
    seed: int = 0,
    delay: tuple[float, float] = (0.0, 3.0),
    timeout: float = 600.0,
) -> KillReport:
    """`run.py --config=config --workdir=workdir`, SIGKILLed `kills` times, then run to the end.

    Each kill comes a random `delay` (seconds) after the run is training again: after it
    finished a checkpoint newer than those it started with. So every restart makes progress
    and the kills land inside steps, checkpoint writes and evaluations, whatever the machine's
    speed.
    """
    rng = np.random.default_rng(seed)
    report = KillReport()
    command = [sys.executable, "run.py", f"--config={config}", f"--workdir={workdir}"]
    for attempt in range(kills + 1):
        before = finished_steps(workdir)
        stderr = tempfile.TemporaryFile("w+")  # a file: a full pipe would block the run
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env_for(1), stdout=subprocess.PIPE, stderr=stderr, text=True
        )
        lines, reader = _collect_stdout(proc)
        if attempt < kills:
            newest = before[-1] if before else -1
            wait_for(functools.partial(_training, proc, workdir, newest), timeout)
            wait = float(rng.uniform(*delay))
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                report.kills += 1
                report.kill_times.append(wait)
        proc.wait(timeout=timeout)
        reader.join(timeout=30)  # the pipe closes with the process
        out = "".join(lines)
        stderr.seek(0)
        err = stderr.read()
        stderr.close()
        resumed = re.search(r"resuming from step (\d+)", out)
        if before:
            if resumed is None:
                raise AssertionError(f"a run with checkpoints {before} did not resume:\n{err}")
            report.resumes += 1
            step = int(resumed.group(1))
            report.resumed_steps.append(step)
            report.lost += step < before[-1]
        if proc.returncode not in (0, -signal.SIGKILL):
            raise AssertionError(f"run failed with {proc.returncode}:\n{err[-4000:]}")
        if proc.returncode == 0:
            report.final_returncode = 0
            report.final_stdout = out
            break  # finished (before a kill came, when attempts remain)
    return report


def wait_for(predicate, timeout: float = 60.0, every: float = 0.05) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False
