"""The pure training and evaluation steps, and the state they carry.

Nothing here knows about files, flags, devices or logging: wrap the steps in `jax.jit`
(with shardings), `jax.pmap` or `shard_map` as you like.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from flaxcls.metrics import Sums, classification_sums, cross_entropy

Batch = dict[str, jax.Array]


class TrainState(train_state.TrainState):
    """Flax's TrainState (step, params, opt_state) plus BatchNorm statistics and an rng key."""

    batch_stats: Any
    rng: jax.Array


def create_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    rng: jax.Array,
    image_shape: tuple[int, int, int],
) -> TrainState:
    """Initialises parameters from `rng` for images of `image_shape` (H, W, C)."""
    params_rng, dropout_rng, state_rng = jax.random.split(rng, 3)
    dummy = jnp.zeros((1, *image_shape), jnp.float32)
    variables = model.init({"params": params_rng, "dropout": dropout_rng}, dummy, train=False)
    return TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        batch_stats=variables.get("batch_stats", {}),
        tx=tx,
        rng=state_rng,
    )


def _mask(batch: Batch) -> jax.Array:
    return batch.get("mask", jnp.ones(batch["label"].shape, jnp.float32))


def train_step(
    state: TrainState, batch: Batch, *, label_smoothing: float = 0.0
) -> tuple[TrainState, Sums]:
    """One optimiser update on `batch` ({'image', 'label'[, 'mask']}); returns masked sums."""
    dropout_rng = jax.random.fold_in(state.rng, state.step)
    mask = _mask(batch)

    def loss_fn(params):
        logits, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats},
            batch["image"],
            train=True,
            rngs={"dropout": dropout_rng},
            mutable=["batch_stats"],
        )
        per_example = cross_entropy(logits, batch["label"], label_smoothing)
        loss = jnp.sum(per_example * mask) / jnp.maximum(jnp.sum(mask), 1.0)
        return loss, (logits, per_example, updates)

    grads, (logits, per_example, updates) = jax.grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(
        grads=grads, batch_stats=updates.get("batch_stats", state.batch_stats)
    )
    return state, classification_sums(logits, batch["label"], mask, per_example)


def eval_step(state: TrainState, batch: Batch) -> Sums:
    """Masked sums of loss and hits with BatchNorm running statistics."""
    logits = state.apply_fn(
        {"params": state.params, "batch_stats": state.batch_stats}, batch["image"], train=False
    )
    per_example = cross_entropy(logits, batch["label"])
    return classification_sums(logits, batch["label"], _mask(batch), per_example)
