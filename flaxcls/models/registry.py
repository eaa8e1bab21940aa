"""Model names -> constructors; `get_model` builds one with the library-wide arguments."""

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from flaxcls.errors import ConfigError
from flaxcls.models import cnn, fast_cnn, inception, mlp, resnet, speedrun, vit, wide_resnet

# Every constructor takes num_classes, dtype (compute dtype; parameters stay float32) and
# dropout_rate, and its module is called as `model(images, train=...)` on float32 NHWC images.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp.MLP,  # one hidden layer of 128
    "seed_cnn": cnn.SeedCNN,
    "fast_cnn": fast_cnn.FastCNN,  # airbench94 widths, for 32x32 inputs
    "fast_cnn_small": functools.partial(  # narrower, for 28x28 images on CPUs
        fast_cnn.FastCNN, widths=(32, 64, 128), stem_width=16, stem_kernel=3
    ),
    "speedrun_cnn": speedrun.SpeedrunCNN,  # airbench94's network, layer for layer
    "resnet18": resnet.ResNet18,
    "resnet34": resnet.ResNet34,
    "resnet50": resnet.ResNet50,
    "resnet101": resnet.ResNet101,
    "resnet152": resnet.ResNet152,
    "cifar_resnet20": resnet.CifarResNet20,
    "cifar_resnet56": resnet.CifarResNet56,
    "cifar_resnet18": resnet.CifarResNet18,
    "wide_resnet28_10": wide_resnet.WideResNet28_10,
    "wide_resnet16_8": wide_resnet.WideResNet16_8,
    "inception_v3": inception.InceptionV3,
    "inception_small": inception.InceptionSmall,
    "vit_ti16": vit.ViT_Ti16,  # DeiT-Ti, 224 px
    "vit_s16": vit.ViT_S16,  # DeiT-S
    "vit_b16": vit.ViT_B16,  # DeiT-B / ViT-B/16
    "vit_cifar": vit.ViT_Cifar,  # patch 4, for 32x32 images
}


def get_model(
    name: str,
    *,
    num_classes: int,
    dtype: Any = jnp.float32,
    dropout_rate: float = 0.0,
    axis_name: str | None = None,
) -> nn.Module:
    """The model registered as `name`; an unknown name is a ValueError listing the valid names.

    `axis_name` is only for `jax.pmap` / `shard_map` users: BatchNorm then averages its batch
    statistics over that mapped axis. Under `jax.jit` the statistics are global without it.
    """
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}")
    return MODELS[name](
        num_classes=num_classes, dtype=dtype, dropout_rate=dropout_rate, axis_name=axis_name
    )
