"""Reader for the IDX format of the original MNIST and Fashion-MNIST files."""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from flaxcls.data import checks
from flaxcls.errors import DataError

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

# File stems of the original distribution, by split.
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str) -> np.ndarray:
    """Reads one IDX file (optionally gzipped) into an array of its stored shape."""
    if path.endswith(".gz"):
        try:
            with gzip.open(path, "rb") as f:
                data = f.read()
        except (EOFError, gzip.BadGzipFile, zlib.error) as e:
            raise DataError(
                f"{path} is truncated or not a gzip file ({e}): download it again, or check it "
                f"with `gzip -t {path}`."
            ) from None
    else:
        with open(path, "rb") as f:
            data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number).")
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(
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
    """Returns (images uint8 NHWC, labels int32) of the `train` or `test` split in `directory`.

    Pixels of any IDX type convert only when exactly (see `checks.pixels`), labels only when
    they are class indices (`checks.class_labels`); anything else is a `DataError`."""
    images_stem, labels_stem = IDX_FILES[split]
    images_path, labels_path = _find(directory, images_stem), _find(directory, labels_stem)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim not in (3, 4) or labels.ndim != 1:
        raise DataError(
            f"{images_path} holds shape {images.shape} and {labels_path} {labels.shape}: "
            "expected images (N, H, W[, C]) and labels (N,)."
        )
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{directory}: {images.shape[0]} {split} images but {labels.shape[0]} labels."
        )
    images = checks.pixels(images, images_path)
    labels = checks.class_labels(labels, f"the labels of {labels_path}")
    return (images[..., None] if images.ndim == 3 else images), labels


def has_idx_files(directory: str) -> bool:
    try:
        for split in IDX_FILES:
            for stem in IDX_FILES[split]:
                _find(directory, stem)
    except FileNotFoundError:
        return False
    return True
