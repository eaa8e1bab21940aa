"""Image-folder datasets: formats and modes, stratified stable splits, clear errors."""

import os
import warnings

import numpy as np
import pytest
from PIL import Image

from configs import default
from flaxcls.data.folder import CorruptImageError, load_folder, stratified_split
from flaxcls.data.sources import load_splits
from flaxcls.errors import ConfigError

FORMATS = [
    ("png", "RGB"),
    ("jpg", "L"),
    ("bmp", "RGB"),
    ("gif", "P"),
    ("webp", "RGB"),
    ("png", "RGBA"),
    ("png", "P"),
    ("png", "LA"),
    ("jpeg", "CMYK"),
]


def _config(path, **overrides):
    config = default.get_config()
    config.data.dataset = "folder"
    config.data.path = str(path)
    config.data.image_size = 16
    config.data.validation_fraction = 0.2
    config.data.test_fraction = 0.2
    for key, value in overrides.items():
        config.data[key] = value
    return config.data


def _write(path, mode, size, value, fmt=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(abs(hash(path)) % 2**32)
    rgb = np.clip(rng.normal(value, 10, (*size[::-1], 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(rgb, "RGB")
    if mode == "P":
        image = image.quantize(16)
    elif mode != "RGB":
        image = image.convert(mode)
    image.save(path, format=fmt)


def _make_folder(root, classes=("cat", "dog", "owl"), per_class=10):
    for c, name in enumerate(classes):
        for i in range(per_class):
            ext, mode = FORMATS[(c * per_class + i) % len(FORMATS)]
            size = (20 + 3 * i, 12 + 5 * c)  # every size differs
            _write(os.path.join(root, name, f"{i:02d}.{ext}"), mode, size, 40 + 80 * c)
    return root


def test_every_format_and_mode_loads_at_the_configured_size(tmp_path):
    root = _make_folder(tmp_path / "data")
    folder = load_folder(_config(root, channels=3))
    assert folder.class_names == ("cat", "dog", "owl")
    total = sum(len(labels) for _, labels in folder.splits.values())
    assert total == 30
    for images, labels in folder.splits.values():
        assert images.dtype == np.uint8 and images.shape[1:] == (16, 16, 3)
        # the class's brightness survives every format and mode conversion
        for c in range(3):
            if np.any(labels == c):
                assert abs(images[labels == c].mean() - (40 + 80 * c)) < 25


def test_grayscale_folder_gets_one_channel(tmp_path):
    for c in range(2):
        for i in range(5):
            _write(str(tmp_path / f"c{c}" / f"{i}.png"), "L", (10, 10), 60 + 100 * c)
    folder = load_folder(_config(tmp_path, validation_fraction=0.0, test_fraction=0.2))
    assert folder.splits["train"][0].shape[-1] == 1


def test_split_is_stratified_and_stable(tmp_path):
    labels = np.repeat(np.arange(4), [10, 20, 30, 40])
    a = stratified_split(labels, {"validation": 0.1, "test": 0.2}, seed=0)
    b = stratified_split(labels, {"validation": 0.1, "test": 0.2}, seed=0)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert np.array_equal(np.bincount(labels[a["test"]]), [2, 4, 6, 8])
    assert np.array_equal(np.bincount(labels[a["validation"]]), [1, 2, 3, 4])
    union = np.concatenate(list(a.values()))
    assert len(np.unique(union)) == len(labels) == len(union)
    c = stratified_split(labels, {"validation": 0.1, "test": 0.2}, seed=1)
    assert not np.array_equal(a["test"], c["test"])


def test_split_folders_are_used_as_given(tmp_path):
    for split in ("train", "val", "test"):
        for c in ("a", "b"):
            for i in range(3):
                _write(str(tmp_path / split / c / f"{i}.png"), "RGB", (8, 8), 100)
    info, splits = load_splits(_config(tmp_path))
    assert {k: len(v) for k, v in splits.items()} == {"train": 6, "validation": 6, "test": 6}
    assert info.class_names == ("a", "b") and info.num_classes == 2


def test_corrupt_and_truncated_files_are_named(tmp_path):
    root = _make_folder(tmp_path / "data")
    (root / "dog" / "broken.jpg").write_bytes(b"not an image at all")
    good = root / "cat" / "00.png"
    (root / "cat" / "truncated.png").write_bytes(good.read_bytes()[:60])
    with pytest.raises(CorruptImageError) as error:
        load_folder(_config(root))
    assert "broken.jpg" in str(error.value) and "truncated.png" in str(error.value)
    assert "skip_corrupt" in str(error.value)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        folder = load_folder(_config(root, skip_corrupt=True))
    assert len(folder.skipped) == 2
    assert any("broken.jpg" in str(w.message) for w in caught)
    assert sum(len(labels) for _, labels in folder.splits.values()) == 30


def test_empty_class_and_too_small_class_are_errors(tmp_path):
    root = _make_folder(tmp_path / "data")
    os.makedirs(root / "empty")
    with pytest.raises(ConfigError, match="empty"):
        load_folder(_config(root))
    os.rmdir(root / "empty")
    for i in range(1):
        _write(str(root / "tiny" / f"{i}.png"), "RGB", (8, 8), 10)
    with pytest.raises(ConfigError, match="too few"):
        load_folder(_config(root))


def test_decompression_bomb_is_refused_before_decoding(tmp_path, monkeypatch):
    from flaxcls.data import folder as folder_lib

    root = _make_folder(tmp_path / "data", per_class=4)
    _write(str(root / "cat" / "huge.png"), "RGB", (300, 300), 50)
    monkeypatch.setattr(folder_lib, "MAX_IMAGE_PIXELS", 200 * 200)
    with pytest.raises(CorruptImageError, match="huge.png.*decompression bomb"):
        load_folder(_config(root, validation_fraction=0.0, test_fraction=0.25))
