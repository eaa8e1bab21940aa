"""Image-folder datasets: a root with one sub-folder per class, or `train/`, `val/` (or
`validation/`) and `test/` folders that each hold the class folders.

Every image is decoded with Pillow (JPEG, PNG, BMP, GIF, WebP; grayscale, RGBA and palette
images converted), resized to `data.image_size` and held in memory as uint8. A folder without
split sub-folders is split per class (stratified) with the run's seed, the same on every run.
Unreadable files are an error that names them, or, with `data.skip_corrupt`, a warning that
lists what was skipped; an empty class folder is always an error.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from flaxcls.errors import ConfigError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
SPLIT_FOLDERS = {"train": ("train",), "validation": ("val", "validation"), "test": ("test",)}
# Pillow refuses images above this many pixels (its decompression-bomb guard) before decoding.
MAX_IMAGE_PIXELS = 64_000_000


class CorruptImageError(ConfigError):
    """Files that could not be read as images; the message names them."""


@dataclasses.dataclass(frozen=True)
class FolderDataset:
    class_names: tuple[str, ...]
    splits: dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (uint8 NHWC images, labels)
    skipped: tuple[str, ...] = ()


def _list_images(directory: str) -> list[str]:
    return sorted(
        os.path.join(directory, name)
        for name in os.listdir(directory)
        if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")
    )


def _class_folders(root: str) -> list[str]:
    return sorted(
        name
        for name in os.listdir(root)
        if os.path.isdir(os.path.join(root, name)) and not name.startswith(".")
    )


def decode_image(path: str, size: int | tuple[int, int], channels: int) -> np.ndarray:
    """One image file as uint8 HWC, resized to `size` ((height, width) or a side), with 1 or 3
    channels; images over MAX_IMAGE_PIXELS are refused before they are decoded."""
    from PIL import Image

    height, width = (size, size) if isinstance(size, int) else size
    with Image.open(path) as image:  # reads the header only
        if image.size[0] * image.size[1] > MAX_IMAGE_PIXELS:
            raise ValueError(
                f"{image.size[0]}x{image.size[1]} pixels is over the {MAX_IMAGE_PIXELS:,} allowed "
                "(a decompression bomb?); refused before decoding"
            )
        image.load()  # decode now: truncated files fail here, not later
        if image.mode in ("P", "PA", "LA", "RGBA", "I;16", "I", "F", "CMYK", "YCbCr", "1"):
            image = image.convert("RGBA" if "A" in image.mode or image.mode == "P" else "RGB")
        if image.mode == "RGBA":  # alpha composited on white, as viewers show it
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, image)
        image = image.convert("L" if channels == 1 else "RGB")
        image = image.resize((width, height), Image.Resampling.BILINEAR)
        array = np.asarray(image, np.uint8)
    return array[..., None] if channels == 1 else array


def _decode_all(
    paths: Sequence[str], size: int, channels: int
) -> tuple[list[np.ndarray | None], list[tuple[str, str]]]:
    def one(path: str):
        try:
            return decode_image(path, size, channels), None
        except Exception as e:  # noqa: BLE001 - any decoder failure names the file
            return None, f"{type(e).__name__}: {e}"

    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        results = list(pool.map(one, paths))
    failures = [(p, err) for p, (_, err) in zip(paths, results, strict=True) if err]
    return [image for image, _ in results], failures


def _scan(root: str, class_names: Sequence[str] | None) -> tuple[list[str], list[str], list[int]]:
    """(class names, files, labels) of one folder of class folders."""
    names = list(class_names) if class_names is not None else _class_folders(root)
    if not names:
        raise ConfigError(f"{root} has no class folders: expected {root}/<class>/<image files>.")
    files, labels = [], []
    empty = []
    for label, name in enumerate(names):
        directory = os.path.join(root, name)
        found = _list_images(directory) if os.path.isdir(directory) else []
        if not found:
            empty.append(directory)
        files += found
        labels += [label] * len(found)
    if empty:
        raise ConfigError(
            f"class folders without images ({', '.join(IMAGE_EXTENSIONS)}): {', '.join(empty)}"
        )
    return names, files, labels


def stratified_split(
    labels: np.ndarray, fractions: dict[str, float], seed: int
) -> dict[str, np.ndarray]:
    """Indices per split: within each class a seeded shuffle, then `fractions` of it held out
    (rounded, at least one example per class when the fraction is > 0); the rest is `train`."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[int]] = {name: [] for name in ("train", *fractions)}
    for label in np.unique(labels):
        members = rng.permutation(np.nonzero(labels == label)[0])
        held = {
            name: max(1, int(round(f * len(members)))) if f > 0 else 0
            for name, f in fractions.items()
        }
        if sum(held.values()) >= len(members):
            raise ConfigError(
                f"class {int(label)} has {len(members)} images: too few for a split that holds "
                f"out {held}; add images or lower data.validation_fraction / data.test_fraction."
            )
        start = 0
        for name, count in held.items():
            out[name] += members[start : start + count].tolist()
            start += count
        out["train"] += members[start:].tolist()
    return {name: np.sort(np.asarray(index, np.int64)) for name, index in out.items()}


