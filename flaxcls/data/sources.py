"""Where images come from: prepared tfds datasets, original IDX files, or a local .npz.

Every in-memory source yields the same thing, uint8 NHWC images and int32 labels for the
`train` and `test` splits, so that splitting, augmentation and batching are written once.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from flaxcls.data import idx
from flaxcls.data.datasets import DatasetInfo, get_dataset_info
from flaxcls.data.folder import load_folder
from flaxcls.errors import ConfigError


class DatasetNotPreparedError(RuntimeError):
    """A tfds dataset is not on disk and downloading was not asked for."""


@dataclasses.dataclass(frozen=True)
class ArraySplit:
    images: np.ndarray  # uint8, (N, H, W, C)
    labels: np.ndarray  # int32, (N,)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, index: slice | np.ndarray) -> ArraySplit:
        return ArraySplit(self.images[index], self.labels[index])


def resolve_source(data_config: Any, info: DatasetInfo) -> tuple[str, str]:
    """Returns (kind, path) for `data.source` = auto | tfds | idx | npz."""
    source, path = data_config.source, data_config.path
    if source != "auto":
        if source not in LOADERS:
            raise ConfigError(f"data.source={source!r}; choose one of auto, {', '.join(LOADERS)}.")
        return source, path
    if path:
        return ("npz" if path.endswith(".npz") else "idx"), path
    for directory in info.local_idx_dirs:
        if idx.has_idx_files(directory):
            return "idx", directory
    return "tfds", ""


def tfds_builder(info: DatasetInfo, data_config: Any):
    """A tfds builder whose data is on disk; fails at once (never waits on the network) if not."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(info.tfds_name, data_dir=data_config.data_dir or None)
    if builder.is_prepared():
        return builder
    if data_config.download:
        builder.download_and_prepare()
        return builder
    where = data_config.data_dir or "~/tensorflow_datasets (the default data_dir)"
    raise DatasetNotPreparedError(
        f"tfds dataset {info.tfds_name!r} is not prepared in {where}. Either prepare it once on a "
        f"machine with network access (`tfds build {info.tfds_name}` or rerun with "
        "--config.data.download=True) and point --config.data.data_dir at it, or use local files: "
        "--config.data.source=idx --config.data.path=DIR (MNIST-style IDX files) or "
        "--config.data.source=npz --config.data.path=FILE.npz (uint8 `images` NHWC, int `labels`)."
    )


def _load_tfds(info: DatasetInfo, data_config: Any, path: str) -> dict[str, ArraySplit]:
    import tensorflow_datasets as tfds

    builder = tfds_builder(info, data_config)
    splits = {}
    for name, tfds_split in (("train", info.train_split), ("test", info.test_split)):
        ds = builder.as_dataset(split=tfds_split, shuffle_files=False)
        ds = ds.map(lambda ex: {"image": ex["image"], "label": ex["label"]})
        # Chunks of a known size: a single huge batch makes tf.data reserve memory for it.
        chunks = list(tfds.as_numpy(ds.batch(10_000)))
        images = np.concatenate([c["image"] for c in chunks]).astype(np.uint8)
        labels = np.concatenate([c["label"] for c in chunks]).astype(np.int32)
        splits[name] = ArraySplit(images, labels)
    return splits


def _load_idx(info: DatasetInfo, data_config: Any, path: str) -> dict[str, ArraySplit]:
    if not idx.has_idx_files(path):
        raise FileNotFoundError(
            f"No MNIST-style IDX files in {path!r}: expected train-images-idx3-ubyte[.gz], "
            "train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz] and "
            "t10k-labels-idx1-ubyte[.gz]."
        )
    return {split: ArraySplit(*idx.load_idx_split(path, split)) for split in idx.IDX_FILES}


def _load_npz(info: DatasetInfo, data_config: Any, path: str) -> dict[str, ArraySplit]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data.path={path!r}: no such .npz file.")
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    for key in ("images", "labels"):
        if key not in arrays:
            raise ConfigError(f"{path} has no {key!r} array (found: {', '.join(arrays)}).")
    train = _checked_split(path, "", arrays["images"], arrays["labels"])
    if "test_images" in arrays:
        test = _checked_split(path, "test_", arrays["test_images"], arrays["test_labels"])
        return {"train": train, "test": test}
    # No held-out arrays: the last `test_fraction` of the examples become the test split.
    train, test = split_off(train, data_config.test_fraction, "data.test_fraction")
    return {"train": train, "test": test}


