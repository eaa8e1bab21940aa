"""Training data held on the devices: the uint8 training split is placed once on every device,
and each step gathers, augments and normalises its rows inside the compiled step, so the host
sends only example indices and augmentation draws (a few bytes an example, not its pixels)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Sharding

from flaxcls.data.augment import Augmentation
from flaxcls.data.contract import ArraySplit, Input, Normalizer
from flaxcls.data.input import augmentation_of
from flaxcls.errors import ConfigError


def place(split: ArraySplit, replicated: Sharding) -> dict[str, jax.Array]:
    """The split as arrays with the `replicated` sharding (every process holds it all)."""

    def put(array: np.ndarray) -> jax.Array:
        return jax.make_array_from_callback(array.shape, replicated, lambda index: array[index])

    return {"image": put(split.images), "label": put(split.labels.astype(np.int32))}


def gather_then(
    step: Callable[..., Any], normalizer: Normalizer, augment: Augmentation
) -> Callable[..., Any]:
    """`step(state, batch)` on batches of indices (and augmentation draws, `uniforms`; a batch
    without them is not augmented) into the device-held `data`; `augment` is a jax.numpy
    augmentation (`get_augmentation(xp=jnp)`)."""

    def step_on_indices(state: Any, batch: dict[str, jax.Array], data: dict[str, jax.Array]):
        index = batch["index"]
        image = data["image"][index]
        if "uniforms" in batch:
            image = augment(image, batch["uniforms"])
        image = normalizer(image)
        return step(state, {"image": image, "label": data["label"][index]})

    return step_on_indices


def compile_train_step(
    step: Callable[..., Any],
    scan: Callable[[Callable], Callable],
    inputs: Input,
    data_config: Any,
    state_sharding: Any,
    block_sharding: Sharding,
    replicated: Sharding,
) -> tuple[Callable[..., Any], Callable[[int], Iterator[dict[str, np.ndarray]]]]:
    """`step` jitted over blocks of (index, draws) into the training split, placed on every
    device here, and the start step -> blocks' inputs it takes: what the loop calls in place
    of the step over host batches (the same examples and augmentation draws). The shardings
    are the loop's: a block of the batch over the devices, and one held whole on each."""
    if inputs.train_split is None:
        raise ConfigError(
            f"data.on_device needs a dataset held in memory; {inputs.info.name} is streamed. "
            "Set --config.data.on_device=False."
        )
    held = place(inputs.train_split, replicated)
    p_gather = jax.jit(
        scan(gather_then(step, inputs.normalizer, augmentation_of(data_config, jnp))),
        in_shardings=(state_sharding, block_sharding, replicated),
        out_shardings=(state_sharding, replicated),
        donate_argnums=0,
    )
    draws = functools.partial(inputs.train_indices, with_uniforms=data_config.augment != "none")
    return (lambda state, block: p_gather(state, block, held)), draws
