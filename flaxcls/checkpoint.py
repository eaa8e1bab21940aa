"""Orbax checkpoints in the workdir: the last few for resuming, plus the best by a metric.

The train state holds everything needed to continue exactly (params, optimiser state,
BatchNorm statistics, rng, step); the data order is a function of (seed, step), so the
step alone restores the input position.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers


class Checkpointer:
    """Saves and restores the train state with an `ocp.CheckpointManager`."""

    def __init__(self, directory: str, *, keep: int = 3, best_metric: str = "val_accuracy"):
        """`best_metric` is kept highest, or lowest when its name ends in `loss`."""
        self.best_metric = best_metric
        mode = "min" if best_metric.endswith("loss") else "max"
        policy = checkpoint_managers.AnyPreservationPolicy(
            [
                checkpoint_managers.LatestN(keep),
                checkpoint_managers.BestN(
                    get_metric_fn=lambda metrics: metrics[best_metric],
                    reverse=mode == "min",
                    n=1,
                    keep_checkpoints_without_metrics=False,
                ),
            ]
        )
        self.manager = ocp.CheckpointManager(
            os.path.abspath(directory),
            options=ocp.CheckpointManagerOptions(
                preservation_policy=policy,
                best_fn=lambda metrics: metrics[best_metric],  # what best_step() ranks by
                best_mode=mode,
                cleanup_tmp_directories=True,
            ),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        return self.manager.best_step()

    def save(self, state: Any, metrics: dict[str, float] | None = None) -> None:
        """Saves asynchronously at `state.step`; a step already saved is left as it is."""
        step = int(jax.device_get(state.step))
        if step in self.manager.all_steps():
            return
        self.manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=True)

    def restore(self, target: Any, step: int | None = None) -> Any:
        """Restores into the structure, dtypes and shardings of `target` (arrays or abstract)."""
        step = self.latest_step() if step is None else step
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def close(self) -> None:
        """Waits for pending saves (and surfaces their errors) before the process exits."""
        self.manager.wait_until_finished()
        self.manager.close()
