"""Training data held on the devices: the uint8 training split is placed once on every device,
and each step gathers, augments and normalises its rows inside the compiled step, so the host
sends only example indices and augmentation draws (a few bytes an example, not its pixels)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Sharding

from flaxcls.data.augment import Augmentation
from flaxcls.data.pipeline import Normalizer
from flaxcls.data.sources import ArraySplit


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
    scale, shift = jnp.asarray(normalizer.scale), jnp.asarray(normalizer.shift)

    def step_on_indices(state: Any, batch: dict[str, jax.Array], data: dict[str, jax.Array]):
        index = batch["index"]
        image = data["image"][index]
        if "uniforms" in batch:
            image = augment(image, batch["uniforms"])
        image = image.astype(jnp.float32) * scale + shift
        return step(state, {"image": image, "label": data["label"][index]})

    return step_on_indices
