"""Every config value checked before anything is built or compiled: a bad value is one line that
names the key, the value and what is allowed, instead of a traceback minutes later or a run that
silently trains nothing (`num_epochs=-1` trains 0 steps and still writes test metrics).

`RULES` maps each dotted key of configs/default.py to what it accepts; `CROSS_CHECKS` relate
several keys (the held-out fractions, the model against the image size). A new config field
needs a rule here: tests/test_config.py fails for a number in default.py without one.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

from flaxcls.core.metrics import BEST_METRICS
from flaxcls.data.augment import PADDING_MODES
from flaxcls.data.datasets import DATASETS
from flaxcls.errors import ConfigError
from flaxcls.rundir.checkpoint import SAVE_ERROR_MODES

NONFINITE_MODES = ("stop", "skip")
# Square image sides tried when looking for the smallest one a model accepts.
LARGEST_SIDE_TRIED = 4096


def _show(x: float) -> str:
    """A bound as people write it: 1, 0.5, 2**63."""
    if isinstance(x, int) and x >= 2**32 and x & (x - 1) == 0:
        return f"2**{x.bit_length() - 1}"
    return f"{x:g}" if isinstance(x, float) else str(x)


@dataclasses.dataclass(frozen=True)
class Number:
    """A finite number in [low, high] (either end open); `whole` asks for an int, `also` names
    single values accepted outside the range, with their meaning (-1: "unset")."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    whole: bool = False
    also: tuple[tuple[int, str], ...] = ()

    def describe(self, finite: bool = True) -> str:
        noun = "a finite number " if not finite else "a whole number " if self.whole else ""
        left, right = ("(" if self.low_open else "["), (")" if self.high_open else "]")
        if math.isinf(self.high):
            bound = f"{'>' if self.low_open else '>='} {_show(self.low)}"
        else:
            bound = f"in {left}{_show(self.low)}, {_show(self.high)}{right}"
        extras = [f"{value} ({meaning})" for value, meaning in self.also]
        return " or ".join([*extras, f"{noun}{bound}"])

    def requirement(self, value: Any) -> str | None:
        """None when `value` is allowed, else what is."""
        if not isinstance(value, bool) and any(value == v for v, _ in self.also):
            return None
        kinds = (int,) if self.whole else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds):
            return self.describe()
        if not math.isfinite(value):
            return self.describe(finite=False)
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return None if above and below else self.describe()


@dataclasses.dataclass(frozen=True)
class OneOf:
    """One of a fixed set of values."""

    options: tuple[Any, ...]

    def requirement(self, value: Any) -> str | None:
        if value in self.options and not isinstance(value, bool):
            return None
        return f"one of {', '.join(str(o) for o in self.options)}"


@dataclasses.dataclass(frozen=True)
class Each:
    """A list or tuple whose every item follows `item`."""

    item: Number

    def requirement(self, value: Any) -> str | None:
        if isinstance(value, (list, tuple)) and all(
            self.item.requirement(v) is None for v in value
        ):
            return None
        return f"a list, each item {self.item.describe()}"


@dataclasses.dataclass(frozen=True)
class Flag:
    """True or False, not 0 or 1."""

    def requirement(self, value: Any) -> str | None:
        return None if isinstance(value, bool) else "True or False"


Rule = Number | OneOf | Each | Flag

FRACTION = Number(0.0, 1.0, high_open=True)  # [0, 1)
PROBABILITY = Number(0.0, 1.0)  # [0, 1]
POSITIVE = Number(0.0, low_open=True)  # > 0
NON_NEGATIVE = Number(0.0)  # >= 0
COUNT = Number(0, whole=True)  # 0, 1, 2, ...
AT_LEAST_ONE = Number(1, whole=True)
SEED = Number(0, 2**63, high_open=True, whole=True)  # numpy and jax.random both take it

