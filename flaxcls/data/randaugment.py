"""RandAugment (Cubuk et al. 2020) in jax.numpy, built on dm-pix, for use inside a compiled step.

Each image gets `num_ops` operations drawn uniformly from `OPS`, each at the global
`magnitude` (0-10, as in the paper and timm's `rand-m9-n2`), with a random sign where the
operation has a direction. Images are float32 in [0, 1], HWC, any number of channels
(colour operations leave single-channel images unchanged). Equalize is left out: it has no
cheap vectorised form and RandAugment's accuracy does not hinge on it.
"""

from __future__ import annotations

import math

import dm_pix as pix
import jax
import jax.numpy as jnp

_MAX_MAGNITUDE = 10.0


def _blend(image: jax.Array, other: jax.Array, factor: jax.Array) -> jax.Array:
    return jnp.clip(other + factor * (image - other), 0.0, 1.0)


def _enhance_factor(level: jax.Array) -> jax.Array:
    return 1.0 + 0.9 * level  # PIL ImageEnhance factor: 0.1 .. 1.9


def _affine(image: jax.Array, matrix: jax.Array) -> jax.Array:
    """`matrix` maps output pixel coordinates (about the image centre) to input coordinates."""
    h, w = image.shape[:2]
    centre = jnp.array([(h - 1) / 2, (w - 1) / 2])
    full = jnp.eye(3).at[:2, :2].set(matrix)
    offset = jnp.concatenate([centre - matrix @ centre, jnp.zeros(1)])
    # dm-pix transforms all three axes; the channel axis maps to itself.
    return pix.affine_transform(image, full, offset=offset, order=1, mode="constant", cval=0.5)


def identity(image: jax.Array, level: jax.Array) -> jax.Array:
    return image


def auto_contrast(image: jax.Array, level: jax.Array) -> jax.Array:
    low = image.min(axis=(0, 1), keepdims=True)
    high = image.max(axis=(0, 1), keepdims=True)
    scale = jnp.where(high > low, 1.0 / jnp.maximum(high - low, 1e-6), 1.0)
    return jnp.where(high > low, (image - low) * scale, image)


def rotate(image: jax.Array, level: jax.Array) -> jax.Array:
    angle = level * 30.0 * math.pi / 180.0
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    return _affine(image, jnp.array([[cos, -sin], [sin, cos]]))


def shear_x(image: jax.Array, level: jax.Array) -> jax.Array:
    return _affine(image, jnp.array([[1.0, 0.0], [level * 0.3, 1.0]]))


def shear_y(image: jax.Array, level: jax.Array) -> jax.Array:
    return _affine(image, jnp.array([[1.0, level * 0.3], [0.0, 1.0]]))


def _translate(image: jax.Array, level: jax.Array, axis: int) -> jax.Array:
    shift = level * 0.45 * image.shape[axis]  # timm's TranslateRel: up to 45% of the side
    offset = jnp.array([shift, 0.0, 0.0]) if axis == 0 else jnp.array([0.0, shift, 0.0])
    return pix.affine_transform(
        image, jnp.eye(3), offset=offset, order=1, mode="constant", cval=0.5
    )


def translate_x(image: jax.Array, level: jax.Array) -> jax.Array:
    return _translate(image, level, axis=1)


def translate_y(image: jax.Array, level: jax.Array) -> jax.Array:
    return _translate(image, level, axis=0)


def posterize(image: jax.Array, level: jax.Array) -> jax.Array:
    bits = 8.0 - jnp.round(jnp.abs(level) * 4.0)  # 8 .. 4 bits
    step = 2.0 ** (8.0 - bits)
    return jnp.floor(image * 255.0 / step) * step / 255.0


def solarize(image: jax.Array, level: jax.Array) -> jax.Array:
    return pix.solarize(image, 1.0 - jnp.abs(level))


def solarize_add(image: jax.Array, level: jax.Array) -> jax.Array:
    added = jnp.clip(image + jnp.abs(level) * 110.0 / 255.0, 0.0, 1.0)
    return jnp.where(image < 128.0 / 255.0, added, image)


def color(image: jax.Array, level: jax.Array) -> jax.Array:
    if image.shape[-1] != 3:
        return image
    return _blend(image, pix.rgb_to_grayscale(image, keep_dims=True), _enhance_factor(level))


def contrast(image: jax.Array, level: jax.Array) -> jax.Array:
    mean = image.mean(keepdims=True)
    return _blend(image, jnp.broadcast_to(mean, image.shape), _enhance_factor(level))


def brightness(image: jax.Array, level: jax.Array) -> jax.Array:
    return _blend(image, jnp.zeros_like(image), _enhance_factor(level))


def sharpness(image: jax.Array, level: jax.Array) -> jax.Array:
    blurred = pix.gaussian_blur(image, 1.0, 3)
    return _blend(image, blurred, _enhance_factor(level))


def invert(image: jax.Array, level: jax.Array) -> jax.Array:
    return 1.0 - image


# timm's `_RAND_TRANSFORMS` less Equalize. `level` is the signed magnitude in [-1, 1].
OPS = (
    identity,
    auto_contrast,
    invert,
    rotate,
    posterize,
    solarize,
    solarize_add,
    color,
    contrast,
    brightness,
    sharpness,
    shear_x,
    shear_y,
    translate_x,
    translate_y,
)


def rand_augment_image(
    rng: jax.Array, image: jax.Array, num_ops: int, magnitude: float
) -> jax.Array:
    """`num_ops` random operations on one HWC image in [0, 1]."""
    for op_rng in jax.random.split(rng, num_ops):
        choice_rng, sign_rng = jax.random.split(op_rng)
        op = jax.random.randint(choice_rng, (), 0, len(OPS))
        sign = jnp.where(jax.random.bernoulli(sign_rng), 1.0, -1.0)
        level = sign * magnitude / _MAX_MAGNITUDE
        image = jax.lax.switch(op, OPS, image, level)
    return jnp.clip(image, 0.0, 1.0)


def rand_augment(
    rng: jax.Array, images: jax.Array, num_ops: int = 2, magnitude: float = 9.0
) -> jax.Array:
    """RandAugment on a batch of NHWC images in [0, 1], an independent draw per image."""
    rngs = jax.random.split(rng, images.shape[0])
    return jax.vmap(rand_augment_image, in_axes=(0, 0, None, None))(
        rngs, images, num_ops, magnitude
    )
