"""ResNet v1.5 (torchvision layout) and the CIFAR ResNets, from one parametrised module.

Module names follow torchvision's so that its state_dicts map one to one:
`stem_conv`/`stem_bn` = conv1/bn1, `stage{i}_block{j}` = layer{i}.{j}, inside a block
`conv{k}`/`bn{k}` = conv{k}/bn{k} and `proj_conv`/`proj_bn` = downsample.0/.1, `head` = fc.
"""

import functools
from typing import Any, ClassVar, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from flaxcls.models.layers import (
    ModuleDef,
    batch_norm,
    classify,
    global_avg_pool,
    he_normal,
    max_pool,
)

# 'projection': 1x1 conv + BN when the shape changes (torchvision).
# 'zero_pad': parameter-free subsample and zero-padded channels (He et al. 2016, CIFAR option A).
Shortcut = Literal["projection", "zero_pad"]


def shortcut_branch(
    x: jax.Array, features: int, strides: int, kind: Shortcut, conv: ModuleDef, norm: ModuleDef
) -> jax.Array:
    """Identity when the shape is kept, otherwise a projection or option-A zero padding."""
    if strides == 1 and x.shape[-1] == features:
        return x
    if kind == "projection":
        x = conv(features, (1, 1), strides, padding=0, name="proj_conv")(x)
        return norm(name="proj_bn")(x)
    # a strided lax slice, not indexing: it stays a slice under a symbolic batch (export)
    x = jax.lax.slice(x, (0, 0, 0, 0), x.shape, (1, strides, strides, 1))
    extra = features - x.shape[-1]
    return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))


def _last_scale_init(zero: bool) -> nn.initializers.Initializer:
    # A zero last BN scale starts each residual branch at zero, so every block begins as identity.
    return nn.initializers.zeros if zero else nn.initializers.ones


class BasicBlock(nn.Module):
    """Two 3x3 convs; the first carries the stride."""

    features: int
    conv: ModuleDef
    norm: ModuleDef
    strides: int = 1
    shortcut: Shortcut = "projection"
    zero_init_last_bn: bool = False

    expansion: ClassVar[int] = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.conv(self.features, (3, 3), self.strides, padding=1, name="conv1")(x)
        y = nn.relu(self.norm(name="bn1")(y))
        y = self.conv(self.features, (3, 3), padding=1, name="conv2")(y)
        y = self.norm(name="bn2", scale_init=_last_scale_init(self.zero_init_last_bn))(y)
        residual = shortcut_branch(
            x, self.features, self.strides, self.shortcut, self.conv, self.norm
        )
        return nn.relu(residual + y)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4); v1.5: the stride is on the 3x3 conv."""

    features: int
    conv: ModuleDef
    norm: ModuleDef
    strides: int = 1
    shortcut: Shortcut = "projection"
    zero_init_last_bn: bool = False

    expansion: ClassVar[int] = 4

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        out_features = self.features * self.expansion
        y = self.conv(self.features, (1, 1), padding=0, name="conv1")(x)
        y = nn.relu(self.norm(name="bn1")(y))
        y = self.conv(self.features, (3, 3), self.strides, padding=1, name="conv2")(y)
        y = nn.relu(self.norm(name="bn2")(y))
        y = self.conv(out_features, (1, 1), padding=0, name="conv3")(y)
        y = self.norm(name="bn3", scale_init=_last_scale_init(self.zero_init_last_bn))(y)
        residual = shortcut_branch(
            x, out_features, self.strides, self.shortcut, self.conv, self.norm
        )
        return nn.relu(residual + y)


class ResNet(nn.Module):
    """ResNet with a configurable stem; stage i has `num_filters * 2**i` filters, stride 2 if i > 0.

    Padding is explicit (torchvision's k//2 on every side) rather than 'SAME', which pads stride-2
    convs more at the bottom/right and would shift feature maps against torchvision weights.
    """

    stage_sizes: tuple[int, ...]
    block_cls: type[BasicBlock] | type[Bottleneck]
    num_classes: int
    num_filters: int = 64
    stem_kernel: int = 7
    stem_strides: int = 2
    stem_pool: bool = True
    shortcut: Shortcut = "projection"
    zero_init_last_bn: bool = False
    dtype: Any = jnp.float32
    dropout_rate: float = 0.0
    axis_name: str | None = None  # pmap/shard_map axis for global BatchNorm statistics

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype, kernel_init=he_normal)
        norm = batch_norm(train, self.dtype, axis_name=self.axis_name)
        k = self.stem_kernel
        x = conv(self.num_filters, (k, k), self.stem_strides, padding=k // 2, name="stem_conv")(x)
        x = nn.relu(norm(name="stem_bn")(x))
        if self.stem_pool:
            x = max_pool(x, 3, 2, padding=((1, 1), (1, 1)))
        for i, num_blocks in enumerate(self.stage_sizes):
            for j in range(num_blocks):
                x = self.block_cls(
                    features=self.num_filters * 2**i,
                    conv=conv,
                    norm=norm,
                    strides=2 if i > 0 and j == 0 else 1,
                    shortcut=self.shortcut,
                    zero_init_last_bn=self.zero_init_last_bn,
                    name=f"stage{i + 1}_block{j}",
                )(x)
        return classify(
            global_avg_pool(x),
            num_classes=self.num_classes,
            dropout_rate=self.dropout_rate,
            train=train,
            dtype=self.dtype,
        )


# ImageNet ResNets (torchvision v1.5): 7x7/2 stem and 3x3/2 max pool.
ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock)
ResNet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BasicBlock)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=Bottleneck)
ResNet101 = functools.partial(ResNet, stage_sizes=(3, 4, 23, 3), block_cls=Bottleneck)
ResNet152 = functools.partial(ResNet, stage_sizes=(3, 8, 36, 3), block_cls=Bottleneck)

# CIFAR stems: one 3x3/1 conv, no max pool.
_cifar = functools.partial(
    ResNet, block_cls=BasicBlock, stem_kernel=3, stem_strides=1, stem_pool=False
)
# He et al. 2016, section 4.2: 6n+2 layers, 16/32/64 filters, option-A shortcuts.
_he_cifar = functools.partial(_cifar, num_filters=16, shortcut="zero_pad")
CifarResNet20 = functools.partial(_he_cifar, stage_sizes=(3, 3, 3))
CifarResNet56 = functools.partial(_he_cifar, stage_sizes=(9, 9, 9))
# The common "ResNet-18 for CIFAR": ResNet-18's stages behind a 3x3/1 stem.
CifarResNet18 = functools.partial(_cifar, stage_sizes=(2, 2, 2, 2))
