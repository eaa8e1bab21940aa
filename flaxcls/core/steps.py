"""The pure training and evaluation steps, and the state they carry.

Nothing here knows about files, flags, devices or logging: wrap the steps in `jax.jit`
(with shardings), `jax.pmap` or `shard_map` as you like.

The contract, checked where it is first met (`create_train_state`, the first trace of a step),
with a `ContractError` that says what to change:
- a model is a Flax Linen module called as `model.apply(variables, images, train=...)` that
  returns logits of shape (batch, num_classes); `train=True` may use a `dropout` rng;
  its variables are `params` and optionally `batch_stats` (BatchNorm running statistics,
  updated as a mutable collection in training), nothing else;
- a batch is a dict with `image`, float (normalised) NHWC, and `label`, integer (batch,);
  optionally `mask` (float, 0 marks padding) and the keys in-step mixing adds.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training import train_state

from flaxcls.core.lookahead import Lookahead
from flaxcls.core.metrics import Sums, classification_sums, cross_entropy
from flaxcls.core.optim import uses_sam
from flaxcls.data.contract import Batch
from flaxcls.errors import ContractError


class TrainState(train_state.TrainState):
    """Flax's TrainState (step, params, opt_state) plus BatchNorm statistics, an rng key and,
    when `ema_decay` > 0, an exponential moving average of both weights (`ema`: {'params',
    'batch_stats'}), which evaluation and `predict` then use; with a `lookahead_spec`, the
    slow weights of `flaxcls.core.lookahead` (`lookahead`, the same structure)."""

    batch_stats: Any
    rng: jax.Array
    ema: Any = None
    ema_decay: float = struct.field(pytree_node=False, default=0.0)
    lookahead: Any = None
    lookahead_spec: Lookahead | None = struct.field(pytree_node=False, default=None)

    def weights(self) -> dict[str, Any]:
        """{'params', 'batch_stats'}: what `apply_fn` takes, and what the average averages."""
        return {"params": self.params, "batch_stats": self.batch_stats}


def create_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    rng: jax.Array,
    image_shape: tuple[int, int, int],
    ema_decay: float = 0.0,
    lookahead: Lookahead | None = None,
) -> TrainState:
    """Initialises parameters from `rng` for images of `image_shape` (H, W, C); `ema_decay` > 0
    also keeps their moving average, `lookahead` slow weights (see `TrainState`)."""
    params_rng, dropout_rng, state_rng = jax.random.split(rng, 3)
    dummy = jnp.zeros((1, *image_shape), jnp.float32)
    variables = init_variables(model, {"params": params_rng, "dropout": dropout_rng}, dummy)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})

    def copy() -> dict[str, Any]:
        # Buffers of their own, so a step that donates the state donates each once.
        return jax.tree.map(jnp.copy, {"params": params, "batch_stats": batch_stats})

    return TrainState.create(
        apply_fn=model.apply,
        params=params,
        batch_stats=batch_stats,
        tx=tx,
        rng=state_rng,
        ema=copy() if ema_decay > 0 else None,
        ema_decay=ema_decay,
        lookahead=copy() if lookahead is not None else None,
        lookahead_spec=lookahead,
    )


MODEL_COLLECTIONS = ("params", "batch_stats")


def _check_linen(model: Any) -> None:
    """A Flax NNX module (or anything else that is not Linen) is refused with the way out."""
    name = type(model).__name__
    nnx = sys.modules.get("flax.nnx")  # an NNX module means flax.nnx is imported already
    if nnx is not None and isinstance(model, nnx.Module):
        raise ContractError(
            f"{name} is a Flax NNX module; flaxcls steps take Linen modules. Wrap its class: "
            f"`from flaxcls.models import from_nnx; model = from_nnx({name}, num_classes=...)` "
            "(the constructor's keyword arguments, without `rngs`: from_nnx builds it)."
        )
    if not isinstance(model, nn.Module) and not callable(getattr(model, "init", None)):
        raise ContractError(
            f"create_train_state got a {name}, not a Flax Linen module (nothing to `init`); a "
            "model is a `flax.linen.Module`, e.g. `flaxcls.get_model(name, num_classes=...)`, "
            "or an NNX module wrapped with `flaxcls.models.from_nnx`."
        )


def init_variables(model: nn.Module, rngs: dict[str, jax.Array], images: jax.Array) -> dict:
    """`model.init` on `images`, with the model's side of the contract checked."""
    name = type(model).__name__
    _check_linen(model)
    try:
        variables = model.init(rngs, images, train=False)
    except TypeError as e:
        if "train" not in str(e):
            raise
        raise ContractError(
            f"{name} must take a `train` keyword: `def __call__(self, x, train: bool)` "
            f"(True in training steps, False in evaluation); calling it failed with: {e}"
        ) from None
    extra = sorted(set(variables) - set(MODEL_COLLECTIONS))
    if "params" not in variables or extra:
        raise ContractError(
            f"{name}'s variables are {sorted(variables)}; a flaxcls model has `params` and "
            "optionally `batch_stats` (BatchNorm statistics), nothing else."
        )
    logits = jax.eval_shape(lambda v: model.apply(v, images, train=False), variables)
    if getattr(logits, "ndim", None) != 2 or logits.shape[0] != images.shape[0]:
        raise ContractError(
            f"{name} returned {getattr(logits, 'shape', type(logits).__name__)} for "
            f"{images.shape[0]} image(s); a flaxcls model returns logits of shape "
            "(batch, num_classes)."
        )
    return variables


