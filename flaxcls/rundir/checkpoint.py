"""Orbax checkpoints in the workdir: the last few for resuming, plus the best by a metric.

Each checkpoint holds two items: `state`, the train state (params, optimiser state, BatchNorm
statistics, rng, step), and `loop`, the training loop's own state (best value so far,
validations without gain, skipped steps, the loss level the divergence rail compares with).
The data order is a function of (seed, step), so together they continue a run exactly.

Nothing is lost to a crash: orbax writes each checkpoint to a temporary directory and renames
it when complete, and once it is complete its files get a SHA-256 manifest
(`checksums/<step>.json`). Restoring verifies the manifest and falls back, with a warning that
names both, to the newest older checkpoint that verifies and loads (for the best checkpoint:
the best, then the newest). A damaged step is moved to `quarantine/` (never deleted), so the
run saves it afresh when it gets there again. A failed save (disk full, unwritable
directory) stops the run with one line naming the checkpoint still safe on disk, or only
warns when `on_save_error="continue"`.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import tempfile
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers

from flaxcls.core.metrics import lower_is_better

log = logging.getLogger(__name__)
SAVE_ERROR_MODES = ("stop", "continue")
ITEMS = ("state", "loop")
LEGACY_ITEM = "default"  # checkpoints written before the loop state was kept: the state alone
QUARANTINE = "quarantine"
# What a failed write means, in the words of os.strerror, which orbax and tensorstore quote.
OS_PROBLEMS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO)


class CheckpointError(RuntimeError):
    """No checkpoint could be restored, or a save failed; the message says what to do."""


@dataclasses.dataclass
class Restored:
    """A restored checkpoint: the train state, its step and the loop's own state ({} for a
    checkpoint written before the loop state was kept)."""

    state: Any
    step: int
    loop: dict[str, Any]


def describe(error: BaseException) -> str:
    """A failure in a few words: the OS's for a failed write ("No space left on device"),
    else the exception's first line."""
    text = str(error)
    for code in OS_PROBLEMS:
        if getattr(error, "errno", None) == code or os.strerror(code) in text:
            return os.strerror(code)
    first = text.splitlines()[0][:200] if text else ""
    return f"{type(error).__name__}: {first}"


