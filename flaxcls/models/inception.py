"""Inception-v3 (torchvision layout, no auxiliary head) and the small Inception for 32x32 images.

Inception-v3 module names are torchvision's (`Conv2d_1a_3x3`, `Mixed_5b.branch1x1.conv`, ...), with
`head` for fc, so its state_dicts map one to one. torchvision's pretrained weights also expect
`transform_input` (a per-channel rescale of the ImageNet-normalised input); that belongs to the
input pipeline, not here.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from flaxcls.models.layers import (
    ModuleDef,
    avg_pool,
    batch_norm,
    classify,
    global_avg_pool,
    he_normal,
    max_pool,
)

Padding = str | int | tuple[int, int]


class ConvBN(nn.Module):
    """Conv without bias, BatchNorm, ReLU: torchvision's BasicConv2d, Zhang et al.'s conv module."""

    features: int
    kernel_size: tuple[int, int]
    norm: ModuleDef
    strides: int = 1
    padding: Padding = 0  # an int or (height, width) pads both sides, as torch's Conv2d does
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        padding = self.padding
        if not isinstance(padding, str):
            ph, pw = (padding, padding) if isinstance(padding, int) else padding
            padding = ((ph, ph), (pw, pw))
        x = nn.Conv(
            self.features,
            self.kernel_size,
            self.strides,
            padding=padding,
            use_bias=False,
            dtype=self.dtype,
            kernel_init=he_normal,
            name="conv",
        )(x)
        return nn.relu(self.norm(name="bn")(x))


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
    # torch's AvgPool2d(3, stride=1, padding=1) counts the zero padding in the mean.
    return avg_pool(x, 3, 1, padding=((1, 1), (1, 1)))


def _max_pool_3x3_2(x: jax.Array) -> jax.Array:
    return max_pool(x, 3, 2, padding="VALID")


class InceptionA(nn.Module):
    """Mixed_5b-d: 1x1, 5x5, double 3x3 and pooled branches at 35x35."""

    pool_features: int
    conv: ModuleDef

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.conv
        b1 = c(64, (1, 1), name="branch1x1")(x)
        b5 = c(48, (1, 1), name="branch5x5_1")(x)
        b5 = c(64, (5, 5), padding=2, name="branch5x5_2")(b5)
        b3 = c(64, (1, 1), name="branch3x3dbl_1")(x)
        b3 = c(96, (3, 3), padding=1, name="branch3x3dbl_2")(b3)
        b3 = c(96, (3, 3), padding=1, name="branch3x3dbl_3")(b3)
        bp = c(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """Mixed_6a: grid reduction 35 -> 17."""

    conv: ModuleDef

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.conv
        b3 = c(384, (3, 3), strides=2, name="branch3x3")(x)
        bd = c(64, (1, 1), name="branch3x3dbl_1")(x)
        bd = c(96, (3, 3), padding=1, name="branch3x3dbl_2")(bd)
        bd = c(96, (3, 3), strides=2, name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool_3x3_2(x)], axis=-1)


class InceptionC(nn.Module):
    """Mixed_6b-e: factorised 7x7 branches at 17x17."""

    channels_7x7: int
    conv: ModuleDef

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c, c7 = self.conv, self.channels_7x7
        b1 = c(192, (1, 1), name="branch1x1")(x)
        b7 = c(c7, (1, 1), name="branch7x7_1")(x)
        b7 = c(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
        b7 = c(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
        bd = c(c7, (1, 1), name="branch7x7dbl_1")(x)
        bd = c(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
        bd = c(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
        bd = c(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
        bd = c(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
        bp = c(192, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """Mixed_7a: grid reduction 17 -> 8."""

    conv: ModuleDef

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.conv
        b3 = c(192, (1, 1), name="branch3x3_1")(x)
        b3 = c(320, (3, 3), strides=2, name="branch3x3_2")(b3)
        b7 = c(192, (1, 1), name="branch7x7x3_1")(x)
        b7 = c(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = c(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = c(192, (3, 3), strides=2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool_3x3_2(x)], axis=-1)


class InceptionE(nn.Module):
    """Mixed_7b-c: expanded 1x3/3x1 branches at 8x8."""

    conv: ModuleDef

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.conv
        b1 = c(320, (1, 1), name="branch1x1")(x)
        b3 = c(384, (1, 1), name="branch3x3_1")(x)
        b3 = jnp.concatenate(
            [
                c(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                c(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3),
            ],
            axis=-1,
        )
        bd = c(448, (1, 1), name="branch3x3dbl_1")(x)
        bd = c(384, (3, 3), padding=1, name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate(
            [
                c(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                c(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd),
            ],
            axis=-1,
        )
        bp = c(192, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
    """Inception-v3 for 299x299 inputs (at least 75x75); 23,834,568 parameters with 1000 classes."""

    num_classes: int
    dtype: Any = jnp.float32
    dropout_rate: float = 0.0
    axis_name: str | None = None  # pmap/shard_map axis for global BatchNorm statistics

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        # torchvision's BasicConv2d uses BatchNorm eps 1e-3.
        conv = functools.partial(
            ConvBN,
            norm=batch_norm(train, self.dtype, epsilon=1e-3, axis_name=self.axis_name),
            dtype=self.dtype,
        )
        x = conv(32, (3, 3), strides=2, name="Conv2d_1a_3x3")(x)
        x = conv(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = conv(64, (3, 3), padding=1, name="Conv2d_2b_3x3")(x)
        x = _max_pool_3x3_2(x)
        x = conv(80, (1, 1), name="Conv2d_3b_1x1")(x)
        x = conv(192, (3, 3), name="Conv2d_4a_3x3")(x)
        x = _max_pool_3x3_2(x)
        x = InceptionA(32, conv, name="Mixed_5b")(x)
        x = InceptionA(64, conv, name="Mixed_5c")(x)
        x = InceptionA(64, conv, name="Mixed_5d")(x)
        x = InceptionB(conv, name="Mixed_6a")(x)
        x = InceptionC(128, conv, name="Mixed_6b")(x)
        x = InceptionC(160, conv, name="Mixed_6c")(x)
        x = InceptionC(160, conv, name="Mixed_6d")(x)
        x = InceptionC(192, conv, name="Mixed_6e")(x)
        x = InceptionD(conv, name="Mixed_7a")(x)
        x = InceptionE(conv, name="Mixed_7b")(x)
        x = InceptionE(conv, name="Mixed_7c")(x)
        return classify(
            global_avg_pool(x),
            num_classes=self.num_classes,
            dropout_rate=self.dropout_rate,
            train=train,
            dtype=self.dtype,
        )


class SmallInception(nn.Module):
    """Zhang et al.'s inception module: a 1x1 branch and a 3x3 branch, concatenated."""

    ch1: int
    ch3: int
    conv: ModuleDef

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b1 = self.conv(self.ch1, (1, 1), name="branch1x1")(x)
        b3 = self.conv(self.ch3, (3, 3), name="branch3x3")(x)
        return jnp.concatenate([b1, b3], axis=-1)


