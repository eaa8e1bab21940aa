"""Where images come from, as one registry: `SOURCES` maps a name to its loader.

`tfds`, `idx` and `npz` read a dataset flaxcls knows (`data.dataset` in DATASETS, selected by
`data.source`); `custom` (arrays in an .npz file or an IDX folder) and `folder` (image files in
class folders) read your own images, selected by `data.dataset`, and derive the dataset facts
from them. Every in-memory source yields the same thing, an `ArraySplit` of uint8 NHWC images and
int32 labels per split, so that splitting, augmentation and batching are written once.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

from flaxcls.data import checks, idx
from flaxcls.data.contract import ArraySplit, DatasetInfo
from flaxcls.data.datasets import DATASETS, get_dataset_info
from flaxcls.data.folder import load_folder
from flaxcls.errors import ConfigError, DataError


class DatasetNotPreparedError(RuntimeError):
    """A tfds dataset is not on disk and downloading was not asked for."""


@dataclasses.dataclass(frozen=True)
class Loaded:
    """What a source yields: the dataset facts and its splits."""

    info: DatasetInfo
    # train and test; validation too when the source has its own (else it is carved from train)
    splits: dict[str, ArraySplit]


@dataclasses.dataclass(frozen=True)
class Source:
    """A loader, and how a config selects it."""

    load: Callable[[Any], Loaded]  # data config -> facts and splits
    # True: selected by data.dataset (your own images, facts derived from them);
    # False: by data.source, for a dataset flaxcls knows.
    own_data: bool = False


def import_tfds() -> Any:
    """tensorflow_datasets, which is an extra: without it, what to install or to use instead."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise ConfigError(
            "reading a dataset through tfds needs tensorflow-datasets, which this install lacks: "
            "pip install 'flaxcls[tfds]', or train from local files (IDX, npz or an image "
            "folder: --config.data.source=idx --config.data.path=DIR, see BUILD.md)."
        ) from None
    return tfds


def tfds_builder(info: DatasetInfo, data_config: Any):
    """A tfds builder whose data is on disk; fails at once (never waits on the network) if not."""
    tfds = import_tfds()

    builder = tfds.builder(info.tfds_name, data_dir=data_config.data_dir or None)
    # is_prepared() warns about a version folder that is not there: look for it first
    if builder.data_path.exists() and builder.is_prepared():
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


def _load_tfds(data_config: Any) -> Loaded:
    tfds = import_tfds()

    info = get_dataset_info(data_config.dataset)
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
    return Loaded(info, splits)


def _installed_idx_dir(info: DatasetInfo) -> str:
    """The first folder where a system package installed the dataset's IDX files, or ''."""
    return next((d for d in info.local_idx_dirs if idx.has_idx_files(d)), "")


def _load_idx(data_config: Any) -> Loaded:
    info = get_dataset_info(data_config.dataset)
    return Loaded(info, _read_idx(data_config.path or _installed_idx_dir(info), data_config))


def _load_npz(data_config: Any) -> Loaded:
    return Loaded(get_dataset_info(data_config.dataset), _read_npz(data_config.path, data_config))


def _load_custom(data_config: Any) -> Loaded:
    """Arrays of your own: an .npz file or an IDX folder (`data.source`, or told by the path)."""
    path = data_config.path
    kind = data_config.source if data_config.source != "auto" else _file_kind(path)
    if not path or kind not in FILE_READERS:
        raise ConfigError("data.dataset='custom' needs data.path (an .npz file or an IDX folder).")
    splits = FILE_READERS[kind](path, data_config)
    checks.class_count(data_config.num_classes, path)
    checks.learnable(splits, path)  # before the statistics of the training images
    return Loaded(derive_info(splits["train"], data_config.num_classes), splits)


def _load_folder(data_config: Any) -> Loaded:
    folder = load_folder(data_config)
    splits = {name: ArraySplit(*arrays) for name, arrays in folder.splits.items()}
    info = derive_info(splits["train"], len(folder.class_names), folder.class_names, "folder")
    return Loaded(info, splits)


def _file_kind(path: str) -> str:
    return "npz" if path.endswith(".npz") else "idx"


