"""A multi-layer perceptron on flattened pixels: the Fashion-MNIST table's MLPClassifier
baseline, and a model small enough that a benchmark measures the training loop, not the maths."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from flaxcls.models.layers import classify


class MLP(nn.Module):
    """Flatten, then Dense-ReLU per entry of `hidden`, then the `head` classifier.

    101,770 parameters on 28x28x1 inputs with 10 classes (one hidden layer of 128).
    """

    num_classes: int
    hidden: Sequence[int] = (128,)
    dtype: Any = jnp.float32
    dropout_rate: float = 0.0
    axis_name: str | None = None  # accepted for a uniform interface; no BatchNorm here

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        for i, width in enumerate(self.hidden):
            x = nn.relu(nn.Dense(width, dtype=self.dtype, name=f"dense{i + 1}")(x))
        return classify(
            x,
            num_classes=self.num_classes,
            dropout_rate=self.dropout_rate,
            train=train,
            dtype=self.dtype,
        )
