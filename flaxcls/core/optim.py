"""Optimisers and learning-rate schedules, through optax: `make_optimizer` from plain
arguments, and `create_optimizer` from a run's config on top of it.

Schedules are given in epochs in the config and turned into steps here, so an override of
the batch size or the epoch count never leaves a stale derived value behind.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from flaxcls.errors import ConfigError


def _constant(lr: float, total_steps: int | None, **_: Any) -> optax.Schedule:
    return optax.constant_schedule(lr)


def _step(
    lr: float, total_steps: int | None, *, decay_steps: Sequence[int], decay_factor: float, **_: Any
) -> optax.Schedule:
    return optax.piecewise_constant_schedule(lr, {int(s): decay_factor for s in decay_steps})


def _cosine(lr: float, total_steps: int, *, end_factor: float, **_: Any) -> optax.Schedule:
    return optax.cosine_decay_schedule(lr, max(total_steps, 1), alpha=end_factor)


def _warmup_cosine(
    lr: float, total_steps: int, *, warmup_steps: int, end_factor: float, **_: Any
) -> optax.Schedule:
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=lr,
        warmup_steps=warmup_steps,
        decay_steps=max(total_steps, warmup_steps + 1),
        end_value=lr * end_factor,
    )


def _triangle(
    lr: float,
    total_steps: int,
    *,
    start_factor: float,
    peak_fraction: float,
    end_factor: float,
    **_: Any,
) -> optax.Schedule:
    # airbench94's: linear from lr * start_factor at step 0 to lr at int(peak_fraction * total),
    # then linear to lr * end_factor at total_steps.
    total = max(total_steps, 1)
    steps = jnp.asarray([0.0, float(int(peak_fraction * total)), float(total)])
    factors = jnp.asarray([start_factor, 1.0, end_factor])
    return lambda count: lr * jnp.interp(count, steps, factors)


SCHEDULES: dict[str, Callable[..., optax.Schedule]] = {
    "constant": _constant,
    "step": _step,
    "cosine": _cosine,
    "warmup_cosine": _warmup_cosine,
    "triangle": _triangle,
}
# Schedules that decay towards the end of training, so must know where it is.
_NEEDS_TOTAL_STEPS = ("cosine", "warmup_cosine", "triangle")


def make_schedule(
    name: str = "constant",
    learning_rate: float = 1e-3,
    *,
    total_steps: int | None = None,
    warmup_steps: int = 0,
    decay_steps: Sequence[int] = (),
    decay_factor: float = 0.1,
    end_factor: float = 0.0,
    start_factor: float = 0.0,
    peak_fraction: float = 0.0,
) -> optax.Schedule:
    """A learning-rate schedule in optimiser steps.

    constant; step (multiplied by `decay_factor` at each of `decay_steps`); cosine (from
    `learning_rate` to `learning_rate * end_factor` at `total_steps`); warmup_cosine (linear
    from 0 over `warmup_steps`, then cosine to `total_steps`); triangle (linear from
    `learning_rate * start_factor` to the peak at `peak_fraction` of `total_steps`, then
    linear to `learning_rate * end_factor`).
    """
    if name not in SCHEDULES:
        raise ConfigError(f"Unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}.")
    if total_steps is None and name in _NEEDS_TOTAL_STEPS:
        raise ConfigError(f"schedule={name!r} needs total_steps (the number of training steps).")
    return SCHEDULES[name](
        learning_rate,
        total_steps,
        warmup_steps=warmup_steps,
        decay_steps=tuple(decay_steps),
        decay_factor=decay_factor,
        end_factor=end_factor,
        start_factor=start_factor,
        peak_fraction=peak_fraction,
    )


def create_learning_rate_schedule(
    config: Any, steps_per_epoch: int, total_steps: int
) -> optax.Schedule:
    """`config.schedule` (in epochs) applied to `config.optimizer.learning_rate`."""
    return make_schedule(
        config.schedule.name,
        config.optimizer.learning_rate,
        total_steps=total_steps,
        **_schedule_steps(config.schedule, steps_per_epoch),
    )


def _schedule_steps(cfg: Any, steps_per_epoch: int) -> dict[str, Any]:
    """The schedule's epoch fields in steps, and its other fields as they are."""
    return dict(
        warmup_steps=int(cfg.warmup_epochs * steps_per_epoch),
        decay_steps=tuple(int(e * steps_per_epoch) for e in cfg.decay_epochs),
        decay_factor=cfg.decay_factor,
        end_factor=cfg.end_factor,
        # runs saved before the triangle schedule have neither
        start_factor=cfg.get("start_factor", 0.0),
        peak_fraction=cfg.get("peak_fraction", 0.0),
    )


