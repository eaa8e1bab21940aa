"""Wide ResNets (Zagoruyko & Komodakis 2016) for 32x32 inputs, pre-activation basic blocks.

Follows the widely used PyTorch implementation: bias-free convs, dropout between the two convs of a
block, and a 1x1 projection shortcut fed with the block's pre-activated input. WRN-28-10 has
36,479,194 parameters with 10 classes (the paper's 36.5M), WRN-16-8 10,961,370 (11.0M).
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from flaxcls.models.layers import ModuleDef, batch_norm, classify, global_avg_pool, he_normal


class WideBasicBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-dropout-conv3x3, plus the shortcut."""

    features: int
    conv: ModuleDef
    norm: ModuleDef
    dropout: ModuleDef
    strides: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        activated = nn.relu(self.norm(name="bn1")(x))
        if self.strides == 1 and x.shape[-1] == self.features:
            residual = x
        else:
            residual = self.conv(self.features, (1, 1), self.strides, padding=0, name="proj_conv")(
                activated
            )
        y = self.conv(self.features, (3, 3), self.strides, padding=1, name="conv1")(activated)
        y = nn.relu(self.norm(name="bn2")(y))
        y = self.dropout()(y)
        y = self.conv(self.features, (3, 3), padding=1, name="conv2")(y)
        return residual + y


class WideResNet(nn.Module):
    """WRN-depth-k: a 3x3 conv 16 stem, three stages of (depth-4)/6 blocks, widths 16k/32k/64k.

    `dropout_rate` is applied inside the blocks (the WRN convention), not before the classifier.
    """

    depth: int
    widen_factor: int
    num_classes: int
    dtype: Any = jnp.float32
    dropout_rate: float = 0.0
    axis_name: str | None = None  # pmap/shard_map axis for global BatchNorm statistics

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        if (self.depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4, got {self.depth}")
        blocks_per_stage = (self.depth - 4) // 6
        conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype, kernel_init=he_normal)
        norm = batch_norm(train, self.dtype, axis_name=self.axis_name)
        dropout = functools.partial(nn.Dropout, self.dropout_rate, deterministic=not train)
        x = conv(16, (3, 3), padding=1, name="stem_conv")(x)
        for i in range(3):
            for j in range(blocks_per_stage):
                x = WideBasicBlock(
                    features=16 * self.widen_factor * 2**i,
                    conv=conv,
                    norm=norm,
                    dropout=dropout,
                    strides=2 if i > 0 and j == 0 else 1,
                    name=f"stage{i + 1}_block{j}",
                )(x)
        x = nn.relu(norm(name="final_bn")(x))
        return classify(
            global_avg_pool(x),
            num_classes=self.num_classes,
            dropout_rate=0.0,
            train=train,
            dtype=self.dtype,
        )


WideResNet28_10 = functools.partial(WideResNet, depth=28, widen_factor=10)
# 11.0M parameters: widths 128/256/512, multiples of 64 that suit tensor cores, at 30% of
# WRN-28-10's training FLOPs per image.
WideResNet16_8 = functools.partial(WideResNet, depth=16, widen_factor=8)
