"""Batches from in-memory arrays: deterministic training order and exact, padded evaluation.

The training order is a pure function of (seed, step): epoch e is the permutation
`default_rng([seed, e])`, and batches run across epoch boundaries. Resuming at step s needs no
saved iterator state, and every process computes the same global batch and keeps its rows.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np

from flaxcls.data.augment import NUM_UNIFORMS, Augmentation
from flaxcls.data.sources import ArraySplit
from flaxcls.errors import ConfigError

Batch = dict[str, np.ndarray]


class Normalizer:
    """uint8 -> float32 `(x / 255 - mean) / std`, as one multiply-add."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        std_arr = np.asarray(std, np.float32)
        self.scale = (1.0 / (255.0 * std_arr)).astype(np.float32)
        self.shift = (-np.asarray(mean, np.float32) / std_arr).astype(np.float32)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return images.astype(np.float32) * self.scale + self.shift

    def to_uint8(self, images: np.ndarray) -> np.ndarray:
        """The inverse: normalised images back to their uint8 pixels."""
        pixels = (images - self.shift) / self.scale
        return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def local_rows(global_batch_size: int, process_index: int, process_count: int) -> slice:
    if global_batch_size % process_count:
        raise ConfigError(
            f"batch size {global_batch_size} does not divide over {process_count} processes."
        )
    per_process = global_batch_size // process_count
    return slice(process_index * per_process, (process_index + 1) * per_process)


@functools.lru_cache(maxsize=4)
def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def global_indices(seed: int, step: int, global_batch_size: int, n: int) -> np.ndarray:
    """Example indices of global batch `step` in the stream of shuffled epochs."""
    positions = step * global_batch_size + np.arange(global_batch_size)
    epochs, offsets = np.divmod(positions, n)
    out = np.empty(global_batch_size, np.int64)
    for epoch in np.unique(epochs):
        sel = epochs == epoch
        out[sel] = epoch_permutation(seed, int(epoch), n)[offsets[sel]]
    return out


def train_draws(
    n: int,
    *,
    global_batch_size: int,
    seed: int,
    start_step: int,
    process_index: int = 0,
    process_count: int = 1,
    with_uniforms: bool = True,
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Endless (example indices, augmentation draws) of this process's rows, from `start_step`.

    The draws are made for the whole global batch, so augmentation does not depend on the
    process layout; they are float32, so numpy on the host and jax.numpy on a device crop alike.
    Without `with_uniforms` (no augmentation to draw for) they are None.
    """
    rows = local_rows(global_batch_size, process_index, process_count)
    if n < global_batch_size:
        raise ConfigError(f"batch size {global_batch_size} exceeds the {n} training examples.")
    step = start_step
    while True:
        index = global_indices(seed, step, global_batch_size, n)[rows]
        if not with_uniforms:
            yield index, None
        else:
            rng = np.random.default_rng([seed, step, 1])
            yield index, rng.random((global_batch_size, NUM_UNIFORMS))[rows].astype(np.float32)
        step += 1


def train_batches(
    split: ArraySplit,
    *,
    global_batch_size: int,
    seed: int,
    start_step: int,
    augment: Augmentation,
    normalize: Normalizer,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[Batch]:
    """Endless training batches (this process's rows) from `start_step` on."""
    for index, uniforms in train_draws(
        len(split),
        global_batch_size=global_batch_size,
        seed=seed,
        start_step=start_step,
        process_index=process_index,
        process_count=process_count,
    ):
        images = augment(split.images[index], uniforms)
        yield {"image": normalize(images), "label": split.labels[index]}


def num_eval_steps(num_examples: int, global_batch_size: int) -> int:
    return -(-num_examples // global_batch_size)


def eval_batches(
    split: ArraySplit,
    *,
    global_batch_size: int,
    normalize: Normalizer,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[Batch]:
    """Every example exactly once; the last batch is padded, and `mask` marks real examples.

    Every process runs the same number of steps with the same shapes, so one compiled
    evaluation step serves them all.
    """
    rows = local_rows(global_batch_size, process_index, process_count)
    n = len(split)
    for step in range(num_eval_steps(n, global_batch_size)):
        positions = (step * global_batch_size + np.arange(global_batch_size))[rows]
        mask = positions < n
        index = np.where(mask, positions, 0)
        yield {
            "image": normalize(split.images[index]),
            "label": split.labels[index],
            "mask": mask.astype(np.float32),
        }
