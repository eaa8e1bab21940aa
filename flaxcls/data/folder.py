"""Image-folder datasets: a root with one sub-folder per class, or `train/`, `val/` (or
`validation/`) and `test/` folders that each hold the class folders.

Every image is decoded with Pillow (JPEG, PNG, BMP, GIF, WebP, TIFF), converted to 8-bit
grayscale or RGB (see `decode_image` for the rules), resized to `data.image_size` and held in
memory as uint8. Large images are decoded at reduced scale where the format allows it and never
more than `MAX_IMAGE_PIXELS` pixels at once across threads. A folder without split sub-folders is
split per class (stratified) with the run's seed, the same on every run.

Only regular files (or links to them) are opened: named pipes, sockets, devices and folders
named like images are skipped with a warning that names them. Unreadable files are an error that
names them, or, with `data.skip_corrupt`, a warning that lists what was skipped. Hidden
folders (a leading dot) are no classes; one that holds image files is named in a warning. A
dataset a classifier cannot learn from is an error that says why: fewer than two class folders, a
class folder without image files, or a class left without readable training images.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import os
import stat
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

import numpy as np

from flaxcls.errors import ConfigError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SPLIT_FOLDERS = {"train": ("train",), "validation": ("val", "validation"), "test": ("test",)}
# Pillow refuses images above this many pixels (its decompression-bomb guard) before decoding.
MAX_IMAGE_PIXELS = 64_000_000
# Modes with a faithful conversion to 8-bit L or RGB; others (e.g. CIELab "LAB") are refused.
_KNOWN_MODES = {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"}
_KNOWN_MODES |= {"HSV", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"}
_GRAY_MODES = {"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"}
_SPECIAL_KINDS: tuple[tuple[Callable[[int], bool], str], ...] = (
    (stat.S_ISDIR, "folder"),
    (stat.S_ISFIFO, "named pipe"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
)


class CorruptImageError(ConfigError):
    """Files that could not be read as images; the message names them."""


@dataclasses.dataclass(frozen=True)
class FolderDataset:
    class_names: tuple[str, ...]
    splits: dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (uint8 NHWC images, labels)
    skipped: tuple[str, ...] = ()


class _PixelBudget:
    """Caps the pixels being decoded at once across threads, so that a folder of huge images is
    decoded a few at a time instead of all together; one image over the cap still goes alone."""

    def __init__(self) -> None:
        self._used = 0
        self._free = threading.Condition()

    @contextlib.contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        with self._free:
            self._free.wait_for(lambda: not self._used or self._used + pixels <= MAX_IMAGE_PIXELS)
            self._used += pixels
        try:
            yield
        finally:
            with self._free:
                self._used -= pixels
                self._free.notify_all()


_DECODING = _PixelBudget()


def _special_kind(mode: int) -> str | None:
    """None for a regular file, else what it is, for messages."""
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _SPECIAL_KINDS if test(mode)), "special file")


def _open_nonblocking(path: str, flags: int) -> int:
    return os.open(path, flags | getattr(os, "O_NONBLOCK", 0))


def _open_regular(path: str) -> IO[bytes]:
    """`path` opened for reading, only if it is a regular file (or a link to one): opening a named
    pipe blocks until something writes to it, and devices and sockets are no images. The check
    runs before the open and again on the opened file, in case the path was swapped between."""
    kind = _special_kind(os.stat(path).st_mode)
    if not kind:
        file = open(path, "rb", opener=_open_nonblocking)
        kind = _special_kind(os.fstat(file.fileno()).st_mode)
        if not kind:
            return file
        file.close()
    raise ValueError(f"a {kind}, not a regular file; only regular files are read")


def _list_images(directory: str) -> tuple[list[str], list[tuple[str, str]]]:
    """(image files, [(path, kind)] of entries named like images that are not regular files)."""
    images, special = [], []
    for name in sorted(os.listdir(directory)):
        if name.startswith(".") or not name.lower().endswith(IMAGE_EXTENSIONS):
            continue
        path = os.path.join(directory, name)
        try:
            kind = _special_kind(os.stat(path).st_mode)
        except OSError:  # a dangling link: decoding reports it as unreadable
            kind = None
        if kind:
            special.append((path, kind))
        else:
            images.append(path)
    return images, special


def _class_folders(root: str) -> list[str]:
    return sorted(
        name
        for name in os.listdir(root)
        if os.path.isdir(os.path.join(root, name)) and not name.startswith(".")
    )


def _warn_hidden_folders(root: str) -> None:
    """Hidden folders (a name that starts with a dot, `..owl` too) are not classes; one that
    holds image files is named in a warning, so that no class is dropped without a word."""
    hidden = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if name.startswith(".") and os.path.isdir(path):
            try:
                count = sum(1 for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS))
            except OSError:  # an unreadable hidden folder (a trash can) is no class either
                continue
            if count:
                hidden.append(f"{path} ({count} image file(s))")
    if hidden:
        warnings.warn(
            f"skipped hidden folder(s) that hold image files, not taken as classes: "
            f"{', '.join(hidden)}; rename them without the leading dot to train on them.",
            stacklevel=3,
        )


def _check_header(image: Any) -> None:
    """Refuses, before anything is decoded, images too large to decode safely and modes without
    a faithful conversion to 8-bit grayscale or RGB."""
    if image.size[0] * image.size[1] > MAX_IMAGE_PIXELS:
        raise ValueError(
            f"{image.size[0]}x{image.size[1]} pixels is over the {MAX_IMAGE_PIXELS:,} allowed "
            "(a decompression bomb?); refused before decoding"
        )
    if image.mode not in _KNOWN_MODES:
        raise ValueError(
            f"image mode {image.mode!r} has no faithful conversion to grayscale or RGB; "
            "convert the file to 8-bit RGB first"
        )


def _draft(image: Any, width: int, height: int) -> tuple[int, int]:
    """The size the opened `image` will decode at: JPEGs are decoded at 1/2, 1/4 or 1/8 scale
    when that still leaves twice the target size (so a huge photo never exists at full size in
    memory); other formats decode at full size."""
    image.draft(None, (2 * width, 2 * height))
    return image.size


def _intensity_scale(image: Any) -> float | None:
    """The factor that maps a 16-bit or float image onto 0..255 (None for 8-bit modes), taken
    from the full-size image so that reduction cannot average a telling value away."""
    if image.mode == "I" or image.mode.startswith("I;16"):
        return 1 / 257
    if image.mode == "F":
        low, high = image.getextrema()
        return 255.0 if 0 <= low and high <= 1 else 1.0
    return None


def _reducible(image: Any) -> Any:
    """`image` in a mode `Image.reduce` supports, keeping what the last conversion needs: 16-bit
    values, and transparency (a palette entry or colour key) as an alpha channel."""
    if image.mode.startswith("I;16"):
        return image.convert("I")
    if image.mode in ("I", "F"):
        return image
    if image.mode == "PA" or "transparency" in image.info:
        return image.convert("RGBA")
    if image.mode in ("P", "1"):
        return image.convert("RGB" if image.mode == "P" else "L")
    return image


def _reduce(image: Any, width: int, height: int) -> tuple[Any, tuple[float, ...]]:
    """`image` box-averaged by the largest integer factors that keep twice the target size, so
    the conversions and the final (antialiased) resize work on few pixels; with the box that the
    original image covers in it, for that resize to keep the geometry exact."""
    factors = (max(1, image.size[0] // (2 * width)), max(1, image.size[1] // (2 * height)))
    box = (0.0, 0.0, image.size[0] / factors[0], image.size[1] / factors[1])
    return (image.reduce(factors) if factors != (1, 1) else image), box


def _to_8bit(image: Any, scale: float | None) -> Any:
    """A 16-bit or float image ("I", "F") scaled by `scale`, rounded and clipped to 8-bit "L"."""
    if scale is None:
        return image
    if image.mode == "F" and np.isnan(np.asarray(image)).any():
        raise ValueError("a float image with NaN values has no 8-bit conversion")
    return image.point(lambda v: v * scale + 0.5).convert("L")


def _flatten(image: Any, channels: int) -> Any:
    """8-bit "L" or "RGB", any alpha composited on white, as viewers show it."""
    from PIL import Image

    if image.mode in ("LA", "La", "RGBA", "RGBa"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("L" if channels == 1 else "RGB")


def _open_image(file: IO[bytes], path: str) -> Any:
    """Pillow's image of an opened file, with an error that names the path, not the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(file)
    except UnidentifiedImageError:
        raise UnidentifiedImageError(f"cannot identify image file {path!r}") from None


