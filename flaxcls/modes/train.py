"""The training loop: wires config -> data -> model -> compiled steps -> metrics and checkpoints."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flaxcls.config import check_config
from flaxcls.core import metrics as metrics_lib
from flaxcls.core import sharding
from flaxcls.core.optim import create_learning_rate_schedule
from flaxcls.core.steps import TrainState, eval_step, scan_steps, train_step
from flaxcls.data import Input, on_device
from flaxcls.data.contract import normalizing
from flaxcls.data.in_step import build_step_augment
from flaxcls.errors import ConfigError
from flaxcls.models.registry import model_source
from flaxcls.modes import callbacks as callbacks_lib
from flaxcls.modes.build import build_run
from flaxcls.modes.start import class_weights, starting_state
from flaxcls.rundir import config_change, files, lock, writers
from flaxcls.rundir.checkpoint import Checkpointer, describe
from flaxcls.rundir.loss_guard import LossGuard
from flaxcls.rundir.preemption import Preempted, PreemptionWatcher
from flaxcls.rundir.writers import MetricsLog

# The loop reads metrics once this many calls are waiting (and at every log, validation and
# checkpoint): one host-device round trip for several calls, and a non-finite step still
# stops the run before anything after it is saved.
MAX_PENDING_CALLS = 8

# steps_per_dispatch=0 picks by platform. On an H200 a small model's step is launch-bound:
# one step per call ran at 0.45x the device floor, 8 and 32 at 0.93-0.94x. On CPUs a step is
# long beside its dispatch, and a convolutional block is unrolled (`unroll_blocks`), so its
# compile time grows with the block.
AUTO_STEPS_PER_DISPATCH = {"cpu": 1}
AUTO_STEPS_PER_DISPATCH_ACCELERATOR = 32


def steps_per_dispatch(config: Any, mesh) -> int:
    """`config.steps_per_dispatch`, or for 0 the platform's choice (AUTO_STEPS_PER_DISPATCH)."""
    if config.steps_per_dispatch > 0:
        return int(config.steps_per_dispatch)
    platform = mesh.devices.flat[0].platform
    return AUTO_STEPS_PER_DISPATCH.get(platform, AUTO_STEPS_PER_DISPATCH_ACCELERATOR)


def setup_compilation_cache(path: str) -> None:
    """JAX's persistent cache: a restarted or repeated run skips recompiling its steps."""
    if path:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(path))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


@dataclasses.dataclass(frozen=True)
class CompiledSteps:
    """The jitted steps the loop calls, and what feeds the train step."""

    train: Callable[..., tuple[TrainState, dict]]  # (state, block) -> (state, sums)
    evaluate: Callable[..., dict]  # (state, batch) -> sums
    batches: Callable[[int], Iterator]  # start step -> the train step's inputs, a step at a time


def compile_steps(config: Any, mesh, state: TrainState, inputs: Input) -> CompiledSteps:
    """The pure steps under `jax.jit` with explicit shardings (the old state donated).

    The train step runs a block of batches stacked on a leading axis (`scan_steps`): one call
    makes as many optimiser steps as the block holds (`steps_per_dispatch`; `unroll_blocks`
    says how). With `data.on_device`, it gathers its batches from the training split held on
    the devices (`flaxcls.data.on_device`).
    """
    state_sharding = jax.tree.map(lambda x: x.sharding, state)
    scan = functools.partial(scan_steps, unroll=unroll_blocks(state, inputs, mesh))
    replicated = sharding.replicated(mesh)
    # Streamed batches arrive as uint8 pixels and are normalised here, on the device.
    step = normalizing(
        functools.partial(
            train_step,
            label_smoothing=config.label_smoothing,
            augment=build_step_augment(config.data, inputs.normalizer),
            frozen_batch_stats=config.frozen_batch_stats,
            class_weights=class_weights(config, inputs),
        ),
        inputs.normalizer,
    )
    p_eval = jax.jit(
        normalizing(
            functools.partial(
                eval_step,
                flip_tta=config.flip_tta,
                translate_tta=config.get("translate_tta", 0),  # older runs have none
            ),
            inputs.normalizer,
        ),
        in_shardings=(state_sharding, sharding.batch_sharding(mesh)),
        out_shardings=replicated,
    )
    if config.data.on_device:
        p_train, batches = on_device.compile_train_step(
            step,
            scan,
            inputs,
            config.data,
            state_sharding,
            sharding.block_sharding(mesh),
            replicated,
        )
        return CompiledSteps(p_train, p_eval, batches)
    p_train = jax.jit(
        scan(step),
        in_shardings=(state_sharding, sharding.block_sharding(mesh)),
        out_shardings=(state_sharding, replicated),
        donate_argnums=0,
    )
    return CompiledSteps(p_train, p_eval, inputs.train)


