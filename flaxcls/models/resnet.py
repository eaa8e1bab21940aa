"""ResNet v1.5 (torchvision layout) and the CIFAR ResNets, from one parametrised module.

Module names follow torchvision's so that its state_dicts map one to one:
`stem_conv`/`stem_bn` = conv1/bn1, `stage{i}_block{j}` = layer{i}.{j}, inside a block
`conv{k}`/`bn{k}` = conv{k}/bn{k} and `proj_conv`/`proj_bn` = downsample.0/.1, `head` = fc.

Three options change how the network is computed, not its parameters (`RESNET50_VARIANTS`
names their combinations for benchmarks/resnet50_vs_pytorch.py; all default to off):
`stem_pool_impl="slices"` (the max pool as 9 strided slices: the same outputs, the same
gradients but on exact ties), `stem_input_channels=4|8` (the images' channels and the stem
kernel's zero-padded for the convolution: the same function, the same gradients) and
`bn_fast_variance=True` (BatchNorm's variance as E[x^2] - E[x]^2, one pass over x: the same
function up to float rounding).
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
    max_pool_slices,
)

# 'projection': 1x1 conv + BN when the shape changes (torchvision).
# 'zero_pad': parameter-free subsample and zero-padded channels (He et al. 2016, CIFAR option A).
Shortcut = Literal["projection", "zero_pad"]
# 'reduce_window': lax.reduce_window (gradient: select-and-scatter); 'slices': max_pool_slices.
PoolImpl = Literal["reduce_window", "slices"]


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


def _zero_pad_axis(x: jax.Array, axis: int, size: int) -> jax.Array:
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, widths)


def channel_padded_conv(
    channels: int, in_channels: int, kernel_init: nn.initializers.Initializer
) -> ModuleDef:
    """nn.Conv for inputs zero-padded from `in_channels` to `channels` channels, whose kernel is
    stored unpadded: its parameters, and their initial values, are those of the plain conv.

    The kernel's padded input channels are zeros that meet zero inputs, so the function and the
    gradients are the plain conv's; only the convolution XLA runs is wider (3 input channels
    suit no tensor-core layout; 4 or 8 may).
    """

    def pad(variables):
        return jax.tree.map(lambda k: _zero_pad_axis(k, -2, channels), variables)

    def unpad(variables):
        return jax.tree.map(lambda k: k[..., :in_channels, :], variables)

    def init(key, shape, dtype=jnp.float32):
        # drawn at the unpadded shape, as the plain conv draws it
        return _zero_pad_axis(
            kernel_init(key, (*shape[:-2], in_channels, shape[-1]), dtype), -2, channels
        )

    # mutable, not init=True: with init=True flax re-runs the initialiser on the stored (unpadded)
    # kernel whenever any collection is mutable, as batch_stats are in training
    padded = nn.map_variables(nn.Conv, "params", trans_in_fn=pad, trans_out_fn=unpad, mutable=True)
    return functools.partial(padded, kernel_init=init)


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
    stem_pool_impl: PoolImpl = "reduce_window"
    stem_input_channels: int = 0  # >3: zero-pad the images' channels for the stem conv
    bn_fast_variance: bool = False  # one-pass BatchNorm statistics (see layers.batch_norm)
    shortcut: Shortcut = "projection"
    zero_init_last_bn: bool = False
    dtype: Any = jnp.float32
    dropout_rate: float = 0.0
    axis_name: str | None = None  # pmap/shard_map axis for global BatchNorm statistics

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype, kernel_init=he_normal)
        norm = batch_norm(
            train,
            self.dtype,
            axis_name=self.axis_name,
            use_fast_variance=self.bn_fast_variance,
        )
        stem_conv = conv
        if self.stem_input_channels > x.shape[-1]:
            padded = channel_padded_conv(self.stem_input_channels, x.shape[-1], he_normal)
            stem_conv = functools.partial(padded, use_bias=False, dtype=self.dtype)
            x = _zero_pad_axis(x, -1, self.stem_input_channels)
        k = self.stem_kernel
        x = stem_conv(
            self.num_filters, (k, k), self.stem_strides, padding=k // 2, name="stem_conv"
        )(x)
        x = nn.relu(norm(name="stem_bn")(x))
        if self.stem_pool:
            pool = max_pool_slices if self.stem_pool_impl == "slices" else max_pool
            x = pool(x, 3, 2, padding=((1, 1), (1, 1)))
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

# Constructor options of the ImageNet ResNets, by name, for benchmarks/resnet50_vs_pytorch.py
# (`--variant`); each computes today's function from today's parameters (see the module doc).
RESNET50_VARIANTS: dict[str, dict[str, Any]] = {
    "today": {},
    "pool_slices": {"stem_pool_impl": "slices"},
    "stem_c4": {"stem_input_channels": 4},
    "stem_c8": {"stem_input_channels": 8},
    "bn_fast_variance": {"bn_fast_variance": True},
    "best": {"stem_pool_impl": "slices", "stem_input_channels": 8, "bn_fast_variance": True},
}
