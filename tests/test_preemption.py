"""SIGTERM mid-run: a checkpoint at the step reached, a clean exit, and a restart that ends
where an uninterrupted run does."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from flaxcls.modes import train as train_lib
from flaxcls.testing.launch import ROOT, env_for, run_py, write_config
from flaxcls.testing.toy import restored_state, tiny_config, write_npz

# run.py, whose loop waits at its first step boundary from step 200 on: it writes `ready` and
# blocks until the test's SIGTERM arrives, so the signal lands mid-run however fast it trains.
WAIT_FOR_SIGTERM = """
import os, runpy, signal, sys
from flaxcls.rundir import preemption
ready, reached = sys.argv[1], preemption.PreemptionWatcher.reached
sys.argv = sys.argv[2:]  # run.py and its flags

def reached_once_signalled(self, step):
    if step >= 200 and not self.signalled:
        open(ready, "w").close()
        while not self.signalled:
            signal.pause()
    return reached(self, step)

preemption.PreemptionWatcher.reached = reached_once_signalled
runpy.run_path("run.py", run_name="__main__")
"""

OVERRIDES = {
    "steps_per_dispatch": 8,  # SIGTERM acts at the boundary of a call of several steps
    "num_train_steps": 800,
    "eval_every_epochs": 100.0,  # validation and checkpoints every 400 steps
    "log_every_steps": 10,
}


@pytest.mark.slow
def test_sigterm_saves_and_the_restart_matches_an_uninterrupted_run(tmp_path):
    npz = write_npz(str(tmp_path))
    config = write_config(str(tmp_path), npz, **OVERRIDES)
    stopped = str(tmp_path / "stopped")
    ready = str(tmp_path / "ready")
    flags = [f"--config={config}", f"--workdir={stopped}"]
    command = [sys.executable, "-c", WAIT_FOR_SIGTERM, ready, "run.py", *flags]
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env_for(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        while not os.path.exists(ready):  # the loop waits for the signal at a step boundary
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "stopped by SIGTERM at step" in err
    step = int(err.split("stopped by SIGTERM at step ")[1].split(";")[0])
    assert 10 <= step < 800 and step % 8 == 0
    assert str(step) in os.listdir(os.path.join(stopped, "checkpoints"))
    assert not os.path.exists(os.path.join(stopped, "test_metrics.json"))

    run_py(config, stopped)  # the same command resumes and finishes
    cfg = tiny_config(npz, **OVERRIDES)
    uninterrupted = str(tmp_path / "uninterrupted")
    train_lib.train_and_evaluate(cfg, uninterrupted)
    a, b = restored_state(stopped, cfg), restored_state(uninterrupted, cfg)
    assert int(a.step) == int(b.step) == 800
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
