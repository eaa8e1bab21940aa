"""SIGTERM, as TPU VMs, SLURM and Kubernetes send before they stop a job, as a step boundary.

The loop asks `reached(step)` after every step; when it says yes, the loop saves a checkpoint
and stops, and the same command later resumes from it. With several processes every one of
them must stop at the same step, which JAX's preemption sync point (started by
`jax.distributed.initialize`, watching SIGTERM itself) decides; a single process watches the
signal here.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import jax
from jax.experimental import multihost_utils


class Preempted(Exception):
    """The run stopped at `step` on SIGTERM (or SIGINT, Ctrl-C), after saving a checkpoint
    there."""

    def __init__(self, step: int, checkpoint_dir: str, signal_name: str = "SIGTERM"):
        self.step, self.checkpoint_dir, self.signal_name = step, checkpoint_dir, signal_name
        by = "SIGINT (Ctrl-C)" if signal_name == "SIGINT" else signal_name
        super().__init__(
            f"stopped by {by} at step {step}; the checkpoint is in {checkpoint_dir}. "
            "Run the same command again to resume."
        )


class PreemptionWatcher:
    """Tells the training loop when a termination signal asks it to stop.

    SIGINT (Ctrl-C) is SIGTERM's twin in a single process: the first one stops the run at the
    next step boundary with a checkpoint; a second one, while that is under way, raises
    KeyboardInterrupt at once (orbax renames a checkpoint into place only when it is complete,
    so the last good one stays as it was).
    """

    def __init__(self) -> None:
        self.signalled = False
        self.signal_name = "SIGTERM"
        self._previous = None
        self._previous_int = None
        self._multi_process = jax.process_count() > 1
        # Signal handlers can only be set from the main thread (library users may train
        # from another one; they keep their own handling).
        if not self._multi_process and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_signal)
            self._previous_int = signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.signalled:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        self.signalled = True
        self.signal_name = signal.Signals(signum).name

    def reached(self, step: int) -> bool:
        if self._multi_process:
            return multihost_utils.reached_preemption_sync_point(step)
        return self.signalled

    def close(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
        if self._previous_int is not None:
            signal.signal(signal.SIGINT, self._previous_int)
            self._previous_int = None