def decay_mask(params: Any) -> Any:
    """Weight decay applies to kernels only: biases and norm scales (1-D leaves) are skipped."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def _rated(
    build: Callable[[Any], optax.GradientTransformation], lr: optax.Schedule, inject: bool
) -> optax.GradientTransformation:
    """`build(lr)`, or with `inject` its learning rate as an `optax.inject_hyperparams`
    hyperparameter in the optimiser state (see `learning_rate_of`, `set_learning_rate`)."""
    if not inject:
        return build(lr)
    return optax.inject_hyperparams(lambda learning_rate: build(learning_rate))(learning_rate=lr)


def _sgd(
    lr: optax.Schedule,
    *,
    weight_decay: float,
    momentum: float,
    nesterov: bool,
    inject: bool = False,
    **_: Any,
):
    # Coupled (L2) decay, as in the classic SGD recipes for ResNets.
    def build(rate: Any) -> optax.GradientTransformation:
        return optax.sgd(rate, momentum=momentum or None, nesterov=nesterov)

    return optax.chain(
        optax.add_decayed_weights(weight_decay, mask=decay_mask), _rated(build, lr, inject)
    )


def _adam(
    lr: optax.Schedule,
    *,
    weight_decay: float,
    b1: float,
    b2: float,
    eps: float,
    inject: bool = False,
    **_: Any,
):
    return optax.chain(
        optax.add_decayed_weights(weight_decay, mask=decay_mask),
        _rated(lambda rate: optax.adam(rate, b1=b1, b2=b2, eps=eps), lr, inject),
    )


def _adamw(
    lr: optax.Schedule,
    *,
    weight_decay: float,
    b1: float,
    b2: float,
    eps: float,
    inject: bool = False,
    **_: Any,
):
    def build(rate: Any) -> optax.GradientTransformation:
        return optax.adamw(rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=decay_mask)

    return _rated(build, lr, inject)


def _is_injected(node: Any) -> bool:
    return isinstance(node, optax.InjectStatefulHyperparamsState)


def _injected_states(opt_state: Any) -> list[Any]:
    leaves = jax.tree.leaves(opt_state, is_leaf=_is_injected)
    return [leaf for leaf in leaves if _is_injected(leaf) and "learning_rate" in leaf.hyperparams]


def _no_learning_rate(opt_state: Any) -> ValueError:
    return ValueError(
        f"this optimiser state ({type(opt_state).__name__}) holds no learning rate; build the "
        "optimiser with make_optimizer(..., inject_learning_rate=True) (or wrap yours in "
        "optax.inject_hyperparams) to read or set it."
    )


def learning_rate_of(opt_state: Any) -> jax.Array:
    """The learning rate in an optimiser state of `make_optimizer(...,
    inject_learning_rate=True)`: the rate the last update used (with a schedule, its value
    at that update; before the first update, the first rate)."""
    found = _injected_states(opt_state)
    if not found:
        raise _no_learning_rate(opt_state)
    return found[0].hyperparams["learning_rate"]


def set_learning_rate(opt_state: Any, learning_rate: float) -> Any:
    """The optimiser state with its learning rate set to `learning_rate` from the next update
    on: an array of the same shape, dtype and sharding, so a jitted step runs on without
    recompiling. For a constant rate (a schedule sets its own value again at every update)."""
    if not _injected_states(opt_state):
        raise _no_learning_rate(opt_state)

    def replace(node: Any) -> Any:
        if not (_is_injected(node) and "learning_rate" in node.hyperparams):
            return node
        old = node.hyperparams["learning_rate"]
        new = jnp.asarray(learning_rate, old.dtype)
        if isinstance(old, jax.Array) and not isinstance(old, jax.core.Tracer):
            new = jax.device_put(new, old.sharding)
        return node._replace(hyperparams={**node.hyperparams, "learning_rate": new})

    return jax.tree.map(replace, opt_state, is_leaf=_is_injected)


def norm_bias_labels(params: Any) -> Any:
    """ "norm_bias" for the biases of modules whose name holds "norm" (BatchNorm, LayerNorm),
    "other" for every other leaf: airbench's split of parameters into two learning rates."""

    def label(path: tuple, _: Any) -> str:
        names = [str(getattr(k, "key", k)) for k in path]
        return "norm_bias" if names[-1] == "bias" and any("norm" in n for n in names) else "other"

    return jax.tree_util.tree_map_with_path(label, params)


