"""Untrained models of the registry as serving functions (uint8 NHWC images -> probabilities),
for export checks that need no training run: tests/test_export_models.py and
benchmarks/export_all_models.py."""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flaxcls.data.contract import Normalizer
from flaxcls.models import get_model

# Image sizes of the quick checks: the smallest each model's stride pattern takes comfortably.
SMALL_SIZE = 32
SMALL_SIZES = {"inception_v3": 75}  # its stem and reductions need at least 75x75
# The sizes the ImageNet models are built for.
FULL_SIZES = {"resnet50": 224, "inception_v3": 299}


def small_shape(name: str, channels: int = 3) -> tuple[int, int, int]:
    size = SMALL_SIZES.get(name, SMALL_SIZE)
    return (size, size, channels)


def _perturb(variables: dict, seed: int) -> dict:
    """Fresh initialisations have zero biases and heads and identity BatchNorm statistics, which
    would let an exporter drop or mishandle them unnoticed: give every parameter some noise and
    the BatchNorm statistics values a trained network has (in numpy: no compilation per shape)."""
    rng = np.random.default_rng(seed)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(variables)
    out = []
    for path, leaf in leaves:
        names = [getattr(p, "key", "") for p in path]
        leaf = np.asarray(leaf)
        noise = rng.standard_normal(leaf.shape).astype(leaf.dtype)
        if "batch_stats" in names and names[-1] == "var":
            leaf = leaf * np.exp(0.3 * noise)
        elif "batch_stats" in names:
            leaf = leaf + 0.1 * noise
        else:
            leaf = leaf + 0.02 * noise
        out.append(leaf)
    return jax.tree_util.tree_unflatten(treedef, out)


def _calibrate(model: nn.Module, variables: dict, images: jax.Array, passes: int = 30) -> dict:
    """BatchNorm running statistics of `images`, as training leaves them: without them an
    untrained deep network's activations, and so its logits, grow with depth until float32
    rounding alone moves its probabilities by 1e-4."""

    @jax.jit
    def update(variables: dict) -> dict:
        _, state = model.apply(variables, images, train=True, mutable=["batch_stats"])
        return {**variables, **state}

    for _ in range(passes):  # the moving averages close on the batch's statistics
        variables = update(variables)
    return variables


def served_model(
    name: str, images: np.ndarray, num_classes: int = 5, seed: int = 0
) -> tuple[Callable[[jax.Array], jax.Array], np.ndarray]:
    """uint8 images -> probabilities of the registered model `name` for images shaped like
    `images`, randomly initialised and served as `flaxcls.modes.build.serving_function` serves a
    trained one (normalisation inside, BatchNorm statistics as constants), and JAX's
    probabilities on `images`. The logits are centred and scaled to a spread of about 2 on
    `images`, so that the probabilities are far from uniform and from one-hot."""
    image_shape = images.shape[1:]
    model = get_model(name, num_classes=num_classes)
    init = jax.jit(functools.partial(model.init, train=False))
    variables = dict(init(jax.random.key(seed), jnp.zeros((1, *image_shape), jnp.float32)))
    channels = image_shape[-1]
    normalizer = Normalizer((0.45,) * channels, (0.25,) * channels)
    if "batch_stats" in variables:
        variables = _calibrate(model, variables, normalizer(images))
    variables = _perturb(variables, seed)

    def apply(variables: dict, images: jax.Array) -> jax.Array:
        return model.apply(variables, normalizer(images), train=False)

    def logits(images: jax.Array) -> jax.Array:
        return apply(variables, images)

    # the weights as arguments, not closed-over constants that XLA would try to fold
    reference_logits = np.asarray(jax.jit(apply)(variables, images))
    # a random network often favours one class for every image: take out each class's mean
    offset = reference_logits.mean(axis=0)
    spread = float(np.std(reference_logits - offset))
    temperature = 2.0 / spread if spread > 0 else 1.0

    def serve(images: jax.Array) -> jax.Array:
        return jax.nn.softmax((logits(images) - offset) * temperature, axis=-1)

    centred = jnp.asarray(reference_logits - offset)
    return serve, np.asarray(jax.nn.softmax(centred * temperature, axis=-1))
