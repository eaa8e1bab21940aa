"""Datasets as plain function calls, for research code that wants arrays or batches without
writing a config.

`dataset_or_folder` is a dataset name ("fashion_mnist", "cifar10", ...), a folder of class
sub-folders, a folder of MNIST-style IDX files, or an .npz file. Each function fills the data
config a training run would use (`default_data_config` plus the keywords given) and loads it
through `build_input`, so its arrays and batches are bit for bit those of a run with that
config. Each call loads the dataset again; `load_input` loads it once for many passes.

    images, labels = load_arrays("fashion_mnist", "test")  # uint8 NHWC, int32
    for batch in batches("fashion_mnist", batch_size=128, epochs=1, augment="flip"): ...
    for batch in eval_batches("path/to/images", split="validation", image_size=64): ...
"""

from __future__ import annotations

import difflib
import inspect
import itertools
import os
import re
from collections.abc import Iterator
from typing import Any

import ml_collections
import numpy as np

from flaxcls.data import idx
from flaxcls.data.contract import Batch, DatasetInfo, Input
from flaxcls.data.datasets import DATASETS, get_dataset_info
from flaxcls.data.input import build_input
from flaxcls.errors import ConfigError


def default_data_config() -> ml_collections.ConfigDict:
    """Every `config.data` field with its default: the one definition that training configs and
    these functions share."""
    data = ml_collections.ConfigDict()
    data.dataset = "fashion_mnist"  # a name from flaxcls.data.DATASETS, custom or folder
    data.source = "auto"  # auto | tfds | idx | npz; auto prefers installed IDX files
    data.path = ""  # IDX folder or .npz file (idx/npz sources); the root for "folder"
    data.data_dir = ""  # tfds data_dir; empty means tfds's default
    data.download = False  # let tfds download and prepare a missing dataset
    data.validation_fraction = 0.2  # the last 20% of train is held out, as in Keras
    data.test_fraction = 0.1  # held out as test when an .npz or a folder has no test split
    data.num_classes = 0  # for dataset="custom": 0 means max label + 1
    # dataset="folder": class sub-folders (or train/ val/ test/ of them), resized to image_size
    data.channels = 0  # 1 or 3; 0: 1 when every image is grayscale
    data.split_seed = 0  # the stratified split of a folder without split sub-folders
    data.skip_corrupt = False  # skip unreadable images with a warning (else an error)
    data.augment = "none"  # none | flip | crop | crop_flip; streaming: inception_crop_flip
    data.crop_padding = 4  # pixels of padding for the random crop
    data.crop_padding_mode = "constant"  # constant (zeros) | reflect (mirrored, as airbench)
    # Each image mirrored at random in its first epoch, then on every other epoch (airbench94),
    # instead of at random each time (augment flip and crop_flip)
    data.alternating_flip = False
    data.image_size = 224  # streaming and folder datasets: the side images are sized to
    data.eval_resize = 256  # streaming datasets: shorter side before the centre crop
    data.shuffle_buffer = 10_000  # streaming datasets: tf.data shuffle buffer
    # In-memory datasets: hold the uint8 training split on every device; each batch is gathered,
    # augmented and normalised inside the compiled step (the same batches as the host path).
    data.on_device = False
    # Inside the training step, on normalised images, after the crop/flip above:
    data.randaugment_ops = 0  # RandAugment operations per image; 0 disables it
    data.randaugment_magnitude = 9.0  # 0-10 (timm's rand-m9-n2 = 9 and 2 ops)
    data.erasing_prob = 0.0  # random erasing (cutout with noise) per image
    data.mixup_alpha = 0.0  # Beta(alpha, alpha) mixing of images and labels; 0 disables
    data.cutmix_alpha = 0.0  # with both alphas set, each batch picks one at 50%
    data.mix_prob = 1.0  # the share of batches mixed
    return data


# The keywords every function takes: the fields that decide which arrays are loaded.
LOAD_OPTIONS = (
    "source",
    "path",
    "data_dir",
    "download",
    "validation_fraction",
    "test_fraction",
    "num_classes",
    "channels",
    "split_seed",
    "skip_corrupt",
    "image_size",
    "eval_resize",
    "shuffle_buffer",
)
# Config fields these functions do not take, and why.
_NOT_HERE = {
    "dataset": "the first argument names the dataset",
    "on_device": "it is a training-loop setting",
    "split": "batches() reads the training split; eval_batches(split=...) passes over any split",
}
_IN_STEP = ("randaugment_ops", "randaugment_magnitude", "erasing_prob", "mixup_alpha")
_IN_STEP += ("cutmix_alpha", "mix_prob")
_NOT_HERE |= dict.fromkeys(
    _IN_STEP,
    "it acts inside the training step: pass train_step(augment=...) the function "
    "flaxcls.data.in_step.build_step_augment(data_config(...), normalizer) returns",
)
_EVAL_CHUNK = 1024  # rows per batch when gathering a held-out split into arrays


