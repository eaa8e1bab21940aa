"""The training loss's rails: a non-finite step stops the run (or is skipped and counted), and
a loss far above its running level stops it too, before anything later is saved.

The guard sees every step's mean training loss in order, whatever the steps per call, and its
state goes into each checkpoint, so a resumed run decides exactly as an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from flaxcls.errors import TrainingStopped

LEVEL_DECAY = 0.98  # the running level follows the loss over about 50 steps


class LossGuard:
    """Watches each step's training loss.

    `nonfinite`: "stop" on a NaN/Inf loss or gradient, or "skip" the update and stop only after
    `max_consecutive_skips` in a row. `divergence_factor` > 0 stops where a finite loss exceeds
    that many times its running level (a moving average of the losses so far), or of the chance
    loss log(num_classes) while the level is lower: a loss of 1e35 trains on silently
    otherwise. `kept()` says, when the run stops, which checkpoint is kept and where.
    """

    def __init__(
        self,
        *,
        nonfinite: str = "stop",
        max_consecutive_skips: int = 10,
        divergence_factor: float = 100.0,
        num_classes: int = 2,
        kept: Callable[[], str] = lambda: "the last checkpoint is kept",
    ):
        self.nonfinite, self.max_consecutive_skips = nonfinite, max_consecutive_skips
        self.divergence_factor = divergence_factor
        self.chance_loss = math.log(max(num_classes, 2))
        self.kept = kept
        self.skipped_steps = self.consecutive_skips = 0
        self.level: float | None = None

    def state_dict(self) -> dict[str, Any]:
        return {
            "skipped_steps": self.skipped_steps,
            "consecutive_skips": self.consecutive_skips,
            "loss_level": self.level,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.consecutive_skips = int(state.get("consecutive_skips", 0))
        self.level = state.get("loss_level")

    def observe(self, step: int, nonfinite: bool, loss: float) -> None:
        """One step's outcome; raises `TrainingStopped` where the run must stop."""
        if nonfinite or not math.isfinite(loss):
            self._nonfinite(step)
            return
        self.consecutive_skips = 0
        if self.divergence_factor > 0 and self.level is not None:
            bound = self.divergence_factor * max(self.level, self.chance_loss)
            if loss > bound:
                self._stop(
                    step,
                    f"the training loss {loss:.3g} is over {self.divergence_factor:g}x its "
                    f"running level {self.level:.3g} (divergence_factor)",
                )
        self.level = (
            loss if self.level is None else (LEVEL_DECAY * self.level + (1 - LEVEL_DECAY) * loss)
        )

    def _nonfinite(self, step: int) -> None:
        self.skipped_steps += 1
        self.consecutive_skips += 1
        if self.nonfinite == "skip" and self.consecutive_skips <= self.max_consecutive_skips:
            return
        self._stop(
            step,
            f"{self.consecutive_skips} non-finite steps in a row (max_consecutive_skips)"
            if self.nonfinite == "skip"
            else "a non-finite training loss or gradient",
        )

    def _stop(self, step: int, why: str) -> None:
        raise TrainingStopped(
            f"stopped at step {step}: {why}; {self.kept()}. Lower the learning rate, clip "
            "gradients (--config.optimizer.grad_clip_norm), or skip non-finite updates "
            "(--config.nonfinite=skip)."
        )
