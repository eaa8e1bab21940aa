"""The small CNN of the Keras CIFAR-10 tutorial: a fast baseline and a tiny model for tests."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from flaxcls.models.layers import classify, max_pool_2x2

# Keras defaults, so accuracy and curves compare with the tutorial's.
_keras_kernel_init = nn.initializers.xavier_uniform()
_keras_bias_init = nn.initializers.zeros


class SeedCNN(nn.Module):
    """Conv32-pool-Conv64-pool-Conv64-Dense64-Dense, VALID padding, ReLU, no BatchNorm.

    122,570 parameters on 32x32x3 inputs with 10 classes, 93,322 on 28x28x1.
    """

    num_classes: int
    dtype: Any = jnp.float32
    dropout_rate: float = 0.0
    axis_name: str | None = None  # accepted for a uniform interface; no BatchNorm here

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        def conv(features: int, name: str) -> nn.Conv:
            return nn.Conv(
                features,
                (3, 3),
                padding="VALID",
                dtype=self.dtype,
                kernel_init=_keras_kernel_init,
                bias_init=_keras_bias_init,
                name=name,
            )

        x = max_pool_2x2(nn.relu(conv(32, "conv1")(x)))
        x = max_pool_2x2(nn.relu(conv(64, "conv2")(x)))
        x = nn.relu(conv(64, "conv3")(x))
        x = x.reshape(x.shape[0], -1)
        x = nn.Dense(
            64,
            dtype=self.dtype,
            kernel_init=_keras_kernel_init,
            bias_init=_keras_bias_init,
            name="dense",
        )(x)
        x = nn.relu(x)
        return classify(
            x,
            num_classes=self.num_classes,
            dropout_rate=self.dropout_rate,
            train=train,
            dtype=self.dtype,
            kernel_init=_keras_kernel_init,
        )