def _check_options(function: Any, options: dict[str, Any], valid: tuple[str, ...]) -> None:
    """A TypeError for a keyword `function` does not take, naming the ones it does."""
    named = [p.name for p in inspect.signature(function).parameters.values()][1:]
    valid = (*[n for n in named if n != "options"], *valid)
    for key in options:
        if key in valid:
            continue
        hint = _NOT_HERE.get(key)
        if hint is None:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "it is no data option"
        raise TypeError(
            f"{function.__name__}() got an unexpected keyword argument {key!r} ({hint}). "
            f"Valid keywords: {', '.join(valid)}."
        )


def _where(dataset_or_folder: str) -> dict[str, str]:
    """The config fields that say where a dataset name or path points."""
    if dataset_or_folder in DATASETS:
        return {"dataset": dataset_or_folder}
    path = os.path.expanduser(dataset_or_folder)
    if path.endswith(".npz") and os.path.isfile(path):
        return {"dataset": "custom", "source": "npz", "path": path}
    if os.path.isdir(path):
        if idx.has_idx_files(path):
            return {"dataset": "custom", "source": "idx", "path": path}
        return {"dataset": "folder", "path": path}
    raise ConfigError(
        f"{dataset_or_folder!r} is neither a dataset name ({', '.join(sorted(DATASETS))}) nor "
        "an existing folder (class sub-folders, or IDX files) or .npz file."
    )


def data_config(dataset_or_folder: str, **options: Any) -> ml_collections.ConfigDict:
    """The `config.data` a training run would use for this dataset and these options (the
    fields of `default_data_config`); an unknown keyword is a TypeError naming the valid ones,
    a value out of range a ConfigError naming what is allowed."""
    _check_options(data_config, options, (*LOAD_OPTIONS, "augment", "crop_padding"))
    where = _where(dataset_or_folder)
    if "path" in where and {"source", "path"} & options.keys():
        raise TypeError(
            f"source= and path= are for named datasets; {dataset_or_folder!r} is the path already."
        )
    config = default_data_config()
    config.update(where)
    config.update(options)
    _check_values(config)
    return config


def _check_values(data: ml_collections.ConfigDict) -> None:
    from flaxcls.config import check_config  # the rules training configs pass

    try:
        check_config(ml_collections.ConfigDict({"data": data}))
    except ConfigError as e:  # keywords here, not config keys
        raise ConfigError(re.sub(r"\bdata\.", "", str(e))) from None


def load_input(
    dataset_or_folder: str,
    *,
    batch_size: int = 64,
    eval_batch_size: int = 500,
    seed: int = 0,
    augment: str = "none",
    crop_padding: int = 4,
    process_index: int = 0,
    process_count: int = 1,
    **options: Any,
) -> Input:
    """The dataset loaded once: `.info`, `.train(start_step)` (endless training batches of
    `batch_size`, in an order fixed by `seed`), `.evaluate(split)`, `.split_sizes`, ...

    Its batches are as the training loop takes them: streamed datasets yield uint8 pixels, to
    be normalised on the device (`jax.jit(flaxcls.data.normalizing(step, .normalizer))`)."""
    _check_options(load_input, options, LOAD_OPTIONS)
    config = data_config(dataset_or_folder, augment=augment, crop_padding=crop_padding, **options)
    return build_input(
        config,
        global_batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
    )


def dataset_info(dataset_or_folder: str, **options: Any) -> DatasetInfo:
    """Class names, image shape, class count and the per-channel mean and std batches are
    normalised with; a named in-memory dataset answers without loading anything."""
    _check_options(dataset_info, options, LOAD_OPTIONS)
    config = data_config(dataset_or_folder, **options)
    if config.dataset in DATASETS and not get_dataset_info(config.dataset).streaming:
        return get_dataset_info(config.dataset)
    return build_input(config, global_batch_size=1, eval_batch_size=1, seed=0).info