def _read_idx(path: str, data_config: Any) -> dict[str, ArraySplit]:
    if not idx.has_idx_files(path):
        raise FileNotFoundError(
            f"No MNIST-style IDX files in {path!r}: expected train-images-idx3-ubyte[.gz], "
            "train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz] and "
            "t10k-labels-idx1-ubyte[.gz]."
        )
    return {split: ArraySplit(*idx.load_idx_split(path, split)) for split in idx.IDX_FILES}


def _read_npz(path: str, data_config: Any) -> dict[str, ArraySplit]:
    arrays, names = _npz_arrays(path)
    for key in ("images", "labels"):
        if key not in arrays:
            found = ", ".join(f"`{k}`" for k in names)
            raise DataError(f"{path} has no `{key}` array (it holds {found}); {_NPZ_LAYOUT}")
    has_test = {key: key in arrays for key in ("test_images", "test_labels")}
    if any(has_test.values()) and not all(has_test.values()):
        given, missing = ("test_images", "test_labels")[:: 1 if has_test["test_images"] else -1]
        raise DataError(
            f"{path} has `{given}` but no `{missing}`: save both, or neither (then the last "
            "data.test_fraction of the examples is the test split)."
        )
    train = _checked_split(path, "", arrays["images"], arrays["labels"])
    if all(has_test.values()):
        test = _checked_split(path, "test_", arrays["test_images"], arrays["test_labels"])
        return {"train": train, "test": test}
    # No held-out arrays: the last `test_fraction` of the examples become the test split.
    train, test = split_off(train, data_config.test_fraction, "data.test_fraction")
    return {"train": train, "test": test}


_NPZ_LAYOUT = (
    "save the arrays with np.savez(path, images=uint8 NHWC, labels=int class indices"
    "[, test_images=..., test_labels=...])."
)
_NPZ_KEYS = ("images", "labels", "test_images", "test_labels")


