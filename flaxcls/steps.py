"""The pure training and evaluation steps, and the state they carry.

Nothing here knows about files, flags, devices or logging: wrap the steps in `jax.jit`
(with shardings), `jax.pmap` or `shard_map` as you like.
"""

from __future__ import annotations

from collections.abc import Callable
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


def _psum(x: Any, axis_name: str | None) -> Any:
    return x if axis_name is None else jax.lax.psum(x, axis_name)


def _varying_axes(x: jax.Array) -> frozenset:
    aval = jax.typeof(x)
    manual = getattr(aval, "manual_axis_type", None)  # jax >= 0.10; `vma` before
    return manual.varying if manual is not None else getattr(aval, "vma", frozenset())


def _sum_grads(grads: Any, image: jax.Array, axis_name: str | None) -> Any:
    # shard_map with check_vma (its default) types the batch as varying over the axis, and
    # autodiff then sums the gradients of replicated parameters itself; under pmap or
    # check_vma=False every device holds only its own gradient.
    if axis_name is None or axis_name in _varying_axes(image):
        return grads
    return jax.lax.psum(grads, axis_name)


def _training_loss(logits: jax.Array, batch: Batch, label_smoothing: float) -> jax.Array:
    """Per-example cross-entropy; a mixed batch weighs its two labels by `mix_weight`."""
    loss = cross_entropy(logits, batch["label"], label_smoothing)
    if "mix_label" not in batch:
        return loss
    partner = cross_entropy(logits, batch["mix_label"], label_smoothing)
    weight = batch["mix_weight"]
    return weight * loss + (1.0 - weight) * partner


def _apply_for_training(
    state: TrainState, params: Any, images: jax.Array, rng: jax.Array, frozen_batch_stats: bool
) -> tuple[jax.Array, dict]:
    """Logits in training mode and the BatchNorm updates; inference mode when frozen."""
    variables = {"params": params, "batch_stats": state.batch_stats}
    if frozen_batch_stats:
        return state.apply_fn(variables, images, train=False), {}
    return state.apply_fn(
        variables, images, train=True, rngs={"dropout": rng}, mutable=["batch_stats"]
    )


def _all_finite(summed_loss: jax.Array, grads: Any) -> jax.Array:
    # From replicated values only (the summed loss and gradients), so every device agrees.
    leaves = [jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]
    return jnp.isfinite(summed_loss) & jnp.all(jnp.asarray(leaves))


def train_step(
    state: TrainState,
    batch: Batch,
    *,
    label_smoothing: float = 0.0,
    augment: Callable[[jax.Array, Batch], Batch] | None = None,
    frozen_batch_stats: bool = False,
    class_weights: jax.Array | None = None,
    axis_name: str | None = None,
) -> tuple[TrainState, Sums]:
    """One optimiser update on `batch` ({'image', 'label'[, 'mask']}); returns masked sums.

    Under `jax.jit` the batch may be sharded over any mesh and nothing needs naming. Under
    `jax.pmap` or `shard_map`, pass the mapped `axis_name`: the loss is normalised by the
    global example count and gradients and sums are summed over the axis, so every device
    applies the same update as one big batch would. (BatchNorm statistics are global too when
    the model is built with the same axis name: `get_model(..., axis_name=...)`.)

    `augment(rng, batch) -> batch` runs first, inside the step (see `flaxcls.data.in_step`);
    it may add `mix_label` and `mix_weight` for mixup / cutmix. `frozen_batch_stats` runs the
    model in inference mode (BatchNorm running statistics used and left unchanged, no dropout).
    `class_weights` (num_classes,) weighs each example's loss by its label's weight (the
    reported loss stays unweighted). The sums include `nonfinite`, 1 when the loss or a
    gradient was NaN or infinite.
    """
    rng = jax.random.fold_in(state.rng, state.step)
    if axis_name is not None:  # each device draws its own dropout masks and augmentations
        rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
    if augment is not None:
        batch = augment(jax.random.fold_in(rng, 1), batch)
    mask = _mask(batch)
    count = jnp.maximum(_psum(jnp.sum(mask), axis_name), 1.0)

    def loss_fn(params):
        logits, updates = _apply_for_training(
            state, params, batch["image"], rng, frozen_batch_stats
        )
        per_example = _training_loss(logits, batch, label_smoothing)
        weights = mask if class_weights is None else mask * class_weights[batch["label"]]
        return jnp.sum(per_example * weights) / count, (logits, per_example, updates)

    grads, (logits, per_example, updates) = jax.grad(loss_fn, has_aux=True)(state.params)
    grads = _sum_grads(grads, batch["image"], axis_name)
    finite = _all_finite(_psum(jnp.sum(per_example * mask), axis_name), grads)
    # A non-finite step never reaches the BatchNorm statistics (optax.apply_if_finite, when
    # the optimiser is wrapped in it, keeps the parameters too).
    batch_stats = jax.tree.map(
        lambda new, old: jnp.where(finite, new, old),
        updates.get("batch_stats", state.batch_stats),
        state.batch_stats,
    )
    state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    sums = classification_sums(logits, batch["label"], mask, per_example)
    sums["nonfinite"] = 1.0 - finite.astype(jnp.float32)
    return state, _psum(sums, axis_name)


def predict(state: TrainState, images: jax.Array, *, flip_tta: bool = False) -> jax.Array:
    """Logits in evaluation mode; with `flip_tta`, the mean of the images' and their mirrors'."""
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    logits = state.apply_fn(variables, images, train=False)
    if flip_tta:
        logits = 0.5 * (logits + state.apply_fn(variables, images[:, :, ::-1], train=False))
    return logits


def eval_step(
    state: TrainState, batch: Batch, *, flip_tta: bool = False, axis_name: str | None = None
) -> Sums:
    """Masked sums of loss and hits with BatchNorm running statistics (summed over `axis_name`);
    `flip_tta` averages the logits of each image and its mirror image."""
    logits = predict(state, batch["image"], flip_tta=flip_tta)
    per_example = cross_entropy(logits, batch["label"])
    sums = classification_sums(logits, batch["label"], _mask(batch), per_example)
    return _psum(sums, axis_name)
