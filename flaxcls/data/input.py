"""One entry point from a data config to training and evaluation batches."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from flaxcls.data import pipeline
from flaxcls.data.augment import get_augmentation
from flaxcls.data.datasets import DatasetInfo, get_dataset_info
from flaxcls.data.sources import ArraySplit, load_splits

Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Input:
    """What the training loop needs from the data, whatever the source.

    Batches hold this process's rows of the global batch: `image` float32 NHWC (normalised),
    `label` int32, and for evaluation `mask` float32 (0 marks padding).
    """

    info: DatasetInfo
    split_sizes: dict[str, int]
    global_batch_size: int
    eval_batch_size: int
    train: Callable[[int], Iterator[Batch]]  # start_step -> endless training batches
    evaluate: Callable[[str], Iterator[Batch]]  # split -> every example once, padded
    # In-memory datasets only, for training with the data held on the devices:
    train_split: ArraySplit | None = None  # uint8 images and labels of the training split
    # (start step, with_uniforms=True) -> {"index"[, "uniforms"]}: this process's rows and
    # their augmentation draws
    train_indices: Callable[..., Iterator[Batch]] | None = None
    normalizer: pipeline.Normalizer | None = None  # uint8 -> the float images batches hold

    def steps_per_epoch(self) -> int:
        return max(1, self.split_sizes["train"] // self.global_batch_size)

    def eval_steps(self, split: str) -> int:
        return pipeline.num_eval_steps(self.split_sizes[split], self.eval_batch_size)


def build_input(
    data_config: Any,
    *,
    global_batch_size: int,
    eval_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
) -> Input:
    """Loads the configured dataset: in memory when it fits, streamed with tf.data otherwise."""
    kwargs = dict(
        global_batch_size=global_batch_size,
        eval_batch_size=eval_batch_size,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
    )
    in_memory = data_config.dataset in ("custom", "folder")
    if not in_memory and get_dataset_info(data_config.dataset).streaming:
        from flaxcls.data import streaming  # imports TensorFlow only when needed

        return streaming.streaming_input(data_config, **kwargs)
    return _array_input(data_config, **kwargs)


def _array_input(
    data_config: Any,
    *,
    global_batch_size: int,
    eval_batch_size: int,
    seed: int,
    process_index: int,
    process_count: int,
) -> Input:
    info, splits = load_splits(data_config)
    normalize = pipeline.Normalizer(info.mean, info.std)
    layout = dict(process_index=process_index, process_count=process_count)
    train = functools.partial(
        pipeline.train_batches,
        splits["train"],
        global_batch_size=global_batch_size,
        seed=seed,
        augment=get_augmentation(data_config.augment, data_config.crop_padding),
        normalize=normalize,
        **layout,
    )

    def evaluate(split: str) -> Iterator[Batch]:
        return pipeline.eval_batches(
            splits[split], global_batch_size=eval_batch_size, normalize=normalize, **layout
        )

    def train_indices(start_step: int, with_uniforms: bool = True) -> Iterator[Batch]:
        for index, uniforms in pipeline.train_draws(
            len(splits["train"]),
            global_batch_size=global_batch_size,
            seed=seed,
            start_step=start_step,
            with_uniforms=with_uniforms,
            **layout,
        ):
            batch = {"index": index.astype(np.int32)}
            yield batch if uniforms is None else batch | {"uniforms": uniforms}

    return Input(
        info=info,
        split_sizes={name: len(split) for name, split in splits.items()},
        global_batch_size=global_batch_size,
        eval_batch_size=eval_batch_size,
        train=lambda start_step: train(start_step=start_step),
        evaluate=evaluate,
        train_split=splits["train"],
        train_indices=train_indices,
        normalizer=normalize,
    )
