"""Optimiser and learning-rate schedule from the config, through optax.

Schedules are given in epochs in the config and turned into steps here, so an override of
the batch size or the epoch count never leaves a stale derived value behind.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jax
import optax

from flaxcls.errors import ConfigError

ScheduleFn = Callable[[Any, float, int, int], optax.Schedule]


def _constant(cfg: Any, lr: float, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    return optax.constant_schedule(lr)


def _step(cfg: Any, lr: float, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    boundaries = {int(e * steps_per_epoch): cfg.decay_factor for e in cfg.decay_epochs}
    return optax.piecewise_constant_schedule(lr, boundaries)


def _cosine(cfg: Any, lr: float, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    return optax.cosine_decay_schedule(lr, max(total_steps, 1), alpha=cfg.end_factor)


def _warmup_cosine(cfg: Any, lr: float, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=lr,
        warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1),
        end_value=lr * cfg.end_factor,
    )


SCHEDULES: dict[str, ScheduleFn] = {
    "constant": _constant,
    "step": _step,
    "cosine": _cosine,
    "warmup_cosine": _warmup_cosine,
}


def create_learning_rate_schedule(
    config: Any, steps_per_epoch: int, total_steps: int
) -> optax.Schedule:
    """`config.schedule.name` applied to `config.optimizer.learning_rate`."""
    name = config.schedule.name
    if name not in SCHEDULES:
        raise ConfigError(f"Unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}.")
    return SCHEDULES[name](
        config.schedule, config.optimizer.learning_rate, steps_per_epoch, total_steps
    )


def decay_mask(params: Any) -> Any:
    """Weight decay applies to kernels only: biases and norm scales (1-D leaves) are skipped."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def _sgd(cfg: Any, lr: optax.Schedule) -> optax.GradientTransformation:
    # Coupled (L2) decay, as in the classic SGD recipes for ResNets.
    return optax.chain(
        optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask),
        optax.sgd(lr, momentum=cfg.momentum or None, nesterov=cfg.nesterov),
    )


def _adam(cfg: Any, lr: optax.Schedule) -> optax.GradientTransformation:
    return optax.chain(
        optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask),
        optax.adam(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps),
    )


def _adamw(cfg: Any, lr: optax.Schedule) -> optax.GradientTransformation:
    return optax.adamw(
        lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=decay_mask
    )


OPTIMIZERS: dict[str, Callable[[Any, optax.Schedule], optax.GradientTransformation]] = {
    "sgd": _sgd,
    "adam": _adam,
    "adamw": _adamw,
}


def frozen_mask(params: Any, pattern: str) -> Any:
    """True for the leaves whose path ("block0_conv0/kernel") matches the regex `pattern`."""
    regex = re.compile(pattern)
    return jax.tree_util.tree_map_with_path(
        lambda path, _: bool(regex.search("/".join(str(getattr(k, "key", k)) for k in path))),
        params,
    )


def create_optimizer(
    config: Any, steps_per_epoch: int, total_steps: int
) -> optax.GradientTransformation:
    """Clipping (optional), then the named optimiser driven by the schedule; parameters matching
    `optimizer.freeze` (a regex over "module/param" paths) get no updates at all."""
    cfg = config.optimizer
    if cfg.name not in OPTIMIZERS:
        raise ConfigError(f"Unknown optimizer {cfg.name!r}; choose one of {', '.join(OPTIMIZERS)}.")
    if cfg.learning_rate <= 0:
        raise ConfigError(f"optimizer.learning_rate={cfg.learning_rate} must be positive.")
    lr = create_learning_rate_schedule(config, steps_per_epoch, total_steps)
    tx = OPTIMIZERS[cfg.name](cfg, lr)
    if cfg.grad_clip_norm > 0:
        tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), tx)
    if config.get("nonfinite", "stop") == "skip":
        # A NaN/Inf gradient leaves parameters and optimiser state as they were; the training
        # loop stops after `max_consecutive_skips` of them, before optax would let one through.
        tx = optax.apply_if_finite(tx, max_consecutive_errors=2**30)
    if cfg.backbone_lr_factor != 1.0:  # fine-tuning: everything but the head moves slower
        tx = optax.chain(
            tx,
            optax.masked(
                optax.scale(cfg.backbone_lr_factor),
                lambda p: jax.tree_util.tree_map_with_path(
                    lambda path, _: getattr(path[0], "key", None) != "head", p
                ),
            ),
        )
    if cfg.freeze:
        try:
            re.compile(cfg.freeze)
        except re.error as e:
            raise ConfigError(f"optimizer.freeze={cfg.freeze!r} is not a regex: {e}") from None
        tx = optax.chain(
            tx, optax.masked(optax.set_to_zero(), lambda p: frozen_mask(p, cfg.freeze))
        )
    return tx
