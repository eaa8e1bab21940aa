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
FLIP_COLUMN, _TOP, _LEFT = range(NUM_UNIFORMS)
PADDING_MODES = ("constant", "reflect")  # numpy's names: zeros, or mirrored without the edge


def random_flip(images: np.ndarray, uniforms: np.ndarray, xp: ModuleType = np) -> np.ndarray:
    """Mirrors each image left-right with probability 1/2."""
    flip = uniforms[:, FLIP_COLUMN] < 0.5
    return xp.where(flip[:, None, None, None], images[:, :, ::-1], images)


def random_crop(
    images: np.ndarray,
    uniforms: np.ndarray,
    padding: int,
    xp: ModuleType = np,
    padding_mode: str = "constant",
) -> np.ndarray:
    """Pads by `padding` on each side (zeros, or `padding_mode="reflect"`: mirrored) and crops
    back to the original size at random: a translation by up to `padding` pixels each way."""
    if padding <= 0:
        return images
    n, h, w, _ = images.shape
    pad_width = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    padded = xp.pad(images, pad_width, mode=padding_mode)
    top = (uniforms[:, _TOP] * (2 * padding + 1)).astype(xp.int32)
    left = (uniforms[:, _LEFT] * (2 * padding + 1)).astype(xp.int32)
    rows = (top[:, None] + xp.arange(h))[:, :, None]
    cols = (left[:, None] + xp.arange(w))[:, None, :]
    return padded[xp.arange(n)[:, None, None], rows, cols]


def identity(images: np.ndarray, uniforms: np.ndarray, xp: ModuleType = np) -> np.ndarray:
    return images


def _crop_flip(
    images: np.ndarray, uniforms: np.ndarray, padding: int, xp: ModuleType, padding_mode: str
):
    return random_flip(random_crop(images, uniforms, padding, xp, padding_mode), uniforms, xp)


def get_augmentation(
    name: str, crop_padding: int = 4, xp: ModuleType = np, padding_mode: str = "constant"
) -> Augmentation:
    """Augmentation by name: none | flip | crop | crop_flip (the standard CIFAR recipe), in
    numpy (`xp=np`) or jax.numpy (`xp=jnp`); crops pad with `padding_mode` (`PADDING_MODES`)."""
    if padding_mode not in PADDING_MODES:
        raise ConfigError(
            f"Unknown padding mode {padding_mode!r}; choose one of {', '.join(PADDING_MODES)}."
        )
    crop = dict(padding=crop_padding, xp=xp, padding_mode=padding_mode)
    augmentations: dict[str, Augmentation] = {
        "none": functools.partial(identity, xp=xp),
        "flip": functools.partial(random_flip, xp=xp),
        "crop": functools.partial(random_crop, **crop),
        "crop_flip": functools.partial(_crop_flip, **crop),
    }
    if name not in augmentations:
        raise ConfigError(
            f"Unknown augmentation {name!r}; choose one of {', '.join(augmentations)}."
        )
    return augmentations[name]
