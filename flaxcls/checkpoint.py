"""Orbax checkpoints in the workdir: the last few for resuming, plus the best by a metric.

The train state holds everything needed to continue exactly (params, optimiser state,
BatchNorm statistics, rng, step); the data order is a function of (seed, step), so the
step alone restores the input position.

Nothing is lost to a crash: orbax writes each checkpoint to a temporary directory and renames
it when complete, and once it is complete its files get a SHA-256 manifest
(`checksums/<step>.json`). Restoring verifies the manifest and falls back, with a warning that
names both, to the newest older checkpoint that verifies and loads. A failed save (disk full,
unwritable directory) stops the run with the step still safe on disk, or only warns when
`on_save_error="continue"`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

log = logging.getLogger(__name__)
SAVE_ERROR_MODES = ("stop", "continue")


class CheckpointError(RuntimeError):
    """No checkpoint could be restored, or a save failed; the message says what to do."""


def file_digests(directory: str) -> dict[str, list]:
    """relative path -> [size, sha256] of every file under `directory`."""
    digests = {}
    for root, _, names in os.walk(directory):
        for name in sorted(names):
            path = os.path.join(root, name)
            sha = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda f=f: f.read(1 << 20), b""):
                    sha.update(block)
            digests[os.path.relpath(path, directory)] = [os.path.getsize(path), sha.hexdigest()]
    return digests


class Checkpointer:
    """Saves and restores the train state with an `ocp.CheckpointManager`."""

    def __init__(
        self,
        directory: str,
        *,
        keep: int = 3,
        best_metric: str = "val_accuracy",
        on_save_error: str = "stop",
    ):
        """`best_metric` is kept highest, or lowest when its name ends in `loss`."""
        if on_save_error not in SAVE_ERROR_MODES:
            raise ValueError(f"on_save_error={on_save_error!r}; choose one of {SAVE_ERROR_MODES}")
        self.best_metric = best_metric
        self.on_save_error = on_save_error
        self.directory = os.path.abspath(directory)
        self.is_main = jax.process_index() == 0
        self._unverified: list[int] = []  # saved steps whose manifest is still to be written
        self.failed_saves = 0
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
            self.directory,
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

    # -- manifests

    def _manifest_path(self, step: int) -> str:
        return os.path.join(self.directory, "checksums", f"{step}.json")

    def _write_manifests(self) -> None:
        """Manifests for the steps whose saves have completed (call after waiting on them)."""
        steps, self._unverified = self._unverified, []
        if not self.is_main:
            return
        os.makedirs(os.path.join(self.directory, "checksums"), exist_ok=True)
        present = set(self.manager.all_steps())
        for step in steps:
            if step not in present:
                continue
            tmp = self._manifest_path(step) + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(file_digests(os.path.join(self.directory, str(step))), f)
            os.replace(tmp, self._manifest_path(step))
        for name in os.listdir(os.path.join(self.directory, "checksums")):
            stem = name.split(".")[0]
            if stem.isdigit() and int(stem) not in present:  # orbax deleted that step
                os.remove(os.path.join(self.directory, "checksums", name))

    def verify(self, step: int) -> str | None:
        """None when the files of `step` match its manifest (or it has none), else the problem."""
        path = self._manifest_path(step)
        if not os.path.isfile(path):
            return None
        with open(path, encoding="utf-8") as f:
            expected = json.load(f)
        actual = file_digests(os.path.join(self.directory, str(step)))
        for name, (size, digest) in expected.items():
            if name not in actual:
                return f"{name} is missing"
            if actual[name][0] != size:
                return f"{name} has {actual[name][0]} bytes, {size} were written"
            if actual[name][1] != digest:
                return f"{name} does not match its SHA-256"
        return None

    # -- save and restore

    def _wait(self) -> bool:
        """Waits for pending saves; False (after reporting) when one failed."""
        try:
            self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001 - orbax surfaces the writer's error here
            self._save_failed(self._unverified[-1] if self._unverified else None, e)
            self._unverified = []
            return False
        self._write_manifests()
        return True

    def _save_failed(self, step: int | None, error: Exception) -> None:
        self.failed_saves += 1
        good = [s for s in self.manager.all_steps() if s != step]
        safe = f"step {max(good)} is intact" if good else "no earlier checkpoint exists"
        message = (
            f"saving checkpoint step {step} in {self.directory} failed "
            f"({type(error).__name__}: {error}); {safe}. Free disk space or fix the directory's "
            "permissions, then run the same command again to resume."
        )
        if self.on_save_error == "continue":
            log.warning("%s Training continues (on_save_error=continue).", message)
            print(f"warning: {message} Training continues.", flush=True)
            return
        raise CheckpointError(message) from error

    def save(self, state: Any, metrics: dict[str, float] | None = None) -> None:
        """Saves asynchronously at `state.step`; a step already saved is left as it is."""
        step = int(jax.device_get(state.step))
        self._wait()
        if step in self.manager.all_steps():
            return
        try:
            self.manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=True)
        except Exception as e:  # noqa: BLE001 - disk full, permissions, ...
            self._save_failed(step, e)
            return
        self._unverified.append(step)

    def restore(self, target: Any, step: int | None = None) -> Any:
        """Restores into the structure, dtypes and shardings of `target` (arrays or abstract).

        Without `step`, the newest checkpoint that verifies and loads; each one skipped is
        reported with the reason and the step used instead.
        """
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        candidates = [step] if step is not None else sorted(self.manager.all_steps(), reverse=True)
        problems = []
        for candidate in candidates:
            problem = self.verify(candidate)
            if problem is None:
                try:
                    restored = self.manager.restore(
                        candidate, args=ocp.args.StandardRestore(abstract)
                    )
                except Exception as e:  # noqa: BLE001 - torn or foreign files
                    problem = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            if problem is None:
                if problems:
                    message = (
                        f"checkpoint(s) in {self.directory} unusable: {'; '.join(problems)}. "
                        f"Restored step {candidate} instead."
                    )
                    log.warning(message)
                    print(f"warning: {message}", flush=True)
                return restored
            problems.append(f"step {candidate} ({problem})")
        raise CheckpointError(
            f"no usable checkpoint in {self.directory}: {'; '.join(problems) or 'none saved'}. "
            "Delete the directory to start over."
        )

    def close(self) -> None:
        """Waits for pending saves (and surfaces their errors) before the process exits."""
        try:
            self._wait()
        finally:
            self.manager.close()
