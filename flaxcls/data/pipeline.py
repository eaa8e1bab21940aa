"""Batches from in-memory arrays: deterministic training order and exact, padded evaluation.

The training order is a pure function of (seed, step): epoch e is the permutation
`default_rng([seed, e])`, and batches run across epoch boundaries. Resuming at step s needs no
saved iterator state, and every process computes the same global batch and keeps its rows.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np

from flaxcls.data.augment import FLIP_COLUMN, NUM_UNIFORMS, Augmentation
from flaxcls.data.contract import ArraySplit, Batch, Layout, Normalizer
from flaxcls.errors import ConfigError


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


@functools.lru_cache(maxsize=4)
def first_flips(seed: int, n: int) -> np.ndarray:
    """Whether each example is mirrored in even epochs under the alternating flip."""
    return np.random.default_rng([seed, 2]).random(n) < 0.5


def alternating_flips(seed: int, step: int, index: np.ndarray, n: int) -> np.ndarray:
    """The flips of global batch `step` (example `index`) under airbench's alternating flip:
    each example mirrored at random in its first epoch, then on every other epoch, so it is
    seen both ways in any two epochs in a row."""
    positions = step * len(index) + np.arange(len(index))
    odd_epoch = (positions // n) % 2 == 1
    return first_flips(seed, n)[index] ^ odd_epoch


def train_draws(
    n: int,
    layout: Layout,
    *,
    start_step: int,
    with_uniforms: bool = True,
    alternating_flip: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Endless (example indices, augmentation draws) of this process's rows, from `start_step`.

    The draws are made for the whole global batch, so augmentation does not depend on the
    process layout; they are float32, so numpy on the host and jax.numpy on a device crop alike.
    Without `with_uniforms` (no augmentation to draw for) they are None. `alternating_flip`
    sets the flip column by `alternating_flips` instead of at random.
    """
    batch, seed = layout.global_batch_size, layout.seed
    rows = layout.train_share()
    if n < batch:
        raise ConfigError(f"batch size {batch} exceeds the {n} training examples.")
    step = start_step
    while True:
        index = global_indices(seed, step, batch, n)
        if not with_uniforms:
            yield index[rows], None
        else:
            rng = np.random.default_rng([seed, step, 1])
            uniforms = rng.random((batch, NUM_UNIFORMS)).astype(np.float32)
            if alternating_flip:  # the flip column reads "flip" below 0.5
                flips = alternating_flips(seed, step, index, n)
                uniforms[:, FLIP_COLUMN] = np.where(flips, 0.0, 1.0)
            yield index[rows], uniforms[rows]
        step += 1


def train_batches(
    split: ArraySplit,
    layout: Layout,
    *,
    start_step: int,
    augment: Augmentation,
    normalize: Normalizer,
    alternating_flip: bool = False,
) -> Iterator[Batch]:
    """Endless training batches (this process's rows) from `start_step` on."""
    draws = train_draws(
        len(split), layout, start_step=start_step, alternating_flip=alternating_flip
    )
    for index, uniforms in draws:
        images = augment(split.images[index], uniforms)
        yield {"image": normalize(images), "label": split.labels[index]}


def eval_batches(split: ArraySplit, layout: Layout, *, normalize: Normalizer) -> Iterator[Batch]:
    """Every example exactly once: `eval_batch_size` examples a step, padded with `mask` 0 rows
    to `layout.eval_rows` (a multiple of the devices) and, in the last step, past the end.

    Every process runs the same number of steps with the same shapes, so one compiled
    evaluation step serves them all.
    """
    row = np.arange(layout.eval_rows)[layout.eval_share()]
    n = len(split)
    for step in range(layout.eval_steps(n)):
        positions = step * layout.eval_batch_size + row
        mask = (row < layout.eval_batch_size) & (positions < n)
        index = np.where(mask, positions, 0)
        yield {
            "image": normalize(split.images[index]),
            "label": split.labels[index],
            "mask": mask.astype(np.float32),
        }


def pad_rows(batch: Batch, rows: int) -> Batch:
    """`batch` with zero rows appended up to `rows`; a zero `mask` marks them as padding."""
    return {
        k: np.concatenate([v, np.zeros((rows - len(v), *v.shape[1:]), v.dtype)])
        for k, v in batch.items()
    }
