"""The airbench94 network (Keller Jordan's CIFAR-10 speedrun), layer for layer.

A 2x2 patch-whitening convolution with a bias (its kernel set from the training images by
`flaxcls.models.whitening`, and never trained) and GELU; three conv groups of conv -> 2x2 max
pool -> BatchNorm -> GELU -> conv -> BatchNorm -> GELU (64, 256, 256 filters); a global max
pool, a linear head without bias and a fixed 1/9 scale on the logits.

What makes it that network rather than a look-alike (`fast_cnn`):
- BatchNorm without a learned scale (airbench fixes its weight at 1), epsilon 1e-12 and
  running averages that keep 0.6 of the old value (torch momentum 0.4);
- exact (erf) GELU, as torch's `nn.GELU()`;
- each 3x3 convolution starts as the identity on its first `in_channels` filters (torch's
  `dirac_` over the default uniform initialisation), so a fresh group passes its input on;
- module names mirror airbench's (`stem`, `group{i}_conv{1,2}`, `group{i}_norm{1,2}`, `head`),
  and every BatchNorm's name holds "norm": the optimiser picks their biases out by that name
  (`flaxcls.core.optim.norm_bias_labels`) for the raised learning rate.

The final pool is a max over the whole feature map; airbench's `MaxPool2d(3)` is the same on
the 3x3 maps that 32x32 and 28x28 inputs reach.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from flaxcls.models.layers import max_pool_2x2

BN_MOMENTUM = 0.6  # flax weighs the old value: airbench's BatchNorm(momentum=1 - 0.6)
BN_EPSILON = 1e-12


def torch_uniform(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
    """torch's default for Conv2d and Linear weights: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), with
    fan_in every axis but the last (HWIO kernels, (in, out) dense kernels)."""
    bound = 1.0 / math.prod(shape[:-1]) ** 0.5
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def dirac_uniform(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
    """`torch_uniform`, then filter i < in_channels set to pass input channel i through
    unchanged (a 1 at the kernel's centre), as airbench's `Conv.reset_parameters`."""
    kh, kw, c_in, c_out = shape
    kernel = torch_uniform(key, shape, dtype)
    n = min(c_in, c_out)
    identity = jnp.zeros((kh, kw, c_in, n), dtype).at[kh // 2, kw // 2, :n, :n].set(jnp.eye(n))
    return kernel.at[..., :n].set(identity)


class SpeedrunCNN(nn.Module):
    num_classes: int
    widths: Sequence[int] = (64, 256, 256)
    whiten_kernel: int = 2
    head_scale: float = 1 / 9
    dtype: Any = jnp.float32
    dropout_rate: float = 0.0
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        k = self.whiten_kernel

        def conv(features: int, name: str) -> nn.Conv:
            return nn.Conv(
                features,
                (3, 3),
                padding="SAME",
                use_bias=False,
                dtype=self.dtype,
                kernel_init=dirac_uniform,
                name=name,
            )

        def norm(name: str) -> nn.BatchNorm:
            return nn.BatchNorm(
                use_running_average=not train,
                momentum=BN_MOMENTUM,
                epsilon=BN_EPSILON,
                use_scale=False,
                dtype=self.dtype,
                use_fast_variance=False,
                axis_name=self.axis_name,
                name=name,
            )

        def gelu(y: jax.Array) -> jax.Array:
            return nn.gelu(y, approximate=False)

        # Its kernel is replaced by patch whitening before training (`model.whiten_stem`).
        x = nn.Conv(
            2 * k * k * x.shape[-1],
            (k, k),
            padding="VALID",
            dtype=self.dtype,
            kernel_init=torch_uniform,
            name="stem",
        )(x)
        x = gelu(x)
        for i, width in enumerate(self.widths, start=1):
            x = conv(width, f"group{i}_conv1")(x)
            x = max_pool_2x2(x)
            x = gelu(norm(f"group{i}_norm1")(x))
            x = conv(width, f"group{i}_conv2")(x)
            x = gelu(norm(f"group{i}_norm2")(x))
        x = x.max(axis=(1, 2))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = nn.Dense(
            self.num_classes,
            use_bias=False,
            dtype=self.dtype,
            kernel_init=torch_uniform,
            name="head",
        )(x)
        return x.astype(jnp.float32) * self.head_scale
