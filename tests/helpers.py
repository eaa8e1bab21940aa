"""Shared builders for tests: configs, generated datasets, a tiny BatchNorm model and its
batches, restored run states, simulated crashes and poisoned losses."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flaxcls.core import steps as steps_lib
from flaxcls.modes import build as runs
from flaxcls.testing.toy import tiny_config, write_npz

# A run long enough to kill or damage several times: a checkpoint every 5 steps, two kept.
LONG = {
    "num_train_steps": 300,
    "checkpoint_every_steps": 5,
    "keep_checkpoints": 2,
    "log_every_steps": 10,
}


class TinyNet(nn.Module):
    """A small BatchNorm + dropout model, so the step's mutable state is exercised."""

    num_classes: int = 4
    axis_name: str | None = None  # set under pmap / shard_map: BatchNorm statistics over it
    dropout_rate: float = 0.1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        x = nn.Conv(8, (3, 3), dtype=self.dtype)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, axis_name=self.axis_name)(x)
        x = nn.relu(x).mean(axis=(1, 2))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)


def register_tiny_net(monkeypatch) -> str:
    """Registers TinyNet as the model `tiny_net` for this test: whole runs with BatchNorm and
    dropout at a fraction of a registered model's compile time."""
    from flaxcls.models import registry

    monkeypatch.setitem(registry.MODELS, "tiny_net", TinyNet)
    return "tiny_net"


def tiny_batch(n=32, seed=0):
    """`n` 8x8x3 images for TinyNet's 4 classes, with a learnable signal."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    images = rng.normal(size=(n, 8, 8, 3))
    # A learnable signal: class k shifts channel k % 3, up for k < 3 and down for k = 3.
    images[np.arange(n), :, :, labels % 3] += np.where(labels < 3, 2.0, -2.0)[:, None, None]
    return {"image": jnp.asarray(images, jnp.float32), "label": jnp.asarray(labels, jnp.int32)}


def assert_same_params(a, b):
    """Bit-identical pytrees."""
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def crash_after(n_batches, monkeypatch):
    """Makes the training iterator die after `n_batches`, as a killed process would."""
    real_build_input = runs.build_input

    def build_input_that_crashes(*args, **kwargs):
        inputs = real_build_input(*args, **kwargs)

        def train(start_step):
            it = inputs.train(start_step)
            for _ in range(n_batches):
                yield next(it)
            raise KeyboardInterrupt("simulated preemption")

        return dataclasses.replace(inputs, train=train)

    monkeypatch.setattr(runs, "build_input", build_input_that_crashes)


def poison_when_first_label_is_zero(monkeypatch):
    """A NaN training loss on every batch whose first label is 0."""
    real = steps_lib._training_loss

    def poisoned(logits, batch, *args):  # label_smoothing, loss_fn
        loss = real(logits, batch, *args)
        return loss * jnp.where(batch["label"][0] == 0, jnp.nan, 1.0)

    monkeypatch.setattr(steps_lib, "_training_loss", poisoned)


def trained_run(tmp_path, **overrides):
    """A finished 20-step run of LONG's checkpointing (steps 15 and 20 kept): (config, workdir)."""
    from flaxcls.modes import train as train_lib

    settings = {**LONG, "num_train_steps": 20, "eval_every_epochs": 100.0, **overrides}
    config = tiny_config(write_npz(str(tmp_path)), **settings)
    workdir = str(tmp_path / "run")
    train_lib.train_and_evaluate(config, workdir)
    return config, workdir


def largest_file(step_dir):
    files = [os.path.join(r, n) for r, _, ns in os.walk(step_dir) for n in ns]
    return max(files, key=os.path.getsize)