def _checked_split(path: str, prefix: str, images: np.ndarray, labels: np.ndarray) -> ArraySplit:
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise ConfigError(
            f"{path}: `{prefix}images` must be uint8 of shape (N, H, W[, C]); "
            f"got {images.dtype} {images.shape}."
        )
    if images.ndim == 3:
        images = images[..., None]
    if not np.issubdtype(labels.dtype, np.integer) or labels.shape != images.shape[:1]:
        raise ConfigError(
            f"{path}: `{prefix}labels` must be integers of shape ({images.shape[0]},); "
            f"got {labels.dtype} {labels.shape}."
        )
    return ArraySplit(images, labels.astype(np.int32))


LOADERS: dict[str, Callable[[DatasetInfo, Any, str], dict[str, ArraySplit]]] = {
    "tfds": _load_tfds,
    "idx": _load_idx,
    "npz": _load_npz,
}


def split_off(split: ArraySplit, fraction: float, name: str) -> tuple[ArraySplit, ArraySplit]:
    """Keeps the first 1 - fraction, returns the last `fraction` as a held-out split (as Keras)."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"{name}={fraction} must be in [0, 1).")
    n_held = int(round(len(split) * fraction))
    cut = len(split) - n_held
    return split.take(slice(0, cut)), split.take(slice(cut, None))


def load_splits(data_config: Any) -> tuple[DatasetInfo, dict[str, ArraySplit]]:
    """Loads train/validation/test arrays; validation is carved from the end of train.

    `data.dataset='custom'` reads a local npz or IDX folder and derives the facts (class count,
    normalisation statistics) from its training images.
    """
    if data_config.dataset == "folder":
        return _load_folder_splits(data_config)
    custom = data_config.dataset == "custom"
    info = CUSTOM_PLACEHOLDER if custom else get_dataset_info(data_config.dataset)
    kind, path = resolve_source(data_config, info)
    if custom and kind == "tfds":
        raise ConfigError("data.dataset='custom' needs data.path (an .npz file or an IDX folder).")
    splits = LOADERS[kind](info, data_config, path)
    if custom:
        info = derive_info(splits["train"], data_config.num_classes)
    train, validation = split_off(
        splits["train"], data_config.validation_fraction, "data.validation_fraction"
    )
    splits = {"train": train, "validation": validation, "test": splits["test"]}
    _check_labels(splits, info)
    return info, splits


def _load_folder_splits(data_config: Any) -> tuple[DatasetInfo, dict[str, ArraySplit]]:
    folder = load_folder(data_config)
    splits = {name: ArraySplit(*arrays) for name, arrays in folder.splits.items()}
    info = derive_info(splits["train"], len(folder.class_names), folder.class_names, "folder")
    return info, splits


CUSTOM_PLACEHOLDER = DatasetInfo(
    name="custom", num_classes=0, image_shape=(0, 0, 0), mean=(), std=(), tfds_name=""
)


def derive_info(
    train: ArraySplit, num_classes: int, class_names: tuple[str, ...] = (), name: str = "custom"
) -> DatasetInfo:
    """Dataset facts for user arrays: statistics over the training images."""
    pixels = train.images.reshape(-1, train.images.shape[-1]).astype(np.float64) / 255.0
    return DatasetInfo(
        name=name,
        class_names=class_names,
        num_classes=num_classes or int(train.labels.max()) + 1,
        image_shape=tuple(train.images.shape[1:]),
        mean=tuple(pixels.mean(axis=0).tolist()),
        std=tuple(np.maximum(pixels.std(axis=0), 1e-3).tolist()),
        tfds_name="",
    )


def _check_labels(splits: dict[str, ArraySplit], info: DatasetInfo) -> None:
    for name, split in splits.items():
        if len(split) and (split.labels.min() < 0 or split.labels.max() >= info.num_classes):
            raise ConfigError(
                f"{name} labels span [{split.labels.min()}, {split.labels.max()}] but dataset "
                f"{info.name!r} has {info.num_classes} classes."
            )