def load_arrays(
    dataset_or_folder: str, split: str = "train", **options: Any
) -> tuple[np.ndarray, np.ndarray]:
    """One split as arrays: uint8 images (N, H, W, C) and int32 labels.

    Splits are train, validation (the last `validation_fraction` of the training images, as
    Keras holds it out) and test.
    """
    _check_options(load_arrays, options, LOAD_OPTIONS)
    config = data_config(dataset_or_folder, **options)
    if config.dataset in DATASETS and get_dataset_info(config.dataset).streaming:
        raise ConfigError(
            f"{config.dataset} is read as a stream, too large to hold as arrays; use batches()."
        )
    data = build_input(config, global_batch_size=1, eval_batch_size=_EVAL_CHUNK, seed=0)
    _check_split(split, data)
    if split == "train":
        return data.train_split.images, data.train_split.labels
    chunks = [_real_rows(_as_uint8(batch, data)) for batch in data.evaluate(split)]
    if not chunks:
        return data.train_split.images[:0], data.train_split.labels[:0]
    return tuple(np.concatenate(parts) for parts in zip(*chunks, strict=True))


def _real_rows(batch: Batch) -> tuple[np.ndarray, np.ndarray]:
    keep = batch["mask"] > 0
    return batch["image"][keep], batch["label"][keep]


def _check_split(split: str, data: Input) -> None:
    if split not in data.split_sizes:
        raise ConfigError(f"split={split!r}; choose one of {', '.join(data.split_sizes)}.")


def _as_uint8(batch: Batch, data: Input) -> Batch:
    """The batch with the uint8 pixels its images were made from."""
    return batch | {"image": data.normalizer.to_uint8(batch["image"])}


def _in_dtype(stream: Iterator[Batch], data: Input, normalize: bool) -> Iterator[Batch]:
    """Batches with normalised float32 images, as `flaxcls.train_step` takes them (streams
    yield uint8 pixels, which the training loop normalises on the device), or uint8 pixels."""
    if normalize:
        return (data.normalizer.float_batch(batch) for batch in stream)
    return (_as_uint8(batch, data) for batch in stream)


def _num_steps(steps: int | None, epochs: float | None, steps_per_epoch: int) -> int | None:
    """Steps from `steps` or `epochs` (rounded, as training runs count them); None: endless."""
    if steps is not None and epochs is not None:
        raise TypeError("give steps= or epochs=, not both.")
    if epochs is not None:
        return int(round(epochs * steps_per_epoch))
    return steps


def batches(
    dataset_or_folder: str,
    *,
    batch_size: int = 64,
    seed: int = 0,
    augment: str = "none",
    crop_padding: int = 4,
    steps: int | None = None,
    epochs: float | None = None,
    start_step: int = 0,
    normalize: bool = True,
    **options: Any,
) -> Iterator[Batch]:
    """Training batches {'image', 'label'}: shuffled, augmented (none | flip | crop |
    crop_flip) and normalised (float32; uint8 with `normalize=False`).

    The order is a pure function of (`seed`, step): epochs follow one another without a
    partial batch, and `start_step` resumes the stream where an earlier one stopped. Endless
    unless `steps` or `epochs` (of `len(train) // batch_size` steps) bound it. The dataset is
    loaded here, so a bad argument fails at the call.

    `train` is the training images less the held-out validation split: the option
    `validation_fraction` (default 0.2, the last 20% of the training images, as in Keras)
    is kept for `eval_batches(..., "validation")`, so `batches("fashion_mnist")` trains on
    48,000 of its 60,000 images; `validation_fraction=0.0` trains on all of them. A step's
    `loss` is summed over the batch: divide by `count` for the mean.
    """
    _check_options(batches, options, LOAD_OPTIONS)
    data = load_input(
        dataset_or_folder,
        batch_size=batch_size,
        eval_batch_size=batch_size,
        seed=seed,
        augment=augment,
        crop_padding=crop_padding,
        **options,
    )
    count = _num_steps(steps, epochs, data.steps_per_epoch())
    return _in_dtype(itertools.islice(data.train(start_step), count), data, normalize)


def eval_batches(
    dataset_or_folder: str,
    split: str = "test",
    *,
    batch_size: int = 500,
    normalize: bool = True,
    **options: Any,
) -> Iterator[Batch]:
    """Every example of `split` once, in order, as {'image', 'label', 'mask'}: the last batch
    is padded to `batch_size` and `mask` (float32, 0 for padding) marks the real rows, so one
    compiled step serves every batch and masked sums give exact metrics."""
    _check_options(eval_batches, options, LOAD_OPTIONS)
    data = load_input(
        dataset_or_folder, batch_size=batch_size, eval_batch_size=batch_size, **options
    )
    _check_split(split, data)
    return _in_dtype(data.evaluate(split), data, normalize)