def _sgd_decoupled(
    lr: optax.Schedule,
    *,
    peak_learning_rate: float,
    weight_decay: float,
    momentum: float,
    nesterov: bool,
    batch_size: int,
    norm_bias_lr_factor: float,
    **_: Any,
) -> optax.GradientTransformation:
    """SGD in the decoupled form of airbench94 (after Myrtle's ResNet series): `learning_rate`
    is per 1,024 examples and independent of the momentum, `weight_decay` is per 1,024
    examples and independent of the learning rate, and BatchNorm biases learn
    `norm_bias_lr_factor` times faster with the same decay.

    airbench sums its loss over the batch and gives torch's SGD the rate
    lr_g = learning_rate * f_g / (1024 * (1 + 1 / (1 - momentum))) and the L2 coefficient
    weight_decay * batch_size / (1024 * (1 + 1 / (1 - momentum))) / lr_g, unscheduled. The
    steps here take the mean loss, so the rate is batch_size times larger and the coefficient
    batch_size times smaller; the updates are the same. Every parameter is decayed, biases too.
    """
    kilostep = 1024.0 * (1.0 + 1.0 / (1.0 - momentum))

    def group(factor: float) -> optax.GradientTransformation:
        return optax.chain(
            optax.add_decayed_weights(weight_decay / (peak_learning_rate * factor)),
            optax.trace(decay=momentum, nesterov=nesterov),
            optax.scale_by_schedule(lambda count: -lr(count) * factor * batch_size / kilostep),
        )

    return optax.multi_transform(
        {"norm_bias": group(norm_bias_lr_factor), "other": group(1.0)}, norm_bias_labels
    )


OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": _sgd,
    "adam": _adam,
    "adamw": _adamw,
    "sgd_decoupled": _sgd_decoupled,
}


def frozen_mask(params: Any, pattern: str) -> Any:
    """True for the leaves whose path ("block0_conv0/kernel") matches the regex `pattern`."""
    regex = re.compile(pattern)
    return jax.tree_util.tree_map_with_path(
        lambda path, _: bool(regex.search("/".join(str(getattr(k, "key", k)) for k in path))),
        params,
    )