def decode_image(path: str, size: int | tuple[int, int], channels: int) -> np.ndarray:
    """One image file as uint8 HWC, resized to `size` ((height, width) or a side), with 1 or 3
    channels. Only regular files are opened, and images over MAX_IMAGE_PIXELS are refused before
    they are decoded; JPEGs decode at reduced scale and the rest is box-reduced before the final
    resize, so memory follows the target size rather than the file's.

    Conversion to 8 bits, so that no image turns silently white or black: integer grayscale of
    16 or 32 bits (Pillow modes "I;16", "I") is read as 16-bit, value / 257 rounded and clipped
    to 0..255; float images ("F") whose values all lie in [0, 1] are scaled by 255, others are
    taken as 0..255 and clipped, and NaN values are refused; transparency (alpha, a transparent
    palette entry or colour key) is composited on white; palette, 1-bit, CMYK, YCbCr and HSV
    images are converted by Pillow; other modes (e.g. CIELab) are refused by name."""
    from PIL import Image

    height, width = (size, size) if isinstance(size, int) else size
    with _open_regular(path) as file, _open_image(file, path) as image:  # reads the header
        _check_header(image)
        decoded_width, decoded_height = _draft(image, width, height)
        with _DECODING.hold(decoded_width * decoded_height):
            image.load()  # decode now: truncated files fail here, not later
            scale = _intensity_scale(image)
            image, box = _reduce(_reducible(image), width, height)
            image = _flatten(_to_8bit(image, scale), channels)
            image = image.resize((width, height), Image.Resampling.BILINEAR, box=box)
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