def check_batch(batch: Batch) -> None:
    """The batch's side of the contract, checked when a step is traced (dtypes and shapes are
    static, so this costs nothing per step)."""
    missing = [k for k in ("image", "label") if k not in batch]
    if missing:
        raise ContractError(f"the batch has keys {sorted(batch)}; it needs 'image' and 'label'.")
    image, label = batch["image"], batch["label"]
    if not jnp.issubdtype(image.dtype, jnp.floating):
        raise ContractError(
            f"batch['image'] is {image.dtype}; steps take normalised float images (e.g. "
            "flaxcls.data.Normalizer(mean, std)(uint8_images))."
        )
    if not jnp.issubdtype(label.dtype, jnp.integer):
        raise ContractError(
            f"batch['label'] is {label.dtype}; steps take integer class indices of shape "
            "(batch,), not one-hot or float labels."
        )
    if image.ndim != 4 or label.shape != image.shape[:1]:
        raise ContractError(
            f"batch['image'] {tuple(image.shape)} and batch['label'] {tuple(label.shape)}: "
            "images are NHWC (batch, height, width, channels) and labels (batch,)."
        )


def ema_update(state: TrainState, finite: jax.Array) -> TrainState:
    """After the update of step t (state.step is then t + 1), the moving average moved towards
    the new weights with decay min(ema_decay, (1 + t) / (10 + t)), so the early average is not
    held back by the initialisation; unchanged after a non-finite step."""
    if state.ema is None:
        return state
    t = state.step.astype(jnp.float32) - 1.0
    decay = jnp.minimum(state.ema_decay, (1.0 + t) / (10.0 + t))
    decay = jnp.where(finite, decay, 1.0)
    ema = jax.tree.map(lambda e, c: decay * e + (1.0 - decay) * c, state.ema, state.weights())
    return state.replace(ema=ema)


def lookahead_update(state: TrainState) -> TrainState:
    """After an update, the `flaxcls.core.lookahead` sync of the weights and the slow weights."""
    if state.lookahead is None:
        return state
    weights, slow = state.lookahead_spec.sync(state.step, state.weights(), state.lookahead)
    return state.replace(lookahead=slow, **weights)


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


LossFn = Callable[[jax.Array, jax.Array], jax.Array]


def _training_loss(
    logits: jax.Array, batch: Batch, label_smoothing: float, loss_fn: LossFn | None = None
) -> jax.Array:
    """Per-example loss (cross-entropy, or `loss_fn`); a mixed batch weighs its two labels by
    `mix_weight`."""

    def per_example(labels: jax.Array) -> jax.Array:
        if loss_fn is None:
            return cross_entropy(logits, labels, label_smoothing)
        return _checked_loss(loss_fn, logits, labels)

    loss = per_example(batch["label"])
    if "mix_label" not in batch:
        return loss
    partner = per_example(batch["mix_label"])
    weight = batch["mix_weight"]
    return weight * loss + (1.0 - weight) * partner


def _checked_loss(loss_fn: LossFn, logits: jax.Array, labels: jax.Array) -> jax.Array:
    loss = loss_fn(logits, labels)
    shape = getattr(loss, "shape", None)
    if shape != labels.shape:
        name = getattr(loss_fn, "__name__", type(loss_fn).__name__)
        raise ContractError(
            f"loss_fn {name} returned {shape if shape is not None else type(loss).__name__} "
            f"for a batch of {labels.shape[0]}; a loss_fn(logits, labels) returns one loss per "
            f"example, shape ({labels.shape[0]},): the step masks, weighs and sums them itself "
            "(do not take the mean)."
        )
    return loss.astype(jnp.float32)


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


