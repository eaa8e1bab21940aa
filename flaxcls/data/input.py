"""One entry point from a data config to training and evaluation batches."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np

from flaxcls.data import pipeline, sources
from flaxcls.data.augment import Augmentation, get_augmentation
from flaxcls.data.contract import Batch, Input, Layout, Normalizer


def build_input(
    data_config: Any,
    *,
    global_batch_size: int,
    eval_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    device_count: int = 1,
) -> Input:
    """Loads the configured dataset: in memory when it fits, streamed with tf.data otherwise.

    Evaluation batches are padded with masked rows to a multiple of `device_count`, so that
    they split evenly over the devices whatever `eval_batch_size` is.
    """
    layout = Layout(
        global_batch_size=global_batch_size,
        eval_batch_size=eval_batch_size,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
        device_count=device_count,
    )
    if sources.streamed(data_config):
        from flaxcls.data import streaming  # imports TensorFlow only when needed

        return streaming.streaming_input(data_config, layout)
    return array_input(data_config, layout)


def augmentation_of(data_config: Any, xp: ModuleType = np) -> Augmentation:
    """The crop / flip augmentation `data_config` asks for, in numpy or jax.numpy (`xp`)."""
    return get_augmentation(
        data_config.augment,
        data_config.crop_padding,
        xp,
        padding_mode=data_config.get("crop_padding_mode", "constant"),
    )


def array_input(data_config: Any, layout: Layout) -> Input:
    """Batches from the dataset's splits held in memory as uint8 arrays."""
    info, splits = sources.load_splits(data_config)
    normalize = Normalizer(info.mean, info.std)
    # data configs written before these options have neither
    alternating_flip = data_config.get("alternating_flip", False)
    train = functools.partial(
        pipeline.train_batches,
        splits["train"],
        layout,
        augment=augmentation_of(data_config),
        normalize=normalize,
        alternating_flip=alternating_flip,
    )

    def evaluate(split: str) -> Iterator[Batch]:
        return pipeline.eval_batches(splits[split], layout, normalize=normalize)

    def train_indices(start_step: int, with_uniforms: bool = True) -> Iterator[Batch]:
        for index, uniforms in pipeline.train_draws(
            len(splits["train"]),
            layout,
            start_step=start_step,
            with_uniforms=with_uniforms,
            alternating_flip=alternating_flip,
        ):
            batch = {"index": index.astype(np.int32)}
            yield batch if uniforms is None else batch | {"uniforms": uniforms}

    return Input(
        info=info,
        split_sizes={name: len(split) for name, split in splits.items()},
        layout=layout,
        train=lambda start_step: train(start_step=start_step),
        evaluate=evaluate,
        train_split=splits["train"],
        train_indices=train_indices,
        normalizer=normalize,
    )
