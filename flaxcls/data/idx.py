"""Reader for the IDX format of the original MNIST and Fashion-MNIST files."""

from __future__ import annotations

import gzip
import os

import numpy as np

from flaxcls.errors import ConfigError

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

# File stems of the original distribution, by split.
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str) -> np.ndarray:
    """Reads one IDX file (optionally gzipped) into an array of its stored shape."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ConfigError(f"{path} is not an IDX file (bad magic number).")
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise ConfigError(
            f"{path} is truncated or corrupt: header says shape {shape} "
            f"({expected} bytes) but the file holds {len(data)} bytes."
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def _find(directory: str, stem: str) -> str:
    for name in (stem + ".gz", stem):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"Neither {stem}.gz nor {stem} found in {directory}.")


def load_idx_split(directory: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Returns (images uint8 NHWC, labels int32) of the `train` or `test` split in `directory`."""
    images_stem, labels_stem = IDX_FILES[split]
    images = read_idx(_find(directory, images_stem))
    labels = read_idx(_find(directory, labels_stem)).astype(np.int32)
    if images.shape[0] != labels.shape[0]:
        raise ConfigError(
            f"{directory}: {images.shape[0]} {split} images but {labels.shape[0]} labels."
        )
    return images.reshape(images.shape + (1,)).astype(np.uint8), labels


def has_idx_files(directory: str) -> bool:
    try:
        for split in IDX_FILES:
            for stem in IDX_FILES[split]:
                _find(directory, stem)
    except FileNotFoundError:
        return False
    return True
