"""Patch whitening for a first convolution (airbench94): the kernel is set, not learned, from
the eigenvectors of the training images' patch covariance, so the network starts from
decorrelated inputs of unit variance."""

from __future__ import annotations

import numpy as np


def patch_whitening_kernel(
    images: np.ndarray, kernel_size: int, eps: float = 5e-4, centered: bool = True
) -> np.ndarray:
    """An HWIO kernel of `2 * k * k * C` filters: each whitened patch direction and its negation
    (so a following ReLU or GELU loses nothing). `images` are float NHWC, normalised as the
    model sees them; a few thousand are plenty.

    `centered=False` is airbench94's variant: the second moment of the patches rather than
    their covariance, and the directions in order of decreasing variance."""
    n, h, w, c = images.shape
    k = kernel_size
    patches = np.stack(
        [images[:, i : h - k + 1 + i, j : w - k + 1 + j, :] for i in range(k) for j in range(k)],
        axis=3,
    )  # N, H', W', k*k, C: the (row, col, channel) order of an HWIO kernel
    patches = patches.reshape(-1, k * k * c).astype(np.float64)
    if centered:
        patches -= patches.mean(axis=0)
    covariance = patches.T @ patches / len(patches)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    if not centered:
        eigenvalues, eigenvectors = eigenvalues[::-1], eigenvectors[:, ::-1]
    filters = eigenvectors / np.sqrt(np.maximum(eigenvalues, 0.0) + eps)  # columns
    kernel = filters.reshape(k, k, c, k * k * c)
    return np.concatenate([kernel, -kernel], axis=-1).astype(np.float32)
