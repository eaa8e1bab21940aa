"""Flax NNX modules as flaxcls models, through `flax.nnx.bridge.ToLinen`.

`from_nnx(MyModule, num_classes=10)` is a Linen module that keeps the model contract: called as
`model.apply(variables, images, train=...)`, its NNX `Param`s are the `params` collection and
its `BatchStat`s the `batch_stats` collection, and in training its `Dropout` draws from the
step's `dropout` rng. So `create_train_state`, `train_step`, `eval_step`, checkpoints, transfer
and export take it as they take any Linen model. Register it to train it with `run.py`:

    MODELS["my_cnn"] = functools.partial(from_nnx, MyModule)

The NNX module is built with the keyword arguments given here plus `rngs=nnx.Rngs(...)`; a
registered one receives the library-wide `num_classes`, `dtype`, `dropout_rate` and `axis_name`.

Back the other way, `to_nnx(state, MyModule(num_classes=10, rngs=nnx.Rngs(0)))` puts a trained
flaxcls state's `params` and `batch_stats` into the NNX module, to continue in NNX.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
from flax import nnx
from flax.core import FrozenDict, meta, unfreeze
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


def _shapes(state: Any) -> dict[tuple, tuple]:
    return {path: jax.numpy.shape(v) for path, v in nnx.traversals.flatten_mapping(state).items()}


def to_nnx(state_or_variables: Any, module: nnx.Module) -> nnx.Module:
    """Puts a flaxcls state's weights into `module`, an NNX module of the class that `from_nnx`
    was given, built with the same keyword arguments plus `rngs`; returns `module`.

    A `TrainState` gives the weights evaluation and `predict` use (its moving average `ema`
    when it keeps one); a {'params', 'batch_stats'} dict is taken as it is. Every `nnx.Param`
    and `nnx.BatchStat` of `module` must be there with its shape, and nothing else, or a
    ValueError names the paths. The module stays in training mode, as NNX builds it: call
    `module.eval()` (or `nnx.view(module, deterministic=True, use_running_average=True)`) to
    predict as flaxcls does.
    """
    variables = state_or_variables
    if hasattr(variables, "weights"):  # a TrainState (models import nothing of core)
        ema = getattr(variables, "ema", None)
        variables = ema if ema is not None else variables.weights()
    collections = [
        jax.tree.map(
            lambda x: x.unbox() if isinstance(x, meta.AxisMetadata) else x,
            unfreeze(v),
            is_leaf=lambda x: isinstance(x, meta.AxisMetadata),
        )
        for v in dict(variables).values()
        if v  # an empty batch_stats
    ]
    incoming = nnx.merge_state(*collections) if collections else nnx.State({})
    expected = _shapes(nnx.state(module, nnx.Any(nnx.Param, nnx.BatchStat)))
    got = _shapes(incoming)
    problems = [f"missing {'/'.join(map(str, p))}" for p in expected if p not in got]
    problems += [f"unknown {'/'.join(map(str, p))}" for p in got if p not in expected]
    problems += [
        f"{'/'.join(map(str, p))} has shape {got[p]}, the module {shape}"
        for p, shape in expected.items()
        if p in got and got[p] != shape
    ]
    if problems:
        raise ValueError(
            f"the weights do not fit {type(module).__name__}: {'; '.join(problems)}. Build it "
            "with the keyword arguments given to from_nnx."
        )
    nnx.update(module, incoming)
    return module
