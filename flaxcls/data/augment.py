"""Batch augmentations: pure functions of (images, uniforms), in numpy on the host or in
jax.numpy inside a compiled step (`xp=jnp`), with the same result.

Each takes uint8 NHWC images and `uniforms`, an (N, NUM_UNIFORMS) array of draws in [0, 1)
made for that batch, and returns uint8 images of the same shape. The pipeline draws the
uniforms for the whole global batch and hands each process its rows, so a run augments the
same way whatever the number of processes, and wherever the augmentation runs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import ModuleType

import numpy as np

from flaxcls.errors import ConfigError

Augmentation = Callable[[np.ndarray, np.ndarray], np.ndarray]
NUM_UNIFORMS = 3  # columns: flip, crop top, crop left
_FLIP, _TOP, _LEFT = range(NUM_UNIFORMS)


def random_flip(images: np.ndarray, uniforms: np.ndarray, xp: ModuleType = np) -> np.ndarray:
    """Mirrors each image left-right with probability 1/2."""
    flip = uniforms[:, _FLIP] < 0.5
    return xp.where(flip[:, None, None, None], images[:, :, ::-1], images)


def random_crop(
    images: np.ndarray, uniforms: np.ndarray, padding: int, xp: ModuleType = np
) -> np.ndarray:
    """Zero-pads by `padding` on each side and crops back to the original size at random."""
    if padding <= 0:
        return images
    n, h, w, _ = images.shape
    padded = xp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    top = (uniforms[:, _TOP] * (2 * padding + 1)).astype(xp.int32)
    left = (uniforms[:, _LEFT] * (2 * padding + 1)).astype(xp.int32)
    rows = (top[:, None] + xp.arange(h))[:, :, None]
    cols = (left[:, None] + xp.arange(w))[:, None, :]
    return padded[xp.arange(n)[:, None, None], rows, cols]


def identity(images: np.ndarray, uniforms: np.ndarray, xp: ModuleType = np) -> np.ndarray:
    return images


def _crop_flip(images: np.ndarray, uniforms: np.ndarray, padding: int, xp: ModuleType):
    return random_flip(random_crop(images, uniforms, padding, xp), uniforms, xp)


def get_augmentation(name: str, crop_padding: int = 4, xp: ModuleType = np) -> Augmentation:
    """Augmentation by name: none | flip | crop | crop_flip (the standard CIFAR recipe), in
    numpy (`xp=np`) or jax.numpy (`xp=jnp`)."""
    augmentations: dict[str, Augmentation] = {
        "none": functools.partial(identity, xp=xp),
        "flip": functools.partial(random_flip, xp=xp),
        "crop": functools.partial(random_crop, padding=crop_padding, xp=xp),
        "crop_flip": functools.partial(_crop_flip, padding=crop_padding, xp=xp),
    }
    if name not in augmentations:
        raise ConfigError(
            f"Unknown augmentation {name!r}; choose one of {', '.join(augmentations)}."
        )
    return augmentations[name]
