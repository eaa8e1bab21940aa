"""Vision Transformer (Dosovitskiy et al. 2021) as DeiT trains it (Touvron et al. 2021).

Patches embedded by a strided convolution, a class token, learned position embeddings,
pre-norm blocks (LayerNorm eps 1e-6, multi-head self-attention, GELU MLP) and a final
LayerNorm; the classifier reads the class token. Module names follow timm's so that its
`state_dict`s map one to one (flaxcls/models/foreign.py): `patch_embed` = patch_embed.proj,
`blocks_{i}` = blocks.{i} with `norm1`, `attn/qkv`, `attn/proj`, `norm2`, `mlp/fc1`, `mlp/fc2`
inside, then `norm` and `head`.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from flaxcls.models.layers import classify

LN_EPSILON = 1e-6
# big_vision's ViT initialisation: xavier-uniform kernels, near-zero biases.
_dense = functools.partial(
    nn.Dense,
    kernel_init=nn.initializers.xavier_uniform(),
    bias_init=nn.initializers.normal(stddev=1e-6),
)


class Attention(nn.Module):
    """Multi-head self-attention with one fused q/k/v projection (timm's `qkv`)."""

    num_heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        batch, tokens, width = x.shape
        head_dim = width // self.num_heads
        qkv = _dense(3 * width, dtype=self.dtype, name="qkv")(x)

        def heads(i: int) -> jax.Array:
            # a static lax slice, not indexing, which stays a slice under a symbolic batch (export)
            part = jax.lax.slice_in_dim(qkv, i * width, (i + 1) * width, axis=-1)
            return part.reshape(batch, tokens, self.num_heads, head_dim)

        q, k, v = heads(0), heads(1), heads(2)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) * head_dim**-0.5
        # softmax in float32: bfloat16 scores lose the small attention weights
        weights = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(self.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(batch, tokens, width)
        return _dense(width, dtype=self.dtype, name="proj")(out)


class Mlp(nn.Module):
    hidden: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        width = x.shape[-1]
        x = _dense(self.hidden, dtype=self.dtype, name="fc1")(x)
        x = nn.gelu(x, approximate=False)  # the exact GELU of timm and torchvision
        return _dense(width, dtype=self.dtype, name="fc2")(x)


def drop_path(x: jax.Array, rate: float, train: bool, module: nn.Module) -> jax.Array:
    """Stochastic depth: each example's residual branch is dropped with probability `rate`."""
    if not train or rate == 0.0:
        return x
    keep = jax.random.bernoulli(module.make_rng("dropout"), 1.0 - rate, (x.shape[0], 1, 1))
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    num_heads: int
    mlp_dim: int
    drop_path_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        norm = functools.partial(nn.LayerNorm, epsilon=LN_EPSILON, dtype=self.dtype)
        y = Attention(num_heads=self.num_heads, dtype=self.dtype, name="attn")(
            norm(name="norm1")(x)
        )
        x = x + drop_path(y, self.drop_path_rate, train, self)
        y = Mlp(hidden=self.mlp_dim, dtype=self.dtype, name="mlp")(norm(name="norm2")(x))
        return x + drop_path(y, self.drop_path_rate, train, self)


class ViT(nn.Module):
    """ViT with a class token; the number of position embeddings follows the image size at init
    (images of (H, W) give (H // patch) * (W // patch) patches)."""

    num_classes: int
    patch_size: int = 16
    width: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.0  # the last block's rate; earlier blocks' grow linearly to it
    dtype: Any = jnp.float32
    dropout_rate: float = 0.0  # before the classifier
    axis_name: str | None = None  # accepted for a uniform interface; no BatchNorm here

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        p = self.patch_size
        x = nn.Conv(
            self.width, (p, p), strides=p, padding="VALID", dtype=self.dtype, name="patch_embed"
        )(x)
        batch = x.shape[0]
        x = x.reshape(batch, -1, self.width)
        cls = self.param("cls_token", nn.initializers.zeros, (1, 1, self.width))
        cls = jnp.broadcast_to(cls.astype(x.dtype), (batch, 1, self.width))
        x = jnp.concatenate([cls, x], axis=1)
        pos = self.param(
            "pos_embed", nn.initializers.normal(stddev=0.02), (1, x.shape[1], self.width)
        )
        x = x + pos.astype(x.dtype)
        for i in range(self.depth):
            rate = self.drop_path_rate * i / max(self.depth - 1, 1)
            x = Block(
                num_heads=self.num_heads,
                mlp_dim=int(self.width * self.mlp_ratio),
                drop_path_rate=rate,
                dtype=self.dtype,
                name=f"blocks_{i}",
            )(x, train=train)
        x = nn.LayerNorm(epsilon=LN_EPSILON, dtype=self.dtype, name="norm")(x)
        return classify(
            jax.lax.index_in_dim(x, 0, axis=1, keepdims=False),  # the class token
            num_classes=self.num_classes,
            dropout_rate=self.dropout_rate,
            train=train,
            dtype=self.dtype,
            kernel_init=nn.initializers.zeros,  # big_vision's zero head: every class starts equal
        )


# DeiT's ImageNet models (224 px, patch 16).
ViT_Ti16 = functools.partial(ViT, patch_size=16, width=192, depth=12, num_heads=3)
ViT_S16 = functools.partial(ViT, patch_size=16, width=384, depth=12, num_heads=6)
ViT_B16 = functools.partial(ViT, patch_size=16, width=768, depth=12, num_heads=12)
# For 32x32 images: 8x8 patches of 4 pixels, the size of Hassani et al.'s ViT-Lite-7/4
# (7 blocks of width 256, 4 heads, MLP ratio 2), with stochastic depth as DeiT uses it.
ViT_Cifar = functools.partial(
    ViT, patch_size=4, width=256, depth=7, num_heads=4, mlp_ratio=2.0, drop_path_rate=0.1
)