class SmallDownsample(nn.Module):
    """Zhang et al.'s downsample module: a 3x3/2 conv branch and a 3x3/2 max-pool branch."""

    ch3: int
    conv: ModuleDef

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b3 = self.conv(self.ch3, (3, 3), strides=2, name="branch3x3")(x)
        pool = max_pool(x, 3, 2, padding="SAME")
        return jnp.concatenate([b3, pool], axis=-1)


class InceptionSmall(nn.Module):
    """The small Inception of Zhang et al. 2017 ("rethinking generalization", appendix) for 32x32.

    Its reference TensorFlow model pads 'SAME' and its BatchNorm learns an offset but no scale;
    both are kept, which gives the paper's 1,649,402 parameters with 10 classes.
    """

    num_classes: int
    dtype: Any = jnp.float32
    dropout_rate: float = 0.0
    axis_name: str | None = None  # pmap/shard_map axis for global BatchNorm statistics

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        norm = batch_norm(train, self.dtype, use_scale=False, axis_name=self.axis_name)
        conv = functools.partial(ConvBN, norm=norm, padding="SAME", dtype=self.dtype)
        x = conv(96, (3, 3), name="stem_conv")(x)
        x = SmallInception(32, 32, conv, name="inception1")(x)
        x = SmallInception(32, 48, conv, name="inception2")(x)
        x = SmallDownsample(80, conv, name="downsample1")(x)
        x = SmallInception(112, 48, conv, name="inception3")(x)
        x = SmallInception(96, 64, conv, name="inception4")(x)
        x = SmallInception(80, 80, conv, name="inception5")(x)
        x = SmallInception(48, 96, conv, name="inception6")(x)
        x = SmallDownsample(96, conv, name="downsample2")(x)
        x = SmallInception(176, 160, conv, name="inception7")(x)
        x = SmallInception(176, 160, conv, name="inception8")(x)
        return classify(
            global_avg_pool(x),
            num_classes=self.num_classes,
            dropout_rate=self.dropout_rate,
            train=train,
            dtype=self.dtype,
        )
