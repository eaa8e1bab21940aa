"""Batch augmentations on the host, in numpy: pure functions of (images, uniforms).

Each takes uint8 NHWC images and `uniforms`, an (N, NUM_UNIFORMS) array of draws in [0, 1)
made for that batch, and returns uint8 images of the same shape. The pipeline draws the
uniforms for the whole global batch and hands each process its rows, so a run augments the
same way whatever the number of processes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from flaxcls.errors import ConfigError

Augmentation = Callable[[np.ndarray, np.ndarray], np.ndarray]
NUM_UNIFORMS = 3  # columns: flip, crop top, crop left
_FLIP, _TOP, _LEFT = range(NUM_UNIFORMS)


def random_flip(images: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Mirrors each image left-right with probability 1/2."""
    flip = uniforms[:, _FLIP] < 0.5
    return np.where(flip[:, None, None, None], images[:, :, ::-1], images)


def random_crop(images: np.ndarray, uniforms: np.ndarray, padding: int) -> np.ndarray:
    """Zero-pads by `padding` on each side and crops back to the original size at random."""
    if padding <= 0:
        return images
    n, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    top = (uniforms[:, _TOP] * (2 * padding + 1)).astype(np.int64)
    left = (uniforms[:, _LEFT] * (2 * padding + 1)).astype(np.int64)
    rows = (top[:, None] + np.arange(h))[:, :, None]
    cols = (left[:, None] + np.arange(w))[:, None, :]
    return padded[np.arange(n)[:, None, None], rows, cols]


def identity(images: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    return images


def get_augmentation(name: str, crop_padding: int = 4) -> Augmentation:
    """Host augmentation by name: none | flip | crop | crop_flip (the standard CIFAR recipe)."""
    augmentations: dict[str, Augmentation] = {
        "none": identity,
        "flip": random_flip,
        "crop": lambda x, u: random_crop(x, u, crop_padding),
        "crop_flip": lambda x, u: random_flip(random_crop(x, u, crop_padding), u),
    }
    if name not in augmentations:
        raise ConfigError(
            f"Unknown augmentation {name!r}; choose one of {', '.join(augmentations)}."
        )
    return augmentations[name]