def _outside_head(params: Any) -> Any:
    """True for every top-level module but `head` (the classifier)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[0], "key", None) != "head", params
    )


def make_optimizer(
    name: str = "adam",
    learning_rate: float | optax.Schedule = 1e-3,
    *,
    schedule: str = "constant",
    total_steps: int | None = None,
    warmup_steps: int = 0,
    decay_steps: Sequence[int] = (),
    decay_factor: float = 0.1,
    end_factor: float = 0.0,
    start_factor: float = 0.0,
    peak_fraction: float = 0.0,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    nesterov: bool = False,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    grad_clip_norm: float = 0.0,
    skip_nonfinite: bool = False,
    backbone_lr_factor: float = 1.0,
    freeze: str = "",
    freeze_after: str = "",
    freeze_after_steps: int = 0,
    batch_size: int = 1024,
    norm_bias_lr_factor: float = 1.0,
    sam_rho: float = 0.0,
    inject_learning_rate: bool = False,
) -> optax.GradientTransformation:
    """Clipping (when `grad_clip_norm` > 0), then sgd | adam | adamw driven by the schedule.

    `inject_learning_rate` (sgd, adam, adamw) keeps the learning rate in the optimiser state
    (`optax.inject_hyperparams`): `learning_rate_of(state.opt_state)` reads it, and for a
    constant rate `state.replace(opt_state=set_learning_rate(state.opt_state, 1e-4))` changes
    it between steps without recompiling. It changes the optimiser state's structure, so a
    checkpoint saved without it does not restore with it (and the reverse); off by default.

    `learning_rate` is the peak rate of `schedule` (see `make_schedule`; steps, not epochs),
    or an optax schedule of its own. `weight_decay` acts on kernels only: L2 for sgd and
    adam, decoupled for adamw. `skip_nonfinite` leaves parameters and optimiser state as they
    were after a NaN/Inf gradient. `backbone_lr_factor` scales every update but the `head`
    module's (fine-tuning); parameters whose "module/param" path matches the regex `freeze`
    get no updates at all, and those matching `freeze_after` none after their first
    `freeze_after_steps` updates. `sgd_decoupled` also reads `batch_size` (its rates are per
    1,024 examples) and `norm_bias_lr_factor` (see `_sgd_decoupled`). `sam_rho` > 0 wraps the
    whole in SAM (`sam`): its update then needs the gradient at perturbed weights, which
    `flaxcls.core.steps.train_step` supplies.
    """
    if name not in OPTIMIZERS:
        raise ConfigError(f"Unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}.")
    schedule_options = dict(
        total_steps=total_steps,
        warmup_steps=warmup_steps,
        decay_steps=decay_steps,
        decay_factor=decay_factor,
        end_factor=end_factor,
        start_factor=start_factor,
        peak_fraction=peak_fraction,
    )
    if callable(learning_rate):
        if name == "sgd_decoupled":
            raise ConfigError("sgd_decoupled takes a number as learning_rate, not a schedule.")
        if schedule != "constant":
            raise ConfigError(f"learning_rate is a schedule already; schedule={schedule!r} too.")
        lr = learning_rate
    elif learning_rate <= 0:
        raise ConfigError(f"learning_rate={learning_rate} must be positive.")
    else:
        lr = make_schedule(schedule, learning_rate, **schedule_options)
    if inject_learning_rate and name == "sgd_decoupled":
        raise ConfigError(
            "inject_learning_rate is for sgd, adam and adamw; sgd_decoupled scales its rate "
            "per parameter group."
        )
    if inject_learning_rate and schedule == "constant" and not callable(learning_rate):
        lr = float(learning_rate)  # a number in the state, which stays as set
    tx = OPTIMIZERS[name](
        lr,
        inject=inject_learning_rate,
        peak_learning_rate=learning_rate,
        weight_decay=weight_decay,
        momentum=momentum,
        nesterov=nesterov,
        b1=b1,
        b2=b2,
        eps=eps,
        batch_size=batch_size,
        norm_bias_lr_factor=norm_bias_lr_factor,
    )
    return _wrapped(
        tx,
        grad_clip_norm=grad_clip_norm,
        skip_nonfinite=skip_nonfinite,
        backbone_lr_factor=backbone_lr_factor,
        freeze=freeze,
        freeze_after=freeze_after,
        freeze_after_steps=freeze_after_steps,
        sam_rho=sam_rho,
    )


def _wrapped(
    tx: optax.GradientTransformation,
    *,
    grad_clip_norm: float,
    skip_nonfinite: bool,
    backbone_lr_factor: float,
    freeze: str,
    freeze_after: str,
    freeze_after_steps: int,
    sam_rho: float,
) -> optax.GradientTransformation:
    """`tx` with make_optimizer's clipping, non-finite skipping, scaled backbone, frozen
    parameters and SAM, in that order."""
    if grad_clip_norm > 0:
        tx = optax.chain(optax.clip_by_global_norm(grad_clip_norm), tx)
    if skip_nonfinite:
        # The training loop stops after `max_consecutive_skips` non-finite steps, long before
        # optax would let one through.
        tx = optax.apply_if_finite(tx, max_consecutive_errors=2**30)
    if backbone_lr_factor != 1.0:
        tx = optax.chain(tx, optax.masked(optax.scale(backbone_lr_factor), _outside_head))
    if freeze:
        try:
            re.compile(freeze)
        except re.error as e:
            raise ConfigError(f"freeze={freeze!r} is not a regex: {e}") from None
        tx = optax.chain(tx, optax.masked(optax.set_to_zero(), lambda p: frozen_mask(p, freeze)))
    if freeze_after:
        tx = optax.chain(tx, _frozen_after(freeze_after, freeze_after_steps))
    if sam_rho < 0:
        raise ConfigError(f"sam_rho={sam_rho} must be >= 0 (0 turns SAM off).")
    if sam_rho > 0:
        tx = sam(tx, sam_rho)
    return tx


def _frozen_after(pattern: str, steps: int) -> optax.GradientTransformation:
    """Zero updates, from update `steps` on, for the leaves whose path matches `pattern`
    (airbench trains its whitening bias for the first epochs only)."""
    try:
        re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"freeze_after={pattern!r} is not a regex: {e}") from None
    later = optax.transforms.conditionally_transform(
        optax.set_to_zero(), lambda count: count >= steps
    )
    return optax.masked(later, lambda p: frozen_mask(p, pattern))


def _normalize(eps: float = 1e-12) -> optax.GradientTransformation:
    """The gradient divided by its global norm (`eps` keeps a zero gradient finite)."""

    def update(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        norm = optax.tree.norm(updates)
        return jax.tree.map(lambda g: g / (norm + eps), updates), state

    return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def sam(tx: optax.GradientTransformation, rho: float) -> optax.GradientTransformationExtraArgs:
    """Sharpness-aware minimisation (Foret et al. 2021): `tx` applied, at the current weights
    w, to the gradient taken at w + rho * g / ||g|| (g the gradient at w, the norm over all
    parameters).

    `optax.contrib.sam` in opaque mode with one adversarial step: its `update(grads, state,
    params, grad_fn=...)` calls `grad_fn(perturbed_params, 0)` for the second gradient, so
    anything else a step changes (BatchNorm statistics) comes from the first pass alone.
    """
    adversary = optax.chain(_normalize(), optax.sgd(rho))  # -rho * g / ||g||, negated by sam
    return optax.contrib.sam(tx, adversary, sync_period=2, opaque_mode=True)


def uses_sam(opt_state: Any) -> bool:
    """Whether an optimiser state is SAM's, whose update needs a `grad_fn` (see `sam`)."""
    return isinstance(opt_state, optax.contrib.SAMState)