# dotted key -> what it accepts, and what the allowed edge values mean where that helps.
RULES: dict[str, tuple[Rule, str]] = {
    "seed": (SEED, ""),
    "model.dropout_rate": (FRACTION, ""),
    "data.validation_fraction": (FRACTION, ""),
    "data.test_fraction": (FRACTION, ""),
    "data.num_classes": (COUNT, "0 counts the labels"),
    "data.channels": (OneOf((0, 1, 3)), "0 takes 1 when every image is grayscale, else 3"),
    "data.split_seed": (SEED, ""),
    "data.crop_padding": (COUNT, ""),
    "data.image_size": (AT_LEAST_ONE, ""),
    "data.eval_resize": (AT_LEAST_ONE, ""),
    "data.shuffle_buffer": (AT_LEAST_ONE, ""),
    "data.randaugment_ops": (COUNT, "0 turns RandAugment off"),
    "data.randaugment_magnitude": (Number(0.0, 10.0), ""),
    "data.erasing_prob": (PROBABILITY, ""),
    "data.mixup_alpha": (NON_NEGATIVE, "0 turns mixup off"),
    "data.cutmix_alpha": (NON_NEGATIVE, "0 turns CutMix off"),
    "data.mix_prob": (PROBABILITY, ""),
    "mesh.fsdp_min_size": (COUNT, ""),
    "batch_size": (AT_LEAST_ONE, ""),
    "eval_batch_size": (AT_LEAST_ONE, ""),
    "num_epochs": (POSITIVE, ""),
    "num_train_steps": (Number(1, whole=True, also=((-1, "train for num_epochs"),)), ""),
    "steps_per_dispatch": (COUNT, "0 picks by platform: 1 on CPUs, 32 on GPUs and TPUs"),
    "optimizer.learning_rate": (POSITIVE, ""),
    "optimizer.momentum": (FRACTION, "0 is plain SGD"),
    "optimizer.b1": (FRACTION, ""),
    "optimizer.b2": (FRACTION, ""),
    "optimizer.eps": (POSITIVE, ""),
    "optimizer.weight_decay": (NON_NEGATIVE, ""),
    "optimizer.grad_clip_norm": (NON_NEGATIVE, "0 turns clipping off"),
    "optimizer.backbone_lr_factor": (NON_NEGATIVE, ""),
    "optimizer.sam_rho": (NON_NEGATIVE, "0 turns SAM off"),
    "optimizer.freeze_after_epochs": (NON_NEGATIVE, ""),
    "optimizer.norm_bias_lr_factor": (POSITIVE, ""),
    "schedule.warmup_epochs": (NON_NEGATIVE, ""),
    "schedule.decay_epochs": (Each(NON_NEGATIVE), ""),
    "schedule.decay_factor": (POSITIVE, ""),
    "schedule.end_factor": (PROBABILITY, ""),
    "schedule.start_factor": (PROBABILITY, ""),
    "schedule.peak_fraction": (PROBABILITY, ""),
    "label_smoothing": (FRACTION, ""),
    "ema_decay": (FRACTION, "0 turns the average off"),
    "translate_tta": (COUNT, "0 adds no shifted views"),
    "lookahead.every": (COUNT, "0 turns lookahead off"),
    "lookahead.decay": (PROBABILITY, ""),
    "lookahead.power": (NON_NEGATIVE, ""),
    "data.crop_padding_mode": (OneOf(PADDING_MODES), ""),
    "eval_every_epochs": (POSITIVE, ""),
    "checkpoint_every_steps": (COUNT, "0 saves only at validations"),
    "keep_checkpoints": (AT_LEAST_ONE, ""),
    "max_consecutive_skips": (COUNT, ""),
    "divergence_factor": (Number(1.0, low_open=True, also=((0, "no divergence rail"),)), ""),
    "early_stopping_patience": (COUNT, "0 never stops early"),
    "log_every_steps": (COUNT, "0 logs training metrics only at validations and the end"),
    "profile_steps": (COUNT, "0 takes no trace"),
    "on_save_error": (OneOf(SAVE_ERROR_MODES), ""),
    "nonfinite": (OneOf(NONFINITE_MODES), ""),
    "best_metric": (OneOf(BEST_METRICS), ""),
    "allow_config_change": (Flag(), "True records a changed config and resumes"),
}

_MISSING = object()


def lookup(config: Any, key: str) -> Any:
    """The value at dotted `key`, or `_MISSING` (an older run's config may lack newer keys)."""
    value = config
    for part in key.split("."):
        try:
            value = value[part]
        except (KeyError, TypeError, AttributeError):
            return _MISSING
    return value


def rule_problems(config: Any) -> list[str]:
    """One line per value outside its rule's range."""
    problems = []
    for key, (rule, note) in RULES.items():
        value = lookup(config, key)
        if value is _MISSING:
            continue
        requirement = rule.requirement(value)
        if requirement is not None:
            problems.append(
                f"{key}={value!r} must be {requirement}" + (f" ({note})" if note else "")
            )
    return problems


def _values(config: Any, *keys: str) -> tuple[Any, ...] | None:
    """The values at `keys`, or None when the config lacks one of them."""
    values = tuple(lookup(config, key) for key in keys)
    return None if any(v is _MISSING for v in values) else values


def _held_out_fractions(config: Any) -> str | None:
    values = _values(config, "data.validation_fraction", "data.test_fraction")
    if values is None or sum(values) < 1.0:
        return None
    return (
        f"data.validation_fraction={values[0]} and data.test_fraction={values[1]} hold out "
        f"{sum(values):.0%} of the images, leaving none to train on; their sum must be below 1"
    )