@dataclasses.dataclass
class RunOutputs:
    """Where the loop's results go: checkpoints, metrics, and the SIGTERM watch and profile
    trace when set."""

    checkpointer: Checkpointer
    log: MetricsLog
    preemption: PreemptionWatcher | None = None
    profile_dir: str = ""
    callbacks: tuple = ()  # hooks called on the main process (flaxcls.modes.callbacks)


def unroll_blocks(state: TrainState, inputs: Input, mesh) -> bool:
    """Whether a block's steps are written out rather than looped: on CPUs, for a model with
    convolutions, which XLA:CPU runs on a slow path inside a loop body (jax#12868: 6x for the
    seed CNN's training step). Other models loop: unrolling costs compile time and, past a
    few steps, cache locality."""
    if mesh.devices.flat[0].platform != "cpu":
        return False
    images = jax.ShapeDtypeStruct((1, *inputs.info.image_shape), jnp.float32)
    forward = jax.make_jaxpr(lambda weights, x: state.apply_fn(weights, x, train=False))
    return "conv_general_dilated" in str(forward(state.weights(), images))


def next_block(batches: Iterator[dict[str, np.ndarray]], n: int) -> dict[str, np.ndarray]:
    """The next `n` batches of `batches` stacked on a new leading axis."""
    if n == 1:
        return {k: v[None] for k, v in next(batches).items()}
    items = [next(batches) for _ in range(n)]
    return {k: np.stack([item[k] for item in items]) for k in items[0]}


def evaluate(p_eval: Callable, state: TrainState, inputs: Input, split: str, mesh) -> dict:
    """Exact metrics over every example of `split` (padded batches are masked)."""
    total = None
    pending = []
    for batch in inputs.evaluate(split):
        pending.append(p_eval(state, sharding.to_global(batch, mesh)))
    for sums in jax.device_get(pending):
        total = metrics_lib.add_sums(total, sums)
    return metrics_lib.summarize(total)


def check_workdir(workdir: str) -> None:
    """A workdir that cannot be written fails now, in one line, not at the first save."""
    try:
        os.makedirs(workdir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir, prefix=".writable-"):
            pass
    except OSError as e:
        raise ConfigError(
            f"--workdir {workdir} cannot be written ({describe(e)}): fix its permissions or "
            "choose another directory."
        ) from None