def _sam_step(
    state: TrainState, grads: Any, finite: jax.Array, gradient_at: Callable[[Any], tuple]
) -> tuple[TrainState, jax.Array]:
    """SAM's update (`flaxcls.core.optim.sam`): its optimiser asks `grad_fn` for the gradient at the
    perturbed weights, a second pass whose BatchNorm updates are dropped. Returns the stepped
    state and whether both passes were finite."""
    second: list[tuple] = []

    def grad_fn(params: Any, _: int) -> Any:
        second.append(gradient_at(params))  # read below, in the same trace
        return second[-1][0]

    updates, opt_state = state.tx.update(grads, state.opt_state, state.params, grad_fn=grad_fn)
    params = optax.apply_updates(state.params, updates)
    perturbed_grads, perturbed_loss, _ = second[0]
    finite = finite & _all_finite(perturbed_loss, perturbed_grads)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), finite


def train_step(
    state: TrainState,
    batch: Batch,
    *,
    label_smoothing: float = 0.0,
    augment: Callable[[jax.Array, Batch], Batch] | None = None,
    frozen_batch_stats: bool = False,
    class_weights: jax.Array | None = None,
    axis_name: str | None = None,
    loss_fn: LossFn | None = None,
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

    `loss_fn(logits, labels) -> (batch,)` replaces the softmax cross-entropy: `logits` float
    (batch, num_classes), `labels` integer (batch,), one loss per example (not the mean: the
    step masks, weighs and normalises them, so padding, class weights, EMA, lookahead, SAM,
    the non-finite flag and the sums over devices work as with the default). Label smoothing
    belongs to the default loss: with a `loss_fn`, `label_smoothing` must stay 0 (smooth inside
    your loss). With mixup / cutmix the loss is `mix_weight * loss_fn(logits, label) +
    (1 - mix_weight) * loss_fn(logits, mix_label)` (for cross-entropy, the loss against the
    mixed targets). The reported `loss` sum is then of `loss_fn`'s values.
    """
    if loss_fn is not None and not isinstance(label_smoothing, jax.Array) and label_smoothing:
        raise ContractError(
            f"train_step got both loss_fn and label_smoothing={label_smoothing}; label "
            "smoothing belongs to the default cross-entropy: smooth the targets inside your "
            "loss_fn and leave label_smoothing at 0."
        )
    rng = jax.random.fold_in(state.rng, state.step)
    if axis_name is not None:  # each device draws its own dropout masks and augmentations
        rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
    check_batch(batch)
    if augment is not None:
        batch = augment(jax.random.fold_in(rng, 1), batch)
    mask = _mask(batch)
    count = jnp.maximum(_psum(jnp.sum(mask), axis_name), 1.0)

    def objective(params):
        logits, updates = _apply_for_training(
            state, params, batch["image"], rng, frozen_batch_stats
        )
        per_example = _training_loss(logits, batch, label_smoothing, loss_fn)
        weights = mask if class_weights is None else mask * class_weights[batch["label"]]
        return jnp.sum(per_example * weights) / count, (logits, per_example, updates)

    def gradient_at(params):  # summed over devices, with the summed loss
        grads, (logits, per_example, updates) = jax.grad(objective, has_aux=True)(params)
        summed_loss = _psum(jnp.sum(per_example * mask), axis_name)
        return (
            _sum_grads(grads, batch["image"], axis_name),
            summed_loss,
            (logits, per_example, updates),
        )

    grads, summed_loss, (logits, per_example, updates) = gradient_at(state.params)
    finite = _all_finite(summed_loss, grads)
    if uses_sam(state.opt_state):
        stepped, finite = _sam_step(state, grads, finite, gradient_at)
    else:
        stepped = state.apply_gradients(grads=grads)
    # A non-finite step never reaches the BatchNorm statistics (optax.apply_if_finite, when
    # the optimiser is wrapped in it, keeps the parameters too).
    batch_stats = jax.tree.map(
        lambda new, old: jnp.where(finite, new, old),
        updates.get("batch_stats", state.batch_stats),
        state.batch_stats,
    )
    state = ema_update(lookahead_update(stepped.replace(batch_stats=batch_stats)), finite)
    sums = classification_sums(logits, batch["label"], mask, per_example)
    sums["nonfinite"] = 1.0 - finite.astype(jnp.float32)
    return state, _psum(sums, axis_name)


# What `scan_steps` reads from each step's sums.
STEP_SUMS = ("loss", "count", "nonfinite")


def _check_step_sums(step: Callable[..., Any], sums: Any) -> None:
    name = getattr(step, "__name__", None) or getattr(
        getattr(step, "func", None), "__name__", type(step).__name__
    )
    if not isinstance(sums, dict):
        raise ContractError(
            f"scan_steps: step {name} returned {type(sums).__name__}; a step returns "
            f"(state, sums) with sums a dict holding at least {list(STEP_SUMS)}."
        )
    missing = [k for k in STEP_SUMS if k not in sums]
    if missing:
        raise ContractError(
            f"scan_steps: step {name}'s sums have keys {sorted(sums)} and lack {missing}; a "
            "step for scan_steps returns (state, sums) with 'loss' (the batch's summed loss), "
            "'count' (its number of real examples) and 'nonfinite' (1.0 when the update was "
            "not finite, else 0.0): call flaxcls.train_step inside your step, or add them."
        )


def scan_steps(
    step: Callable[..., tuple[TrainState, Sums]], *, unroll: bool = False
) -> Callable[..., tuple[TrainState, Sums]]:
    """`step(state, batch, *args)` over a block of batches stacked on a leading axis, as one
    `lax.scan`: jit the result and one call runs as many optimiser steps as the block holds,
    with no host round trip between them.

    The step's contract: it returns `(state, sums)`, `sums` a dict of scalars holding at least
    'loss' (summed over the batch), 'count' (real examples) and 'nonfinite' (1.0 for a
    non-finite update, else 0.0), as `train_step` (with any `loss_fn`) does; other scalar
    sums are added up too. A step without them is a `ContractError` naming what is missing.

    Returns `(state, sums)`: the sums of the block's finite steps added up on the device, and
    per step `nonfinite` (a flag) and `step_loss` (the batch's mean loss), so the caller still
    knows which step went wrong.

    `unroll` writes the steps out one after the other instead of looping: XLA:CPU runs a
    convolution inside a loop body on a slow path (jax#12868; about 6x for the seed CNN's
    training step), so convolutional models on CPUs want it; compilation then takes longer
    with the block's length.
    """

    def run_block(state: TrainState, block: Batch, *args: Any) -> tuple[TrainState, Sums]:
        def body(state: TrainState, batch: Batch) -> tuple[TrainState, Sums]:
            out = step(state, batch, *args)
            _check_step_sums(step, out[1] if isinstance(out, tuple) and len(out) == 2 else out)
            return out

        if jax.tree.leaves(block)[0].shape[0] == 1:  # one step compiles as it would alone
            state, sums = body(state, jax.tree.map(lambda x: x[0], block))
            per_step = jax.tree.map(lambda x: x[None], sums)
        else:
            state, per_step = jax.lax.scan(body, state, block, unroll=unroll)
        nonfinite = per_step.pop("nonfinite")
        finite = nonfinite == 0
        sums = {k: jnp.sum(jnp.where(finite, v, 0.0)) for k, v in per_step.items()}
        sums["nonfinite"] = nonfinite
        sums["step_loss"] = per_step["loss"] / jnp.maximum(per_step["count"], 1.0)
        return state, sums

    return run_block


def evaluation_variables(state: TrainState) -> dict[str, Any]:
    """{'params', 'batch_stats'} that evaluation uses: the moving average when kept."""
    return state.ema if state.ema is not None else state.weights()


def shifted(images: jax.Array, pixels: int) -> tuple[jax.Array, jax.Array]:
    """The images moved `pixels` down-right and up-left, the uncovered border mirrored."""
    h, w = images.shape[1:3]
    p = pixels
    padded = jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")
    return padded[:, :h, :w], padded[:, 2 * p : 2 * p + h, 2 * p : 2 * p + w]


def predict(
    state: TrainState, images: jax.Array, *, flip_tta: bool = False, translate_tta: int = 0
) -> jax.Array:
    """Logits in evaluation mode (of the moving-average weights when the state keeps them).

    Test-time augmentation: `flip_tta` averages each image's logits with its mirror's;
    `translate_tta` > 0 then gives half the weight to the mean of the same over the image
    shifted that many pixels down-right and up-left (airbench94's level 2 is both, 1 pixel).
    """
    variables = evaluation_variables(state)

    def views(x: jax.Array) -> jax.Array:
        logits = state.apply_fn(variables, x, train=False)
        if flip_tta:
            logits = 0.5 * (logits + state.apply_fn(variables, x[:, :, ::-1], train=False))
        return logits

    logits = views(images)
    if translate_tta > 0:
        down_right, up_left = shifted(images, translate_tta)
        logits = 0.5 * logits + 0.25 * (views(down_right) + views(up_left))
    return logits


def eval_step(
    state: TrainState,
    batch: Batch,
    *,
    flip_tta: bool = False,
    translate_tta: int = 0,
    axis_name: str | None = None,
    loss_fn: LossFn | None = None,
) -> Sums:
    """Masked sums of loss and hits with BatchNorm running statistics (summed over `axis_name`);
    `flip_tta` and `translate_tta` average over augmented views (see `predict`). The loss is
    the cross-entropy, or `loss_fn(logits, labels)` (per example, as in `train_step`)."""
    check_batch(batch)
    logits = predict(state, batch["image"], flip_tta=flip_tta, translate_tta=translate_tta)
    if loss_fn is None:
        per_example = cross_entropy(logits, batch["label"])
    else:
        per_example = _checked_loss(loss_fn, logits, batch["label"])
    sums = classification_sums(logits, batch["label"], _mask(batch), per_example)
    return _psum(sums, axis_name)