def _eval_resize(config: Any) -> str | None:
    """Streaming evaluation resizes to eval_resize, then centre-crops image_size."""
    values = _values(config, "data.dataset", "data.image_size", "data.eval_resize")
    if values is None:
        return None
    dataset, image_size, eval_resize = values
    info = DATASETS.get(dataset)
    if info is None or not info.streaming or eval_resize >= image_size:
        return None
    return (
        f"data.eval_resize={eval_resize} must be at least data.image_size={image_size} "
        "(evaluation crops image_size out of it)"
    )


def known_image_shape(config: Any) -> tuple[tuple[int, int, int], str] | None:
    """The (H, W, C) the model will see, and where it comes from, when the config alone says
    (folder and streaming datasets, named in-memory datasets); None for custom arrays, whose
    shape is known once they are loaded."""
    values = _values(config, "data.dataset", "data.image_size", "data.channels")
    if values is None:
        return None
    dataset, size, channels = values
    if dataset == "folder":
        return (size, size, channels or 3), f"data.image_size={size}"
    info = DATASETS.get(dataset)
    if info is None:
        return None
    if info.streaming:
        return (size, size, info.image_shape[-1]), f"data.image_size={size}"
    return tuple(info.image_shape), f"dataset {info.name!r}"


@functools.cache
def model_fits(model_name: str, image_shape: tuple[int, int, int]) -> bool:
    """Whether the model maps one image of `image_shape` to logits without an empty feature map
    on the way (a small image pooled away: a ZeroDivisionError in init, or NaN logits). The
    model's init is traced abstractly, so nothing is computed or compiled."""
    import jax
    import jax.numpy as jnp

    from flaxcls.models import get_model

    model = get_model(model_name, num_classes=2)

    def init(images: jax.Array) -> Any:
        key = jax.random.PRNGKey(0)  # both streams, as create_train_state gives them (NNX needs it)
        rngs = {"params": key, "dropout": key}
        return model.init(rngs, images, train=False, capture_intermediates=True)

    try:
        shapes = jax.eval_shape(init, jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))
    except Exception:  # noqa: BLE001 - a shape error shows up as whatever the layer raises
        return False
    return all(0 not in leaf.shape for leaf in jax.tree.leaves(shapes))


@functools.cache
def minimum_image_size(model_name: str, channels: int, too_small: int = 0) -> int | None:
    """The smallest square side the model accepts, above a side known `too_small` (doubling,
    then bisecting); None when no side up to LARGEST_SIDE_TRIED fits, so the model's failure
    is not about the size."""

    def fits(side: int) -> bool:
        return model_fits(model_name, (side, side, channels))

    low, high = too_small, max(1, 2 * too_small)  # low does not fit, high is the next one tried
    while not fits(high):
        if high >= LARGEST_SIDE_TRIED:
            return None
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if fits(middle) else (middle, high)
    return high


def check_model_input(model_name: str, image_shape: Sequence[int], source: str) -> None:
    """A ConfigError naming the model and the smallest image it takes, when images of
    `image_shape` (described by `source`, e.g. "data.image_size=4") are too small for it."""
    height, width, channels = (int(d) for d in image_shape)
    if model_fits(model_name, (height, width, channels)):
        return
    side = minimum_image_size(model_name, channels, too_small=min(height, width))
    if side is None:
        return  # not a matter of size: building the model reports the real problem
    raise ConfigError(
        f"model.name={model_name!r} needs images of at least {side}x{side} pixels, not "
        f"{height}x{width} ({source}); use larger images or another model."
    )


def _model_input(config: Any) -> str | None:
    from flaxcls.models import MODELS

    known = known_image_shape(config)
    name = lookup(config, "model.name")
    if known is None or name not in MODELS:
        return None  # the registry reports an unknown name with the valid ones
    try:
        check_model_input(name, *known)
    except ConfigError as e:
        return str(e)
    return None


# Checks that relate several keys, run once every key is within its own range; the model's
# (tracing it) comes last.
CROSS_CHECKS: tuple[Callable[[Any], str | None], ...] = (
    _held_out_fractions,
    _eval_resize,
    _model_input,
)


def check_config(config: Any) -> None:
    """Raises ConfigError listing every value out of its range (one line), before anything
    is loaded, built or compiled."""
    problems = rule_problems(config)
    if not problems:  # the cross checks assume every value is in its range
        problems = [p for check in CROSS_CHECKS if (p := check(config)) is not None]
    if problems:
        raise ConfigError("; ".join(p.rstrip(".") for p in problems) + ".")
