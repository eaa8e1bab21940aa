"""What a run starts from besides its freshly initialised state, set from the config: a
whitened stem, `init_from`'s weights, the moving average's start, and the loss's class
weights."""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp

from flaxcls.core.metrics import balanced_class_weights
from flaxcls.core.steps import TrainState
from flaxcls.data import Input
from flaxcls.errors import ConfigError
from flaxcls.models.whitening import patch_whitening_kernel
from flaxcls.modes.transfer import init_from_run


def whiten_stem(
    state: TrainState, inputs: Input, num_images: int = 5000, centered: bool = True
) -> TrainState:
    """The stem kernel set by patch whitening of the first `num_images` training images
    (`centered`: see `patch_whitening_kernel`)."""
    kernel = state.params.get("stem", {}).get("kernel")
    if kernel is None or inputs.train_split is None:
        raise ConfigError(
            "model.whiten_stem needs a model with a `stem` convolution (fast_cnn, "
            "fast_cnn_small, speedrun_cnn) and a dataset held in memory."
        )
    k, _, channels, width = kernel.shape
    if width != 2 * k * k * channels:
        raise ConfigError(
            f"model.whiten_stem: the {k}x{k} stem on {channels}-channel images needs "
            f"{2 * k * k * channels} filters, the model has {width}."
        )
    images = inputs.normalizer(inputs.train_split.images[:num_images])
    whitened = jax.device_put(patch_whitening_kernel(images, k, centered=centered), kernel.sharding)
    params = {**state.params, "stem": {**state.params["stem"], "kernel": whitened}}
    return state.replace(params=params)


def class_weights(config: Any, inputs: Input) -> jax.Array | None:
    """`loss.class_weights="balanced"`: n / (k * n_c) per class c of the training split (as
    scikit-learn's), so every class weighs as much in the loss; None for "none"."""
    if config.class_weights == "none":
        return None
    if config.class_weights != "balanced":
        raise ConfigError(f"class_weights={config.class_weights!r}; choose none or balanced.")
    if inputs.train_split is None:
        raise ConfigError("class_weights='balanced' needs a dataset held in memory.")
    return jnp.asarray(balanced_class_weights(inputs.train_split.labels, inputs.info.num_classes))


def starting_state(
    config: Any, workdir: str, state: TrainState, inputs: Input, is_main: bool
) -> TrainState:
    """The fresh state with a whitened stem and `init_from`'s weights where asked for (a resumed
    run's own checkpoint replaces all of it afterwards)."""
    if config.model.whiten_stem:
        # runs saved before the option existed whitened centered patches
        state = whiten_stem(state, inputs, centered=config.model.get("whiten_centered", True))
    if config.init_from:
        state, summary = init_from_run(state, config.init_from, init_head=config.init_head)
        if is_main:
            with open(os.path.join(workdir, "init_from.json"), "w", encoding="utf-8") as f:
                json.dump(summary, f, indent=2)
            print(
                f"init_from {config.init_from} (step {summary['step']}): "
                f"{len(summary['copied'])} arrays copied, fresh: {', '.join(summary['fresh'])}"
            )
    if state.ema is not None:  # the average starts from the weights training starts from
        state = state.replace(ema=jax.tree.map(jnp.copy, state.weights()))  # donated apart
    return state
