"""Small pieces shared by the model families."""

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

ModuleDef = Callable[..., nn.Module]

# torch's BatchNorm momentum 0.1 weighs the new batch; flax's momentum weighs the old value.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

# torchvision's kaiming_normal_(mode='fan_out') for convolutions followed by BatchNorm and ReLU.
he_normal = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
lecun_normal = nn.initializers.lecun_normal()


def batch_norm(train: bool, dtype: Any, **overrides: Any) -> ModuleDef:
    """BatchNorm as torchvision sets it up: running averages in eval, updated in train."""
    kwargs = dict(
        use_running_average=not train,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        dtype=dtype,
        # E[(x - mean)^2] rather than E[x^2] - mean^2: no cancellation when |mean| >> std,
        # so results do not hinge on the summation order (one device vs many).
        use_fast_variance=False,
    )
    return functools.partial(nn.BatchNorm, **(kwargs | overrides))


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2/2 max pool over NHWC, equal to `nn.max_pool(x, (2, 2), (2, 2), padding='VALID')`.

    A reshape and max, because on XLA:CPU the gradient of reduce_window (select-and-scatter) is
    about 3x slower. An odd last row or column is dropped, as VALID padding does.
    """
    n, h, w, c = x.shape
    # lax slices stay static slices under a symbolic batch size (indexing lowers to a gather,
    # which the TFLite converter rejects)
    x = jax.lax.slice_in_dim(x, 0, h - h % 2, axis=1)
    x = jax.lax.slice_in_dim(x, 0, w - w % 2, axis=2)
    x = x.reshape(n, h // 2, 2, w // 2, 2, c)
    return x.max(axis=(2, 4))


# Pools as flax's nn.max_pool / nn.avg_pool compute them, in the form jax2onnx exports: it
# replaces those two functions while it traces with versions that take keyword arguments and
# 'SAME'/'VALID' padding only (and its lax.reduce_window lowering gives ONNX Runtime a 4-D
# kernel it rejects), so explicit padding is a pad op in front of a 'VALID' pool.
Padding = str | tuple[tuple[int, int], tuple[int, int]]


def _pad(x: jax.Array, padding: Padding, value: float) -> tuple[jax.Array, str]:
    if isinstance(padding, str):
        return x, padding
    return jnp.pad(x, ((0, 0), *padding, (0, 0)), constant_values=value), "VALID"


def max_pool(x: jax.Array, window: int, strides: int, padding: Padding) -> jax.Array:
    """`nn.max_pool(x, (window, window), (strides, strides), padding)` over NHWC, exactly."""
    x, padding = _pad(x, padding, -jnp.inf)  # max pools pad with -inf
    return nn.max_pool(
        x, window_shape=(window, window), strides=(strides, strides), padding=padding
    )


def max_pool_slices(x: jax.Array, window: int, strides: int, padding: Padding) -> jax.Array:
    """`max_pool` as the elementwise max of `window**2` strided slices of the padded input.

    The same outputs. The gradient differs only where a window holds its maximum more than
    once: reduce_window's gradient (select-and-scatter, a scatter on XLA:GPU) gives it all to
    one element, `jnp.maximum` splits it between the tied ones (the total is kept). In exchange
    the backward pass is compares, selects and pads, elementwise work that XLA can fuse.
    """
    if isinstance(padding, str) and padding != "VALID":
        raise ValueError(f"max_pool_slices takes 'VALID' or explicit padding, not {padding!r}")
    x, _ = _pad(x, padding, -jnp.inf)
    n, h, w, c = x.shape
    last_h = strides * ((h - window) // strides)  # start of the last window
    last_w = strides * ((w - window) // strides)
    # lax slices, not indexing: they stay static slices under a symbolic batch size (export)
    slices = (
        jax.lax.slice(
            x, (0, i, j, 0), (n, i + last_h + 1, j + last_w + 1, c), (1, strides, strides, 1)
        )
        for i in range(window)
        for j in range(window)
    )
    return functools.reduce(jnp.maximum, slices)


def avg_pool(x: jax.Array, window: int, strides: int, padding: Padding) -> jax.Array:
    """`nn.avg_pool(..., count_include_pad=True)` over NHWC: the zero padding counts."""
    x, padding = _pad(x, padding, 0.0)
    return nn.avg_pool(
        x, window_shape=(window, window), strides=(strides, strides), padding=padding
    )


def global_avg_pool(x: jax.Array) -> jax.Array:
    """Mean over the spatial axes of NHWC."""
    return x.mean(axis=(1, 2))


def classify(
    x: jax.Array,
    *,
    num_classes: int,
    dropout_rate: float,
    train: bool,
    dtype: Any,
    kernel_init: nn.initializers.Initializer = lecun_normal,
) -> jax.Array:
    """Dropout, then the classifier Dense named `head`; logits are float32 in any compute dtype.

    Call it inside a compact `__call__`: the modules made here belong to the calling model.
    """
    x = nn.Dropout(dropout_rate, deterministic=not train)(x)
    x = nn.Dense(num_classes, dtype=dtype, kernel_init=kernel_init, name="head")(x)
    return x.astype(jnp.float32)