class _OrbaxFailuresReportedOnce(logging.Filter):
    """orbax logs a failed write with a traceback from each of its writer threads (hundreds of
    lines for one full disk), and warns on every save without metrics; the Checkpointer
    reports failures itself, in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if f"{os.sep}orbax{os.sep}" not in record.pathname:
            return True
        if record.levelno >= logging.ERROR:
            return False
        return "did not provide metrics" not in record.getMessage()


def _quiet_orbax_failures() -> None:
    logger = logging.getLogger("absl")  # orbax logs through absl
    if not any(isinstance(f, _OrbaxFailuresReportedOnce) for f in logger.filters):
        logger.addFilter(_OrbaxFailuresReportedOnce())


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
    """Saves and restores the train state and loop state with an `ocp.CheckpointManager`.

    Usable from your own loop (see README "Checkpoints in your own loop"):
    `save(state, metrics=None, loop=None)` at `state.step`, `restore(target)` (the newest, or
    `prefer="best"`), `latest_step()` / `best_step()`, and `close()` before exiting.
    """

    def __init__(
        self,
        directory: str,
        *,
        keep: int = 3,
        best_metric: str | None = "val_accuracy",
        on_save_error: str = "stop",
    ):
        """Keeps the `keep` newest checkpoints plus the best by `best_metric` among those saved
        with `metrics`: kept highest, or lowest for a name ending in "loss"
        (`metrics.lower_is_better`). `best_metric=None` keeps the newest only."""
        if on_save_error not in SAVE_ERROR_MODES:
            raise ValueError(f"on_save_error={on_save_error!r}; choose one of {SAVE_ERROR_MODES}")
        _quiet_orbax_failures()
        self.best_metric = best_metric
        self.on_save_error = on_save_error
        self.directory = os.path.abspath(directory)
        self.is_main = jax.process_index() == 0
        self._unverified: list[int] = []  # saved steps whose manifest is still to be written
        self.failed_saves = 0
        if best_metric is None:
            policy, best = checkpoint_managers.LatestN(keep), {}
        else:
            mode = "min" if lower_is_better(best_metric) else "max"
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
            best = dict(best_fn=lambda metrics: metrics[best_metric], best_mode=mode)
        self.manager = ocp.CheckpointManager(
            self.directory,
            item_names=ITEMS,  # named up front: one odd step directory cannot switch modes
            options=ocp.CheckpointManagerOptions(
                preservation_policy=policy,
                cleanup_tmp_directories=True,
                **best,  # best_fn: what best_step() ranks by
            ),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        return self.manager.best_step()

    def check_writable(self) -> None:
        """Fails in a second, naming the newest checkpoint, where saving would fail later."""
        try:
            os.makedirs(os.path.join(self.directory, "checksums"), exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.directory, prefix=".writable-"):
                pass
        except OSError as e:
            latest = self.latest_step()
            kept = f"step {latest} is kept as it is" if latest is not None else "none is saved"
            raise CheckpointError(
                f"cannot write checkpoints in {self.directory} ({describe(e)}); {kept}. Make the "
                "directory writable (or use another --workdir) and run the same command again."
            ) from e

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
        try:
            with open(path, encoding="utf-8") as f:
                expected = dict(json.load(f))
        except (OSError, ValueError, TypeError) as e:
            return f"its manifest checksums/{step}.json is unreadable ({type(e).__name__})"
        actual = file_digests(os.path.join(self.directory, str(step)))
        for name, (size, digest) in expected.items():
            if name not in actual:
                return f"{name} is missing"
            if actual[name][0] != size:
                return f"{name} has {actual[name][0]} bytes, {size} were written"
            if actual[name][1] != digest:
                return f"{name} does not match its SHA-256"
        return None

    # -- save

    def _wait(self) -> bool:
        """Waits for pending saves; False (after reporting) when one failed."""
        try:
            self.manager.wait_until_finished()
            self._write_manifests()
        except Exception as e:  # noqa: BLE001 - orbax surfaces the writer's error here
            self._save_failed(self._unverified[-1] if self._unverified else None, e)
            self._unverified = []
            return False
        return True

    def _save_failed(self, step: int | None, error: Exception) -> None:
        self.failed_saves += 1
        good = [s for s in self.manager.all_steps() if s != step]
        safe = f"step {max(good)} is intact" if good else "no earlier checkpoint exists"
        message = (
            f"saving checkpoint step {step} in {self.directory} failed ({describe(error)}); "
            f"{safe}. Free disk space or fix the directory's permissions, then run the same "
            "command again to resume."
        )
        if self.on_save_error == "continue":
            log.warning("%s Training continues (on_save_error=continue).", message)
            print(f"warning: {message} Training continues.", flush=True)
            return
        raise CheckpointError(message) from None  # the cause is in the message, once

    def save(
        self, state: Any, metrics: dict[str, float] | None = None, loop: dict | None = None
    ) -> None:
        """Saves asynchronously at `state.step`, with the loop's JSON-able state; a step already
        saved is left as it is."""
        step = int(jax.device_get(state.step))
        self._check_metrics(step, metrics)
        self._wait()
        if step in self.manager.all_steps():
            return
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state), loop=ocp.args.JsonSave(loop or {})
        )
        try:
            self.manager.save(step, args=args, metrics=metrics, force=True)
        except Exception as e:  # noqa: BLE001 - disk full, permissions, ...
            self._save_failed(step, e)
            return
        self._unverified.append(step)

    def _check_metrics(self, step: int, metrics: dict[str, float] | None) -> None:
        """Metrics without the one the best checkpoint is kept by: the caller's mistake, said
        before anything is written (orbax would fail the save with a bare KeyError)."""
        if metrics is None or self.best_metric is None or self.best_metric in metrics:
            return
        raise CheckpointError(
            f"saving checkpoint step {step}: metrics {sorted(metrics)} lack "
            f"{self.best_metric!r}, the metric this Checkpointer keeps the best checkpoint by. "
            f"Pass metrics={{{self.best_metric!r}: ...}} too, save without metrics (kept by "
            "recency only), or construct Checkpointer(..., best_metric=<one of your metrics' "
            "names>, or None to keep the newest only)."
        )

    # -- restore

    def _candidates(self, step: int | None, prefer: str) -> list[int]:
        if step is not None:
            return [step]
        newest_first = sorted(self.manager.all_steps(), reverse=True)
        first = self.best_step() if prefer == "best" else None
        return ([first] if first is not None else []) + [s for s in newest_first if s != first]

    def _load(self, step: int, abstract: Any) -> tuple[Any, dict]:
        """One step, by a manager of its own: a failed restore leaves no state behind that
        could fail the next one."""
        legacy = not os.path.isdir(os.path.join(self.directory, str(step), ITEMS[0]))
        legacy = legacy and os.path.isdir(os.path.join(self.directory, str(step), LEGACY_ITEM))
        options = ocp.CheckpointManagerOptions(create=False)
        if legacy:
            with ocp.CheckpointManager(self.directory, options=options) as manager:
                return manager.restore(step, args=ocp.args.StandardRestore(abstract)), {}
        with ocp.CheckpointManager(self.directory, item_names=ITEMS, options=options) as manager:
            restored = manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), loop=ocp.args.JsonRestore()
                ),
            )
        return restored.state, dict(restored.loop or {})

    def _quarantine(self, step: int, problem: str) -> str:
        """Moves a damaged step (and its manifest) to quarantine/, where nothing reads it and
        from where it can be inspected or moved back; returns where it went."""
        source = os.path.join(self.directory, str(step))
        target = os.path.join(self.directory, QUARANTINE, str(step))
        suffix = 1
        while os.path.exists(target):
            target = os.path.join(self.directory, QUARANTINE, f"{step}.{suffix}")
            suffix += 1
        if not self.is_main:
            return target
        try:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.replace(source, target)
            if os.path.isfile(self._manifest_path(step)):
                os.replace(self._manifest_path(step), target + ".checksums.json")
            with open(target + ".reason.txt", "w", encoding="utf-8") as f:
                f.write(problem + "\n")
        except OSError as e:
            return f"{source} (left in place: {describe(e)})"
        return target

    def restore(self, target: Any, step: int | None = None, prefer: str = "latest") -> Restored:
        """Restores into the structure, dtypes and shardings of `target` (arrays or abstract).

        Without `step`: the newest checkpoint that verifies and loads, or with `prefer="best"`
        the best by `best_metric` and then the newest. A step whose files fail their manifest
        (or, without one, fail to load) is quarantined; each one skipped is reported with the
        reason and the step used instead.
        """
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        problems, moved = [], []
        restored = None
        for candidate in self._candidates(step, prefer):
            problem = damage = self.verify(candidate)
            if problem is None:
                try:
                    state, loop = self._load(candidate, abstract)
                    restored = Restored(state, candidate, loop)
                except Exception as e:  # noqa: BLE001 - torn or foreign files
                    problem = describe(e)
                    # Files that match their manifest are as written: the target differs.
                    manifest = os.path.isfile(self._manifest_path(candidate))
                    damage = None if manifest else problem
            if restored is not None:
                break
            problems.append(f"step {candidate} ({problem})")
            if damage is not None:
                moved.append(self._quarantine(candidate, damage))
        self._after_quarantine(bool(moved))
        where = f" Moved aside, not deleted: {', '.join(moved)}." if moved else ""
        if restored is None:
            raise CheckpointError(
                f"no usable checkpoint in {self.directory}: "
                f"{'; '.join(problems) or 'none saved'}.{where} Run the same command again to "
                "train from the start."
            )
        if problems:
            message = (
                f"checkpoint(s) in {self.directory} unusable: {'; '.join(problems)}.{where} "
                f"Restored step {restored.step} instead."
            )
            log.warning(message)
            print(f"warning: {message}", flush=True)
        return restored

    def _after_quarantine(self, moved: bool) -> None:
        """Every process sees the same steps once process 0 has moved damaged ones away."""
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("flaxcls: checkpoints verified")
        if moved or jax.process_count() > 1:
            self.manager.reload()

    def close(self) -> None:
        """Waits for pending saves (and surfaces their errors) before the process exits."""
        try:
            self._wait()
        finally:
            self.manager.close()
