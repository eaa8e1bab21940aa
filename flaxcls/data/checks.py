"""What every array source checks before training: pixels that convert exactly to uint8, labels
that are class indices, and a dataset a classifier can learn from.

Nothing is wrapped, clipped, rescaled or guessed: a value that has no exact uint8 or int32 form,
or whose scale is ambiguous, is a `DataError` that names the file and array, says what is wrong
and how to save the data instead.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from flaxcls.data.contract import ArraySplit
from flaxcls.errors import DataError

# The most classes flaxcls trains: more is, in practice, labels that are ids rather than class
# indices, and a final layer whose allocation stalls the run.
MAX_CLASSES = 100_000
_SAVE_UINT8 = "save the pixels as uint8 0..255"


def _span(values: np.ndarray) -> str:
    return f"[{_number(values.min())}, {_number(values.max())}]"


def _number(value) -> str:
    value = value.item() if hasattr(value, "item") else value
    return f"{value:g}" if isinstance(value, float) else str(value)


def pixels(images: np.ndarray, what: str) -> np.ndarray:
    """`images` as uint8, converted only when that is exact: integers in 0..255, or floats whose
    values are whole numbers in 0..255 (and not all within [0, 1], where the scale is
    ambiguous). `what` names the array in messages, e.g. "data.npz: `images`"."""
    dtype = images.dtype
    if dtype == np.uint8:
        return images
    if dtype == np.bool_:
        raise DataError(
            f"{what} is bool: is True 1 or 255? flaxcls takes uint8 pixels: {_SAVE_UINT8} "
            "(e.g. images.astype(np.uint8) * 255)."
        )
    if np.issubdtype(dtype, np.integer):
        if images.size and (images.min() < 0 or images.max() > 255):
            raise DataError(
                f"{what} is {dtype.name} with values in {_span(images)}, outside 0..255, which "
                f"uint8 cannot hold: {_SAVE_UINT8} (16-bit images: images // 257; other ranges: "
                "rescale them)."
            )
        return images.astype(np.uint8)
    if not np.issubdtype(dtype, np.floating):
        raise DataError(f"{what} is {dtype}, not pixels: {_SAVE_UINT8}.")
    if images.size == 0:
        return images.astype(np.uint8)
    finite = np.isfinite(images)
    if not finite.all():
        bad = int(images.size - np.count_nonzero(finite))
        raise DataError(
            f"{what} holds {bad} NaN or infinite value(s), which have no pixel value: fix or "
            f"drop those images and {_SAVE_UINT8}."
        )
    low, high = images.min(), images.max()
    if low >= 0 and high <= 1:
        raise DataError(
            f"{what} is {dtype.name} with every value in [0, 1]: a 0..1 scale or dark 0..255 "
            f"pixels? flaxcls takes uint8 pixels: {_SAVE_UINT8}, e.g. "
            "np.round(images * 255).astype(np.uint8) for a 0..1 scale."
        )
    if low < 0 or high > 255:
        raise DataError(
            f"{what} is {dtype.name} with values in {_span(images)}, outside 0..255 (normalised "
            f"images? flaxcls normalises them itself): {_SAVE_UINT8}."
        )
    if not np.array_equal(images, np.round(images)):
        raise DataError(
            f"{what} is {dtype.name} with values that are not whole numbers in 0..255, so there "
            f"is no exact uint8 form: {_SAVE_UINT8}, e.g. np.round(images).astype(np.uint8)."
        )
    return images.astype(np.uint8)


def head_bytes_per_feature(num_classes: int) -> str:
    """What one input feature of a final layer with `num_classes` outputs costs in float32."""
    return f"{num_classes * 4 * 1000 / 2**30:.1f} GiB per 1,000 input features"


def class_labels(labels: np.ndarray, what: str) -> np.ndarray:
    """`labels` as int32 class indices, refused when they are not integers, are negative, or
    make more than MAX_CLASSES classes (where int32 would wrap too)."""
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{what} are {labels.dtype}, not integers: labels are class indices 0..K-1; save "
            "them as an integer array."
        )
    if not labels.size:
        return labels.astype(np.int32)
    low, high = labels.min(), labels.max()
    if low < 0:
        count = int(np.count_nonzero(labels < 0))
        raise DataError(
            f"{what} hold {count} negative value(s) (the lowest is {_number(low)}): labels are "
            "class indices 0..K-1; drop unlabelled examples or renumber the classes."
        )
    if high >= MAX_CLASSES:
        distinct = len(np.unique(labels))
        raise DataError(
            f"{what} hold the label {_number(high)}, which makes {int(high) + 1:,} classes, over "
            f"the {MAX_CLASSES:,} flaxcls trains (its final layer alone would take "
            f"{head_bytes_per_feature(int(high) + 1)}); {distinct} distinct labels are used: "
            "renumber them 0..K-1, e.g. np.unique(labels, return_inverse=True)[1]."
        )
    return labels.astype(np.int32)


def class_count(num_classes: int, where: str) -> None:
    """An explicit class count that fits in memory."""
    if num_classes > MAX_CLASSES:
        raise DataError(
            f"data.num_classes={num_classes} for {where} is over the {MAX_CLASSES:,} classes "
            f"flaxcls trains (the final layer alone would take "
            f"{head_bytes_per_feature(num_classes)}); set the number of classes the labels use."
        )


def learnable(splits: Mapping[str, ArraySplit], where: str) -> None:
    """Refuses a dataset a classifier cannot learn from, whatever its source: no training
    examples, an empty test split, one class, or splits whose images differ in size."""
    train = splits["train"]
    if not len(train):
        raise DataError(
            f"{where} has no training examples: the training split is empty; add examples."
        )
    classes = np.unique(train.labels)
    if len(classes) < 2:
        raise DataError(
            f"at least two classes are needed to train a classifier; the training labels of "
            f"{where} hold one: {int(classes[0])}."
        )
    shape = tuple(train.images.shape[1:])
    for name, split in splits.items():
        other = tuple(split.images.shape[1:])
        if other != shape:
            raise DataError(
                f"{name} images are {_shape(other)} but training images are {_shape(shape)} in "
                f"{where}: every split needs images of one size; resize them to match."
            )
    if "test" in splits and not len(splits["test"]):
        raise DataError(
            f"the test split of {where} is empty; add test examples (or, without test arrays "
            "of their own, raise data.test_fraction)."
        )


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)
