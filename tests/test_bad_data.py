"""Data files that would train on wrong data or print a traceback: each is converted exactly or
refused with one line (a `DataError`) that names the file, what is wrong and what to do.

Every file here is generated in tmp_path; the loaders are called directly (no training), and
one case goes through run.py to check that such an error is one `error:` line there too.
"""

import gzip
import os
import struct
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from flaxcls.data import idx, sources
from flaxcls.data.api import default_data_config
from flaxcls.errors import ConfigError, DataError
from flaxcls.testing.launch import ROOT

IDX_CODES = {
    np.dtype(k): v
    for k, v in {
        np.uint8: 0x08,
        np.int8: 0x09,
        ">i2": 0x0B,
        ">i4": 0x0C,
        ">f4": 0x0D,
        ">f8": 0x0E,
    }.items()
}


def _config(path, dataset="custom", **overrides):
    config = default_data_config()
    config.dataset = dataset
    config.path = str(path)
    config.update(overrides)
    return config


def _load(path, **overrides):
    return sources.load_splits(_config(path, **overrides))


def _refused(path, *expected, **overrides) -> str:
    """The one-line message with which loading `path` is refused; it holds each of `expected`."""
    with pytest.raises(DataError) as info:
        _load(path, **overrides)
    message = str(info.value)
    assert "\n" not in message, message
    for part in expected:
        assert part in message, message
    return message


def _images(n=40, size=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 1)).astype(np.uint8)


def _labels(n=40, classes=3, seed=0):
    return np.arange(n) % classes  # every class in every part of the split


def _npz(tmp_path, name="data.npz", **arrays) -> str:
    path = str(tmp_path / name)
    np.savez(path, **arrays)
    return path


def _idx_bytes(array, code) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.tobytes()


def _idx_folder(tmp_path, images, dtype=np.uint8, labels=None, gzipped=False) -> str:
    """MNIST-style IDX files: `images` (N, H, W) stored as `dtype` for both splits."""
    stored = np.asarray(images).astype(dtype)
    labels = _labels(len(images)).astype(np.uint8) if labels is None else labels
    for images_stem, labels_stem in idx.IDX_FILES.values():
        data = _idx_bytes(stored, IDX_CODES[stored.dtype])
        if gzipped:
            (tmp_path / (images_stem + ".gz")).write_bytes(gzip.compress(data))
        else:
            (tmp_path / images_stem).write_bytes(data)
        (tmp_path / labels_stem).write_bytes(_idx_bytes(labels, IDX_CODES[labels.dtype]))
    return str(tmp_path)


# --- pixels of other types: converted exactly, or refused by name -------------------------------


@pytest.mark.parametrize("dtype", [np.int8, ">i2", ">i4", ">f4", ">f8"])
def test_idx_pixels_of_any_type_in_0_255_convert_exactly(tmp_path, dtype):
    pixels = _images()[..., 0] // (2 if dtype == np.int8 else 1)
    _, splits = _load(_idx_folder(tmp_path, pixels, dtype))
    np.testing.assert_array_equal(splits["test"].images[..., 0], pixels)
    assert splits["test"].images.dtype == np.uint8


@pytest.mark.parametrize("dtype", [">i2", ">i4"])
def test_idx_pixels_over_255_are_refused_not_wrapped(tmp_path, dtype):
    pixels = _images()[..., 0].astype(np.int32) * 16  # 12-bit values: they wrapped to uint8
    _refused(_idx_folder(tmp_path, pixels, dtype), "train-images-idx3-ubyte", "4080", "0..255")


@pytest.mark.parametrize("dtype", [">f4", ">f8"])
def test_idx_float_pixels_on_a_0_1_scale_are_refused_not_zeroed(tmp_path, dtype):
    pixels = _images()[..., 0] / 255.0  # they became 0 (and 1 where 255)
    _refused(_idx_folder(tmp_path, pixels, dtype), "train-images-idx3-ubyte", "[0, 1]", "* 255")


def test_npz_integer_pixels_in_0_255_convert_exactly(tmp_path):
    images = _images()
    for dtype in (np.int64, np.uint16, np.float32):
        path = _npz(tmp_path, images=images.astype(dtype), labels=_labels())
        _, splits = _load(path, test_fraction=0.25)
        np.testing.assert_array_equal(splits["test"].images, images[30:])


