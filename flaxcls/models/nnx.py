"""Flax NNX modules as flaxcls models, through `flax.nnx.bridge.ToLinen`.

`from_nnx(MyModule, num_classes=10)` is a Linen module that keeps the model contract: called as
`model.apply(variables, images, train=...)`, its NNX `Param`s are the `params` collection and
its `BatchStat`s the `batch_stats` collection, and in training its `Dropout` draws from the
step's `dropout` rng. So `create_train_state`, `train_step`, `eval_step`, checkpoints, transfer
and export take it as they take any Linen model. Register it to train it with `run.py`:

    MODELS["my_cnn"] = functools.partial(from_nnx, MyModule)

The NNX module is built with the keyword arguments given here plus `rngs=nnx.Rngs(...)`; a
registered one receives the library-wide `num_classes`, `dtype`, `dropout_rate` and `axis_name`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
from flax import nnx
from flax.core import FrozenDict
from flax.nnx import bridge


def _call_in_mode(module: nnx.Module, images: jax.Array, *, train: bool) -> jax.Array:
    """Calls `module` in training or evaluation mode.

    NNX keeps the mode in attributes (`Dropout.deterministic`, `BatchNorm.use_running_average`),
    which `nnx.view` sets on every submodule that has them; a `__call__` that takes `train`
    itself gets it as well.
    """
    view = nnx.view(
        module, deterministic=not train, use_running_average=not train, raise_if_not_found=False
    )
    if "train" in inspect.signature(type(module).__call__).parameters:
        return view(images, train=train)
    return view(images)


class NNXClassifier(bridge.ToLinen):
    """`bridge.ToLinen` with the flaxcls call signature `(images, *, train)`.

    ToLinen builds the NNX module afresh in every `apply` and loads the variables into it, so
    the module is a pure function of `params` and `batch_stats` as Linen expects; the weights
    drawn while building it are overwritten and compiled away.
    """

    def __call__(self, images: jax.Array, *, train: bool) -> jax.Array:
        return super().__call__(images, nnx_method=functools.partial(_call_in_mode, train=train))


def from_nnx(nnx_class: Callable[..., nnx.Module], **kwargs: Any) -> NNXClassifier:
    """A flaxcls model (a Linen module) made of the NNX module `nnx_class(**kwargs, rngs=...)`.

    `nnx_class.__call__` takes the images (and optionally `train`) and returns logits of shape
    (batch, num_classes); its `Dropout` and `BatchNorm` modules are switched between training
    and evaluation for it. `init` needs the rngs the module's constructor draws from: an
    `nnx.Dropout(rate, rngs=rngs)` takes a `dropout` key, which `create_train_state` gives.
    """
    if isinstance(nnx_class, nnx.Module):  # an instance holds its own state: Linen cannot own it
        raise TypeError(
            f"from_nnx takes the NNX module's class (or a function that builds it), not an "
            f"instance: from_nnx({type(nnx_class).__name__}, ...)."
        )
    return NNXClassifier(nnx_class, kwargs=FrozenDict(kwargs))