def _npz_arrays(path: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """The arrays of the .npz file at `path` that flaxcls reads (`_NPZ_KEYS`; others, pickled or
    huge, are never read) and the names of all it holds; a file that is no .npz archive, or an
    array of pickled objects, is a DataError that says how to save the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data.path={path!r}: no such .npz file.")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path} is empty (0 bytes): {_NPZ_LAYOUT}")
    try:
        archive = np.load(path, allow_pickle=False, mmap_mode="r")
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataError(f"{path} holds one .npy array, not an .npz archive: {_NPZ_LAYOUT}")
        with archive:
            names = list(archive.files)
            if not names:
                raise DataError(f"{path} holds no arrays: {_NPZ_LAYOUT}")
            arrays = {}
            for key in names:
                if key not in _NPZ_KEYS:
                    continue
                try:
                    arrays[key] = archive[key]
                except ValueError as e:
                    if "allow_pickle" not in str(e):
                        raise
                    raise DataError(
                        f"{path}: `{key}` holds pickled Python objects, which flaxcls does not "
                        f"unpickle (unsafe): {_NPZ_LAYOUT}"
                    ) from None
    except DataError:
        raise
    except ValueError:  # numpy found neither a zip nor a .npy header, and tried unpickling
        raise DataError(
            f"{path} is not an .npz archive (nor a .npy array): {_NPZ_LAYOUT}"
        ) from None
    except (EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(
            f"{path} is not an .npz archive numpy can read, truncated or damaged "
            f"({type(e).__name__}: {str(e)[:100]}): copy it again, or {_NPZ_LAYOUT}"
        ) from None
    return arrays, names


# The file formats of `custom`: path, data config -> train and test splits.
FILE_READERS: dict[str, Callable[[str, Any], dict[str, ArraySplit]]] = {
    "idx": _read_idx,
    "npz": _read_npz,
}


def _checked_split(path: str, prefix: str, images: np.ndarray, labels: np.ndarray) -> ArraySplit:
    if images.ndim not in (3, 4):
        raise DataError(
            f"{path}: `{prefix}images` must be uint8 of shape (N, H, W[, C]); "
            f"got {images.dtype} {images.shape}."
        )
    images = checks.pixels(images, f"{path}: `{prefix}images`")
    if images.ndim == 3:
        images = images[..., None]
    if labels.shape != images.shape[:1]:
        raise DataError(
            f"{path}: `{prefix}labels` must be integers of shape ({images.shape[0]},); "
            f"got {labels.dtype} {labels.shape}."
        )
    return ArraySplit(images, checks.class_labels(labels, f"{path}: `{prefix}labels`"))


SOURCES: dict[str, Source] = {
    "tfds": Source(_load_tfds),
    "idx": Source(_load_idx),
    "npz": Source(_load_npz),
    "custom": Source(_load_custom, own_data=True),
    "folder": Source(_load_folder, own_data=True),
}


def source_name(data_config: Any) -> str:
    """The SOURCES entry a data config selects.

    `data.dataset` names it for your own images; for a dataset flaxcls knows `data.source` does,
    and `auto` prefers a given path (.npz file or IDX folder), then IDX files a system package
    installed, then tfds.
    """
    own = SOURCES.get(data_config.dataset)
    if own is not None and own.own_data:
        return data_config.dataset
    info = get_dataset_info(data_config.dataset)  # an unknown name lists the known ones
    source = data_config.source
    if source == "auto":
        if data_config.path:
            return _file_kind(data_config.path)
        return "idx" if _installed_idx_dir(info) else "tfds"
    if source not in SOURCES or SOURCES[source].own_data:
        known = [name for name, s in SOURCES.items() if not s.own_data]
        raise ConfigError(f"data.source={source!r}; choose one of auto, {', '.join(known)}.")
    return source


def streamed(data_config: Any) -> bool:
    """Whether the dataset is too big for memory and is read with tf.data instead."""
    info = DATASETS.get(data_config.dataset)
    return info is not None and info.streaming


def load_splits(data_config: Any) -> tuple[DatasetInfo, dict[str, ArraySplit]]:
    """Loads train/validation/test arrays through the configured source; without a validation
    split of its own, validation is carved from the end of train."""
    loaded = SOURCES[source_name(data_config)].load(data_config)
    splits = loaded.splits
    if "validation" not in splits:
        train, validation = split_off(
            splits["train"], data_config.validation_fraction, "data.validation_fraction"
        )
        splits = {"train": train, "validation": validation, "test": splits["test"]}
    where = data_config.path or f"dataset {loaded.info.name!r}"
    checks.learnable(splits, where)
    if not SOURCES[source_name(data_config)].own_data:
        _check_known_shape(splits["train"], loaded.info, where)
    _check_labels(splits, loaded.info, where)
    return loaded.info, splits


def split_off(split: ArraySplit, fraction: float, name: str) -> tuple[ArraySplit, ArraySplit]:
    """Keeps the first 1 - fraction, returns the last `fraction` as a held-out split (as Keras)."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"{name}={fraction} must be in [0, 1).")
    n_held = int(round(len(split) * fraction))
    cut = len(split) - n_held
    return split.take(slice(0, cut)), split.take(slice(cut, None))


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


def _check_known_shape(train: ArraySplit, info: DatasetInfo, where: str) -> None:
    """Files of a dataset flaxcls knows hold images of its size: the model is built for it."""
    shape = tuple(train.images.shape[1:])
    if shape != tuple(info.image_shape):
        size = "x".join(map(str, shape))
        known = "x".join(map(str, info.image_shape))
        raise DataError(
            f"{where} holds {size} images but {info.name} has {known} ones: for images of your "
            "own, set data.dataset=custom (an .npz file or IDX folder) or data.dataset=folder."
        )


def _check_labels(splits: dict[str, ArraySplit], info: DatasetInfo, where: str) -> None:
    for name, split in splits.items():
        if len(split) and (split.labels.min() < 0 or split.labels.max() >= info.num_classes):
            raise DataError(
                f"{name} labels of {where} span [{split.labels.min()}, {split.labels.max()}] but "
                f"dataset {info.name!r} has {info.num_classes} classes: fix the labels, or train "
                "on classes of your own with data.dataset=custom."
            )