def create_optimizer(
    config: Any, steps_per_epoch: int, total_steps: int
) -> optax.GradientTransformation:
    """`make_optimizer` with `config.optimizer` and `config.schedule` (epochs turned into
    steps); `config.nonfinite="skip"` skips the update of a non-finite step;
    `config.optimizer.sam_rho` > 0 turns SAM on."""
    cfg = config.optimizer
    return make_optimizer(
        cfg.name,
        cfg.learning_rate,
        schedule=config.schedule.name,
        total_steps=total_steps,
        **_schedule_steps(config.schedule, steps_per_epoch),
        weight_decay=cfg.weight_decay,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        b1=cfg.b1,
        b2=cfg.b2,
        eps=cfg.eps,
        grad_clip_norm=cfg.grad_clip_norm,
        skip_nonfinite=config.get("nonfinite", "stop") == "skip",
        backbone_lr_factor=cfg.backbone_lr_factor,
        freeze=cfg.freeze,
        # runs saved before these options existed have none of them
        freeze_after=cfg.get("freeze_after", ""),
        freeze_after_steps=int(cfg.get("freeze_after_epochs", 0.0) * steps_per_epoch),
        batch_size=config.batch_size,
        norm_bias_lr_factor=cfg.get("norm_bias_lr_factor", 1.0),
        sam_rho=cfg.get("sam_rho", 0.0),
    )