def train_and_evaluate(config: Any, workdir: str, callbacks: Any = ()) -> dict[str, float]:
    """Trains `config` in `workdir` (resuming from its latest checkpoint) and tests the result.

    `callbacks`: objects with any of `on_log`, `on_eval`, `on_checkpoint` (see
    `flaxcls.modes.callbacks`), called on the main process with host values.
    Returns the test-set metrics, also written to WORKDIR/test_metrics.json.
    """
    setup_compilation_cache(config.compilation_cache_dir)
    check_config(config)
    is_main = jax.process_index() == 0
    check_workdir(workdir)
    workdir_lock = lock.acquire(workdir) if is_main else None  # one training run per workdir
    run_config = json.loads(config.to_json_best_effort())
    # A model registered outside flaxcls: where it comes from, so the run stands on its own.
    run_config["model"].update(model_source(config.model.name))
    allow = config.get("allow_config_change", False)
    config_change.check_config_change(workdir, run_config, allow, record=is_main)
    mesh = sharding.make_mesh()
    sharding.check_batch_size(config.batch_size, mesh)
    inputs, state, total_steps = build_run(config, mesh)
    state = starting_state(config, workdir, state, inputs, is_main)
    checkpointer = Checkpointer(
        files.checkpoint_dir(workdir),
        keep=config.keep_checkpoints,
        best_metric=config.best_metric,
        on_save_error=config.on_save_error,
    )
    checkpointer.check_writable()
    loop_state: dict[str, Any] = {}
    if is_main:
        print(writers.run_files(workdir), flush=True)
    if checkpointer.latest_step() is not None:
        restored = checkpointer.restore(state)
        state, loop_state = restored.state, restored.loop
        if is_main:
            print(f"resuming from step {restored.step}", flush=True)
    if is_main:
        files.save_json(os.path.join(workdir, files.CONFIG_FILE), run_config)
        files.save_json(os.path.join(workdir, files.CLASSES_FILE), list(inputs.info.class_names))
        files.write_dataset_facts(workdir, inputs)
    log = MetricsLog(workdir, is_main_process=is_main)
    steps = compile_steps(config, mesh, state, inputs)
    preemption = PreemptionWatcher()
    profile_dir = os.path.join(workdir, "profile")
    outputs = RunOutputs(checkpointer, log, preemption, profile_dir, tuple(callbacks))
    loop = TrainLoop(config, inputs, mesh, steps, outputs, total_steps)
    if is_main and config.steps_per_dispatch == 0:
        platform = mesh.devices.flat[0].platform
        print(f"steps_per_dispatch=0: {loop.steps_per_dispatch} steps per call on {platform}")
    loop.load_state_dict(loop_state)
    try:
        state = loop.run(state)
        test = evaluate(steps.evaluate, state, inputs, "test", mesh)
        best_step = checkpointer.best_step()
    finally:
        preemption.close()
        checkpointer.close()  # waits for the last save, also when stopping on SIGTERM
        log.close()
        if workdir_lock is not None:
            workdir_lock.release()
    # The final weights, which the last save holds: the latest checkpoint, not the best.
    test.update(step=int(jax.device_get(state.step)), checkpoint="latest")
    if is_main:
        files.save_json(os.path.join(workdir, files.TEST_METRICS_FILE), test)
        print(writers.final_line(test, best_step, config.best_metric, workdir), flush=True)
    return test