def _entry(path: str) -> str:
    """A folder entry's name as the messages show it: folders with a slash, special files with
    their kind."""
    name = os.path.basename(path)
    try:
        kind = _special_kind(os.stat(path).st_mode)
    except OSError:
        return name
    if kind == "folder":
        return name + "/"
    return f"{name} ({kind})" if kind else name


def _contents(directory: str) -> str:
    """What a class folder without image files holds, so that the error says what to fix."""
    if not os.path.isdir(directory):
        return "no such folder"
    names = sorted(n for n in os.listdir(directory) if not n.startswith("."))
    if not names:
        return "empty"
    shown = [_entry(os.path.join(directory, name)) for name in names[:5]]
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    return f"holds {', '.join(shown)}{more}"


def _check_class_count(root: str, names: Sequence[str]) -> None:
    """A classifier needs two classes: one class trains a model that is always right."""
    if not names:
        raise ConfigError(f"{root} has no class folders: expected {root}/<class>/<image files>.")
    if len(names) == 1:
        inner = os.path.join(root, names[0])
        hint = (
            f" If {inner} holds the class folders, set data.path={inner}."
            if _class_folders(inner)
            else ""
        )
        raise ConfigError(
            f"at least two class folders are needed to train a classifier; {root} has one: "
            f"{names[0]}.{hint}"
        )


def _scan(
    root: str, class_names: Sequence[str] | None
) -> tuple[list[str], list[str], list[int], list[tuple[str, str]]]:
    """(class names, files, labels, skipped non-regular entries) of one folder of class folders;
    `class_names` None means the folders found, which must be at least two."""
    names = list(class_names) if class_names is not None else _class_folders(root)
    _warn_hidden_folders(root)
    if class_names is None:
        _check_class_count(root, names)
    files, labels, special, empty = [], [], [], []
    for label, name in enumerate(names):
        directory = os.path.join(root, name)
        found, odd = _list_images(directory) if os.path.isdir(directory) else ([], [])
        if not found:
            empty.append(f"{directory} ({_contents(directory)})")
        files += found
        labels += [label] * len(found)
        special += odd
    if empty:
        raise ConfigError(
            f"class folder(s) without image files: {'; '.join(empty)}. Each class folder needs "
            f"its image files ({', '.join(IMAGE_EXTENSIONS)}) directly inside it."
        )
    return names, files, labels, special


def _check_split_classes(split_root: str, train_root: str, names: Sequence[str]) -> None:
    """A class folder in val/ or test/ without one in train/ is a class the model never learns."""
    extra = [os.path.join(split_root, n) for n in _class_folders(split_root) if n not in names]
    if extra:
        raise ConfigError(
            f"class folder(s) with no training examples: {', '.join(extra)} (no such class "
            f"folder in {train_root}); add training images for them or remove them."
        )