def _detect_channels(paths: Sequence[str]) -> int:
    """1 when every sampled image is grayscale, else 3."""
    from PIL import Image

    for path in paths[:: max(1, len(paths) // 64)]:
        try:
            with Image.open(path) as image:
                if image.mode not in ("L", "1", "I;16", "I", "LA"):
                    return 3
        except Exception:  # noqa: BLE001 - decoding reports it properly later
            continue
    return 1


def _split_files(data_config: Any) -> tuple[list[str], dict[str, tuple[list, list]]]:
    """Class names and (files, labels) per split: the split folders as given, and a stratified
    seeded split of the training files for any split without a folder."""
    root = data_config.path
    present = {
        split: os.path.join(root, folder)
        for split, folders in SPLIT_FOLDERS.items()
        for folder in folders
        if os.path.isdir(os.path.join(root, folder))
    }
    if "train" in present:
        names, files, labels = _scan(present["train"], None)
        per_split = {"train": (files, labels)}
        for split in ("validation", "test"):
            if split in present:
                _, f, lab = _scan(present[split], names)
                per_split[split] = (f, lab)
        fractions = {
            split: getattr(data_config, f"{split}_fraction")
            for split in ("validation", "test")
            if split not in present
        }
    else:
        names, files, labels = _scan(root, None)
        per_split = {"train": (files, labels)}
        fractions = {
            "validation": data_config.validation_fraction,
            "test": data_config.test_fraction,
        }
    if fractions:
        train_files, train_labels = per_split["train"]
        index = stratified_split(np.asarray(train_labels), fractions, data_config.split_seed)
        for split, rows in index.items():
            per_split[split] = ([train_files[i] for i in rows], [train_labels[i] for i in rows])
    return names, per_split


def load_folder(data_config: Any) -> FolderDataset:
    """The dataset under `data_config.path`, resized to `image_size` x `image_size`."""
    root = data_config.path
    if not root or not os.path.isdir(root):
        raise FileNotFoundError(f"data.path={root!r}: no such folder of class folders.")
    names, per_split = _split_files(data_config)
    channels = data_config.channels or _detect_channels(per_split["train"][0])
    decoded, failures = {}, []
    for split, (split_files, _) in per_split.items():
        decoded[split], split_failures = _decode_all(split_files, data_config.image_size, channels)
        failures += split_failures
    if failures and not data_config.skip_corrupt:
        listing = "; ".join(f"{path} ({err})" for path, err in failures[:20])
        more = f" and {len(failures) - 20} more" if len(failures) > 20 else ""
        raise CorruptImageError(
            f"{len(failures)} unreadable image file(s): {listing}{more}. Remove or replace "
            "them, or set --config.data.skip_corrupt=True to skip them with a warning."
        )
    skipped = [path for path, _ in failures]
    splits = {}
    empty = np.zeros((0, data_config.image_size, data_config.image_size, channels), np.uint8)
    for split, (_, split_labels) in per_split.items():
        images = decoded[split]
        keep = [i for i, image in enumerate(images) if image is not None]
        stacked = np.stack([images[i] for i in keep]) if keep else empty
        splits[split] = (stacked, np.asarray([split_labels[i] for i in keep], np.int32))
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} unreadable image file(s): {', '.join(skipped)}", stacklevel=2
        )
    return FolderDataset(tuple(names), splits, tuple(skipped))