@pytest.mark.parametrize(
    "case, images, expected",
    [
        ("0..1 floats", _images() / 255.0, "[0, 1]"),
        ("binary floats", (_images() > 127).astype(np.float32), "[0, 1]"),
        ("normalised floats", _images() / 64.0 - 2.0, "-2"),
        ("fractions in 0..255", _images() * 0.7, "whole numbers"),
        ("NaN", np.where(_images() > 250, np.nan, _images()), "NaN"),
        ("16-bit", _images().astype(np.uint16) * 257, "65535"),
        ("negative", _images().astype(np.int16) - 128, "-128"),
        ("bool", _images() > 127, "bool"),
    ],
)
def test_npz_pixels_that_are_ambiguous_or_out_of_range_are_refused(
    tmp_path, case, images, expected
):
    path = _npz(tmp_path, images=images, labels=_labels())
    _refused(path, path, "`images`", expected, "uint8")


# --- labels: in range, and a class count that fits in memory ------------------------------------


def test_labels_beyond_int32_are_refused_not_wrapped(tmp_path):
    labels = _labels().astype(np.int64) + 2**32  # wrapped to 0, 1, 2
    path = _npz(tmp_path, images=_images(), labels=labels)
    _refused(path, path, "`labels`", "4294967298")


def test_a_huge_label_is_refused_with_the_memory_of_the_head(tmp_path):
    labels = _labels()
    labels[5] = 10**9  # allocated a head of a billion outputs
    path = _npz(tmp_path, images=_images(), labels=labels)
    message = _refused(path, path, "1000000000", "GiB", "4 distinct")
    assert "renumber" in message


def test_an_explicit_class_count_over_the_limit_is_refused(tmp_path):
    path = _npz(tmp_path, images=_images(), labels=_labels())
    _refused(path, "data.num_classes=1000000000", "GiB", num_classes=10**9)


def test_negative_labels_are_refused_by_name(tmp_path):
    path = _npz(tmp_path, images=_images(), labels=_labels() - 1)
    _refused(path, path, "`labels`", "negative", "-1")


def test_float_labels_in_idx_are_refused(tmp_path):
    folder = _idx_folder(tmp_path, _images()[..., 0], labels=_labels().astype(">f4"))
    _refused(folder, "train-labels-idx1-ubyte", "integers")


# --- degenerate datasets: refused the same way by every source ---------------------------------


def test_one_class_is_refused_by_npz_as_by_folders(tmp_path):
    path = _npz(tmp_path, images=_images(), labels=np.zeros(40, np.int64))
    _refused(path, "at least two classes", path)


def test_one_class_is_refused_by_idx(tmp_path):
    folder = _idx_folder(tmp_path, _images()[..., 0], labels=np.full(40, 7, np.uint8))
    _refused(folder, "at least two classes", "7")


def test_one_class_is_refused_even_with_a_larger_class_count(tmp_path):
    path = _npz(tmp_path, images=_images(), labels=np.zeros(40, np.int64))
    _refused(path, "at least two classes", num_classes=10)


def test_an_empty_training_split_is_refused(tmp_path):
    path = _npz(tmp_path, images=_images()[:0], labels=_labels()[:0])
    _refused(path, "no training examples", path)


def test_an_empty_test_split_is_refused(tmp_path):
    images, labels = _images(), _labels()
    path = _npz(
        tmp_path, images=images, labels=labels, test_images=images[:0], test_labels=labels[:0]
    )
    _refused(path, "test split", "empty", path)


def test_a_test_fraction_that_rounds_to_nothing_is_refused(tmp_path):
    path = _npz(tmp_path, images=_images(4), labels=_labels(4))
    _refused(path, "test split", "data.test_fraction", validation_fraction=0.0)


# --- broken files: one line naming the file and the fix -----------------------------------------


def test_npz_test_images_without_test_labels(tmp_path):
    images, labels = _images(), _labels()
    path = _npz(tmp_path, images=images, labels=labels, test_images=images)
    _refused(path, path, "`test_images` but no `test_labels`")
    path = _npz(tmp_path, "other.npz", images=images, labels=labels, test_labels=labels)
    _refused(path, path, "`test_labels` but no `test_images`")


def test_an_empty_npz_archive(tmp_path):
    path = _npz(tmp_path)
    _refused(path, path, "no arrays", "np.savez")


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", "empty (0 bytes)"),
        (b"images,labels\n1,2\n", "not an .npz archive"),
        (b"PK\x03\x04 truncated zip", "not an .npz archive"),
    ],
)
def test_a_file_that_is_no_npz_archive(tmp_path, content, expected):
    path = tmp_path / "data.npz"
    path.write_bytes(content)
    _refused(path, str(path), expected, "np.savez")