def _check_learnable(
    names: Sequence[str], train_root: str, splits: dict[str, tuple[np.ndarray, np.ndarray]]
) -> None:
    """Every class needs readable training images: skipping unreadable files can leave a class
    that is listed in the class names but never seen in training."""
    for label, name in enumerate(names):
        counts = {split: int(np.sum(labels == label)) for split, (_, labels) in splits.items()}
        folder = os.path.join(train_root, name)
        if not any(counts.values()):
            raise ConfigError(
                f"class {name!r} ({folder}) has no readable images: all of its files were "
                "skipped as unreadable (data.skip_corrupt=True); replace them or remove the folder."
            )
        if not counts["train"]:
            held = ", ".join(f"{count} in {split}" for split, count in counts.items() if count)
            raise ConfigError(
                f"class {name!r} ({folder}) has no training examples: all of its training files "
                f"were skipped as unreadable (readable: {held}); add readable training images."
            )


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
            with _open_regular(path) as file, Image.open(file) as image:
                if image.mode not in _GRAY_MODES:
                    return 3
        except Exception:  # noqa: BLE001 - decoding reports it properly later
            continue
    return 1


@dataclasses.dataclass(frozen=True)
class _Listing:
    train_root: str  # the folder that holds the training class folders
    class_names: list[str]
    splits: dict[str, tuple[list[str], list[int]]]  # name -> (files, labels)
    special: list[tuple[str, str]]  # (path, kind) of skipped non-regular entries


def _split_files(data_config: Any) -> _Listing:
    """Class names and (files, labels) per split: the split folders as given, and a stratified
    seeded split of the training files for any split without a folder."""
    root = data_config.path
    present = {
        split: os.path.join(root, folder)
        for split, folders in SPLIT_FOLDERS.items()
        for folder in folders
        if os.path.isdir(os.path.join(root, folder))
    }
    train_root = present.get("train", root)
    names, files, labels, special = _scan(train_root, None)
    per_split = {"train": (files, labels)}
    fractions = {
        "validation": data_config.validation_fraction,
        "test": data_config.test_fraction,
    }
    if "train" in present:
        for split in ("validation", "test"):
            if split in present:
                _check_split_classes(present[split], train_root, names)
                _, f, lab, odd = _scan(present[split], names)
                per_split[split] = (f, lab)
                special += odd
                del fractions[split]
    if fractions:
        train_files, train_labels = per_split["train"]
        index = stratified_split(np.asarray(train_labels), fractions, data_config.split_seed)
        for split, rows in index.items():
            per_split[split] = ([train_files[i] for i in rows], [train_labels[i] for i in rows])
    return _Listing(train_root, names, per_split, special)


def load_folder(data_config: Any) -> FolderDataset:
    """The dataset under `data_config.path`, resized to `image_size` x `image_size`."""
    root = data_config.path
    if not root or not os.path.isdir(root):
        raise FileNotFoundError(f"data.path={root!r}: no such folder of class folders.")
    listing = _split_files(data_config)
    if listing.special:
        warnings.warn(
            f"skipped {len(listing.special)} file(s) that are not regular files (only regular "
            f"files are read): {', '.join(f'{path} ({kind})' for path, kind in listing.special)}",
            stacklevel=2,
        )
    channels = data_config.channels or _detect_channels(listing.splits["train"][0])
    decoded, failures = {}, []
    for split, (split_files, _) in listing.splits.items():
        decoded[split], split_failures = _decode_all(split_files, data_config.image_size, channels)
        failures += split_failures
    if failures and not data_config.skip_corrupt:
        shown = "; ".join(f"{path} ({err})" for path, err in failures[:20])
        more = f" and {len(failures) - 20} more" if len(failures) > 20 else ""
        raise CorruptImageError(
            f"{len(failures)} unreadable image file(s): {shown}{more}. Remove or replace "
            "them, or set --config.data.skip_corrupt=True to skip them with a warning."
        )
    skipped = [path for path, _ in failures]
    splits = {}
    empty = np.zeros((0, data_config.image_size, data_config.image_size, channels), np.uint8)
    for split, (_, split_labels) in listing.splits.items():
        images = decoded[split]
        keep = [i for i, image in enumerate(images) if image is not None]
        stacked = np.stack([images[i] for i in keep]) if keep else empty
        splits[split] = (stacked, np.asarray([split_labels[i] for i in keep], np.int32))
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} unreadable image file(s): {', '.join(skipped)}", stacklevel=2
        )
    _check_learnable(listing.class_names, listing.train_root, splits)
    special = tuple(path for path, _ in listing.special)
    return FolderDataset(tuple(listing.class_names), splits, special + tuple(skipped))
