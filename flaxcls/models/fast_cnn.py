"""A small fast network in the style of airbench94 (Keller Jordan's CIFAR-10 speedrun).

A stem convolution, then blocks of conv -> 2x2 max pool -> BatchNorm -> GELU -> conv ->
BatchNorm -> GELU, a global max pool and a linear head with a fixed scale. BatchNorm uses a
fast-moving average (momentum 0.4 on the old value) because the recipes train for few steps.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from flaxcls.models.layers import batch_norm, max_pool_2x2

BN_MOMENTUM = 0.4  # keeps 0.4 of the old value; airbench94 keeps 0.6 (speedrun_cnn does)


class FastCNN(nn.Module):
    num_classes: int
    widths: Sequence[int] = (64, 256, 256)
    stem_width: int = 24
    stem_kernel: int = 2
    head_scale: float = 1 / 9
    dtype: Any = jnp.float32
    dropout_rate: float = 0.0
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        norm = batch_norm(train, self.dtype, momentum=BN_MOMENTUM, axis_name=self.axis_name)

        def conv(features: int, kernel: int, padding: str, name: str) -> nn.Conv:
            return nn.Conv(
                features,
                (kernel, kernel),
                padding=padding,
                use_bias=False,
                dtype=self.dtype,
                name=name,
            )

        x = conv(self.stem_width, self.stem_kernel, "VALID", "stem")(x)
        x = nn.gelu(norm(name="stem_bn")(x))
        for i, width in enumerate(self.widths):
            x = conv(width, 3, "SAME", f"block{i}_conv0")(x)
            x = max_pool_2x2(x)
            x = nn.gelu(norm(name=f"block{i}_bn0")(x))
            x = conv(width, 3, "SAME", f"block{i}_conv1")(x)
            x = nn.gelu(norm(name=f"block{i}_bn1")(x))
        x = x.max(axis=(1, 2))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = nn.Dense(self.num_classes, use_bias=False, dtype=self.dtype, name="head")(x)
        return x.astype(jnp.float32) * self.head_scale