def test_a_single_npy_array_named_npz(tmp_path):
    path = tmp_path / "data.npz"
    with open(path, "wb") as f:
        np.save(f, _images())
    _refused(path, str(path), "one .npy array", "np.savez")


def test_a_pickled_array_in_an_npz_is_refused_not_unpickled(tmp_path):
    images = np.empty(40, dtype=object)
    images[:] = list(_images())
    path = _npz(tmp_path, images=images, labels=_labels())
    _refused(path, path, "`images`", "pickled")


def test_a_pickled_array_the_loader_does_not_need_is_ignored(tmp_path):
    path = _npz(tmp_path, images=_images(), labels=_labels(), notes=np.array([{"a": 1}]))
    info, _ = _load(path)
    assert info.num_classes == 3


def test_a_truncated_gzip_idx_file(tmp_path):
    folder = _idx_folder(tmp_path, _images()[..., 0], gzipped=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-30])
    _refused(folder, str(path), "truncated", "download it again")


def test_a_gz_idx_file_that_is_not_gzip(tmp_path):
    folder = _idx_folder(tmp_path, _images()[..., 0], gzipped=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(b"<html>Not Found</html>")
    _refused(folder, str(path), "gzip")


# --- test images of another size: compared at the start -----------------------------------------


def test_test_images_of_another_size_are_refused_before_training(tmp_path):
    images, labels = _images(), _labels()
    path = _npz(
        tmp_path, images=images, labels=labels, test_images=_images(10, 10), test_labels=labels[:10]
    )
    _refused(path, "test images are 10x10x1", "training images are 8x8x1", path)


def test_test_images_with_other_channels_are_refused(tmp_path):
    images, labels = _images(), _labels()
    test = np.repeat(images[:10], 3, axis=-1)
    path = _npz(tmp_path, images=images, labels=labels, test_images=test, test_labels=labels[:10])
    _refused(path, "8x8x3", "8x8x1")


# --- folders: nothing dropped without a word ----------------------------------------------------


def _png(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((12, 12), value, np.uint8), "L").save(path)


def test_a_class_folder_named_with_leading_dots_is_named_not_dropped(tmp_path):
    for c, name in enumerate(["cat", "dog", "..owl"]):
        for i in range(5):
            _png(str(tmp_path / name / f"{i}.png"), 40 * c + i)
    os.makedirs(tmp_path / ".ipynb_checkpoints")  # no images: skipped without a word
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info, _ = _load(
            tmp_path,
            dataset="folder",
            image_size=12,
            validation_fraction=0.2,
            test_fraction=0.2,
        )
    assert info.class_names == ("cat", "dog")
    messages = [str(w.message) for w in caught if "hidden" in str(w.message)]
    assert len(messages) == 1, [str(w.message) for w in caught]
    assert str(tmp_path / "..owl") in messages[0] and "5 image" in messages[0]
    assert ".ipynb_checkpoints" not in messages[0]


# --- through run.py: one line, no traceback -----------------------------------------------------


def test_run_py_prints_a_bad_data_file_as_one_line(tmp_path):
    path = tmp_path / "data.npz"
    path.write_text("not an archive\n")
    result = subprocess.run(
        [
            sys.executable,
            "run.py",
            "--config=configs/default.py",
            f"--workdir={tmp_path / 'run'}",
            "--config.data.dataset=custom",
            f"--config.data.path={path}",
        ],
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and str(path) in lines[0] and "np.savez" in lines[0], result.stderr


def test_data_errors_are_config_errors():
    assert issubclass(DataError, ConfigError)  # run.py prints ConfigError as one line


def test_a_known_dataset_in_files_of_another_size_is_refused(tmp_path):
    """Fashion-MNIST read from an .npz whose images are not 28x28x1: the model would be built
    for the dataset's size and fed another."""
    images = np.random.default_rng(0).integers(0, 256, (40, 32, 32, 3)).astype(np.uint8)
    path = _npz(tmp_path, images=images, labels=np.arange(40) % 10)
    _refused(
        path,
        "32x32x3",
        "28x28x1",
        "fashion_mnist",
        "data.dataset=custom",
        dataset="fashion_mnist",
        source="npz",
    )


def test_labels_over_a_known_datasets_classes_name_the_file(tmp_path):
    images = _images(40, 28)
    path = _npz(tmp_path, images=images, labels=np.arange(40) % 12)
    _refused(path, path, "11", "10 classes", dataset="fashion_mnist", source="npz")