class ProfileWindow:
    """`profile_steps` > 0: a `jax.profiler` trace of the calls that follow the run's first
    (which compiles) until that many steps have run, written to `directory` for TensorBoard's
    profile tab or Perfetto. The loop's host waits carry names there (`TraceAnnotation`)."""

    def __init__(self, directory: str, steps: int, after: int):
        self.directory, self.steps, self.after = directory, steps, after
        self.end: int | None = None
        self.active = False

    def before_call(self, first: int) -> None:
        if self.steps > 0 and self.end is None and first > self.after:
            jax.profiler.start_trace(self.directory)
            self.active, self.end = True, first + self.steps

    def after_call(self, step: int, state: Any) -> None:
        if self.active and step >= self.end:
            self.stop(state)

    def stop(self, state: Any = None) -> None:
        if self.active:
            jax.block_until_ready(state)  # the trace holds the device work it dispatched
            jax.profiler.stop_trace()
            self.active = False

    def __enter__(self) -> ProfileWindow:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class TrainLoop:
    """Runs steps to `total_steps` with periodic logging, validation and checkpoints.

    Each call of the train step runs a block of up to `steps_per_dispatch` steps; calls end at the
    multiples of that number (and at `total_steps`), and everything periodic happens at the
    first call boundary at or after its step. Metrics are read a few calls late
    (`MAX_PENDING_CALLS`), so the host does not wait on the device; a non-finite loss stops the
    run with its step number, before anything later is saved. SIGTERM saves a checkpoint at
    the boundary reached and raises `Preempted`. With `early_stopping_patience` > 0, training
    ends after that many validations without a better `best_metric` (`stopped_early`).
    """

    def __init__(
        self,
        config: Any,
        inputs: Input,
        mesh: Any,
        steps: CompiledSteps,
        outputs: RunOutputs,
        total_steps: int,
    ):
        self.config, self.inputs, self.mesh = config, inputs, mesh
        self.steps, self.total_steps = steps, total_steps
        self.checkpointer, self.log = outputs.checkpointer, outputs.log
        self.preemption, self.profile_dir = outputs.preemption, outputs.profile_dir
        steps_per_epoch = inputs.steps_per_epoch()
        self.steps_per_dispatch = steps_per_dispatch(config, mesh)
        self.eval_every = max(1, int(round(config.eval_every_epochs * steps_per_epoch)))
        # The rate logged with the train metrics (in the config's units, for sgd_decoupled too).
        self.schedule = create_learning_rate_schedule(config, steps_per_epoch, total_steps)
        self.is_main = jax.process_index() == 0
        self.callbacks = outputs.callbacks if self.is_main else ()
        self.guard = LossGuard(
            nonfinite=config.nonfinite,
            max_consecutive_skips=config.max_consecutive_skips,
            divergence_factor=config.divergence_factor,
            num_classes=inputs.info.num_classes,
            kept=self._kept,
        )
        self.best_value: float | None = None
        self.validations_without_gain = 0
        self.stopped_early = False

    def state_dict(self) -> dict[str, Any]:
        """The loop's own state, saved in each checkpoint so a resumed run continues exactly."""
        return {
            "best_value": self.best_value,
            "validations_without_gain": self.validations_without_gain,
            "stopped_early": self.stopped_early,
            **self.guard.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_value = state.get("best_value")
        self.validations_without_gain = int(state.get("validations_without_gain", 0))
        self.stopped_early = bool(state.get("stopped_early", False))
        self.guard.load_state_dict(state)

    def _kept(self) -> str:
        latest = self.checkpointer.latest_step()
        if latest is None:
            return f"no checkpoint was saved yet in {self.checkpointer.directory}"
        return f"the last good checkpoint, step {latest}, is kept in {self.checkpointer.directory}"

    def _call_end(self, step: int) -> int:
        """Where the call starting after `step` ends: the next multiple of steps_per_dispatch."""
        k = self.steps_per_dispatch
        return min(step - step % k + k, self.total_steps)

    def run(self, state: TrainState) -> TrainState:
        step = int(jax.device_get(state.step))
        if step >= self.total_steps or self.stopped_early:
            return state
        batches = self.steps.batches(step)
        self.window, self.window_start, self.window_steps = None, time.perf_counter(), 0
        self.pending: list[tuple[int, Any]] = []
        bar = writers.progress_bar(
            self.total_steps, step, enabled=self.is_main and self.config.progress_bar
        )
        trace = ProfileWindow(self.profile_dir, self.config.profile_steps, after=step)
        with bar, trace:
            while step < self.total_steps:
                first, step = step, self._call_end(step)
                trace.before_call(first)
                with jax.profiler.TraceAnnotation("host: the next block of batches"):
                    block = next_block(batches, step - first)
                    block = sharding.block_to_global(block, self.mesh)
                state, sums = self.steps.train(state, block)
                self.pending.append((first, sums))
                if len(self.pending) > MAX_PENDING_CALLS:
                    self._record(keep_last=True)
                trace.after_call(step, state)
                bar.update(step - first)
                if self.preemption is not None and self.preemption.reached(step):
                    self._record()
                    self.checkpointer.save(state, loop=self.state_dict())
                    directory = self.checkpointer.manager.directory
                    by = getattr(self.preemption, "signal_name", "SIGTERM")
                    raise Preempted(step, directory, by)
                if self._periodic(first, step):
                    self._record()
                    self._periodic_actions(state, first, step, bar)
                    if self.stopped_early:
                        bar.write(
                            f"step {step}: stopping early, no better {self.config.best_metric} "
                            f"in {self.config.early_stopping_patience} validations"
                        )
                        break
        return state

    def _due(self, first: int, step: int, every: int) -> bool:
        """True when a multiple of `every` lies in (first, step] (never when `every` <= 0),
        and at the last step."""
        return (every > 0 and step // every > first // every) or step == self.total_steps

    def _periodic(self, first: int, step: int) -> bool:
        cfg = self.config
        return any(
            self._due(first, step, every)
            for every in (cfg.log_every_steps, self.eval_every, cfg.checkpoint_every_steps)
        )

    def _record(self, keep_last: bool = False) -> None:
        """Reads the pending calls' sums in one transfer (all but the newest with `keep_last`,
        so the device always has a call queued) and adds their finite steps to the window;
        each step's loss goes past the guard, which stops the run where it must."""
        ready = self.pending[:-1] if keep_last else self.pending
        self.pending = self.pending[len(ready) :]
        with jax.profiler.TraceAnnotation("host: wait for the metrics of earlier calls"):
            read = jax.device_get([sums for _, sums in ready])
        for (first, _), sums in zip(ready, read, strict=True):
            flags = np.atleast_1d(sums.pop("nonfinite"))
            losses = np.atleast_1d(sums.pop("step_loss"))
            for offset, (flag, loss) in enumerate(zip(flags, losses, strict=True), start=1):
                self.guard.observe(first + offset, bool(flag > 0), float(loss))
            finite_steps = int(np.sum(flags == 0))
            if finite_steps:
                self.window = metrics_lib.add_sums(self.window, sums)
                self.window_steps += finite_steps

    def _periodic_actions(self, state: TrainState, first: int, step: int, bar) -> None:
        validate = self._due(first, step, self.eval_every)
        log = self._due(first, step, self.config.log_every_steps)
        if self.window is not None and (validate or log):
            self._log_train(step, bar)
        if validate:
            with jax.profiler.TraceAnnotation("host: validation"):
                val = self._validate(state, step, bar)
            metrics = None
            if val:
                metrics = {f"val_{k}": val[k] for k in ("loss", "accuracy", "top5_accuracy")}
                self._track_best(metrics[self.config.best_metric])
            self._save(state, step, metrics)
        elif self._due(first, step, self.config.checkpoint_every_steps):
            self._save(state, step)
        self.window_start = time.perf_counter()  # throughput leaves validation and saves out

    def _save(self, state: TrainState, step: int, metrics: dict | None = None) -> None:
        self.checkpointer.save(state, metrics, loop=self.state_dict())
        path = os.path.join(self.checkpointer.directory, str(step))
        callbacks_lib.call(self.callbacks, "on_checkpoint", step, path)

    def _track_best(self, value: float) -> None:
        if metrics_lib.improves(self.config.best_metric, value, self.best_value):
            self.best_value, self.validations_without_gain = value, 0
            return
        self.validations_without_gain += 1
        patience = self.config.early_stopping_patience
        self.stopped_early = patience > 0 and self.validations_without_gain >= patience

    def _validate(self, state: TrainState, step: int, bar) -> dict | None:
        if not self.inputs.split_sizes.get("validation", 0):
            return None
        val = evaluate(self.steps.evaluate, state, self.inputs, "validation", self.mesh)
        self.log.write_scalars(step, {f"val_{k}": v for k, v in val.items()})
        val_floats = {f"val_{k}": float(v) for k, v in val.items()}
        callbacks_lib.call(self.callbacks, "on_eval", step, val_floats)
        if self.is_main:
            bar.write(f"step {step}: val_accuracy {val['accuracy']:.4f} val_loss {val['loss']:.4f}")
        return val

    def _log_train(self, step: int, bar) -> None:
        elapsed = time.perf_counter() - self.window_start
        train = metrics_lib.summarize(self.window)
        scalars = {
            "train_loss": train["loss"],
            "train_accuracy": train["accuracy"],
            "images_per_sec": self.window_steps * self.config.batch_size / max(elapsed, 1e-9),
            "epoch": step / self.inputs.steps_per_epoch(),
            "skipped_steps": self.guard.skipped_steps,
            "learning_rate": float(self.schedule(max(step - 1, 0))),  # of the step's update
        }
        self.log.write_scalars(step, scalars)
        log_floats = {k: float(v) for k, v in scalars.items()}
        callbacks_lib.call(self.callbacks, "on_log", step, log_floats)
        bar.set_postfix(
            loss=f"{scalars['train_loss']:.4f}",
            acc=f"{scalars['train_accuracy']:.4f}",
            img_s=f"{scalars['images_per_sec']:.0f}",
        )
        self.window, self.window_steps = None, 0
        self.window_start = time.perf_counter()
