"""Image-folder datasets: formats and modes, stratified stable splits, clear errors."""

import contextlib
import os
import stat
import threading
import warnings

import numpy as np
import pytest
from PIL import Image

from configs import default
from flaxcls.data.folder import CorruptImageError, decode_image, load_folder, stratified_split
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


def _write_image(path, image, **save_options):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path, **save_options)


def _load_guarded(function, fifos):
    """`function()`'s result or exception, run in a thread: a test fails instead of hanging when
    the code under test blocks on a named pipe. Whether it does is no matter of time: a
    non-blocking open for writing succeeds only while a reader waits on the pipe, and that open
    also releases the reader."""
    outcome = {}

    def run():
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                outcome["value"] = function()
            outcome["warnings"] = [str(w.message) for w in caught]
        except Exception as e:  # noqa: BLE001 - handed to the test
            outcome["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    blocked = []
    while thread.is_alive():
        for fifo in fifos:
            with contextlib.suppress(OSError):  # ENXIO: no reader waiting on it
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                blocked.append(fifo)
        thread.join(0.05)
    assert not blocked, f"loading blocked on a named pipe: {blocked}"
    return outcome


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_special_files_are_skipped_with_a_warning_naming_them(tmp_path):
    root = _make_folder(tmp_path / "data", classes=("cat", "dog"), per_class=5)
    pipe, sock = root / "cat" / "pipe.png", root / "dog" / "sock.jpg"
    os.mkfifo(pipe)
    os.mknod(sock, stat.S_IFSOCK | 0o600)
    os.mkdir(root / "dog" / "folder.png")
    os.symlink(root / "cat" / "00.png", root / "dog" / "link.png")  # a link to a file is fine
    if os.path.exists("/dev/zero"):
        os.symlink("/dev/zero", root / "cat" / "zero.jpg")
    outcome = _load_guarded(lambda: load_folder(_config(root)), [pipe])
    assert "error" not in outcome, outcome.get("error")
    folder = outcome["value"]
    assert sum(len(labels) for _, labels in folder.splits.values()) == 11
    message = next(w for w in outcome["warnings"] if "not regular files" in w)
    assert f"{pipe} (named pipe)" in message and f"{sock} (socket)" in message
    assert "folder.png (folder)" in message
    assert {str(pipe), str(sock)} <= set(folder.skipped)
    if os.path.exists("/dev/zero"):
        assert "zero.jpg (character device)" in message
    outcome = _load_guarded(lambda: decode_image(str(pipe), 8, 3), [pipe])
    assert "named pipe, not a regular file" in str(outcome.get("error"))


def test_16_bit_and_float_images_scale_to_8_bits(tmp_path):
    ramp = np.linspace(0, 1, 64)
    expected = np.round(ramp * 255)
    Image.fromarray(np.tile(np.round(ramp * 65535).astype(np.uint16), (4, 1))).save(
        tmp_path / "g16.png"
    )
    with Image.open(tmp_path / "g16.png") as image:
        assert image.mode.startswith("I;16")
    Image.fromarray(np.tile(ramp.astype(np.float32), (4, 1))).save(tmp_path / "unit.tif")
    wide = np.linspace(-50, 300, 64)
    Image.fromarray(np.tile(wide.astype(np.float32), (4, 1))).save(tmp_path / "wide.tif")
    for name, want in [("g16.png", expected), ("unit.tif", expected)]:
        got = decode_image(str(tmp_path / name), (4, 64), 1)[..., 0].astype(int)
        assert np.abs(got - want).max() <= 1, name
    got = decode_image(str(tmp_path / "wide.tif"), (4, 64), 1)[..., 0].astype(int)
    assert np.abs(got - np.clip(np.round(wide), 0, 255)).max() <= 1
    nan = np.tile(ramp.astype(np.float32), (4, 1))
    nan[0, 0] = np.nan
    Image.fromarray(nan).save(tmp_path / "nan.tif")
    with pytest.raises(ValueError, match="NaN"):
        decode_image(str(tmp_path / "nan.tif"), (4, 64), 1)
    # a folder of 16-bit images: grayscale, with each class's brightness
    for c, level in enumerate((0.25, 0.75)):
        for i in range(5):
            pixels = np.full((10, 12), int(level * 65535), np.uint16)
            _write_image(tmp_path / "data" / f"c{c}" / f"{i}.png", Image.fromarray(pixels))
    folder = load_folder(_config(tmp_path / "data"))
    images, labels = folder.splits["train"]
    assert images.shape[-1] == 1
    for c, level in enumerate((0.25, 0.75)):
        assert abs(images[labels == c].mean() - level * 255) <= 1


def test_transparency_bilevel_and_cielab_images(tmp_path):
    indices = np.zeros((4, 8), np.uint8)
    indices[:, 4:] = 1
    palette = Image.fromarray(indices, "P")
    palette.putpalette([255, 0, 0, 0, 0, 255])
    palette.save(tmp_path / "palette.png", transparency=0)  # red is transparent
    got = decode_image(str(tmp_path / "palette.png"), (4, 8), 3)
    assert (got[:, :4] == 255).all() and (got[:, 4:] == (0, 0, 255)).all()
    gray = np.full((4, 8), 10, np.uint8)
    gray[:, 4:] = 100
    Image.fromarray(gray, "L").save(tmp_path / "key.png", transparency=10)  # 10 is transparent
    got = decode_image(str(tmp_path / "key.png"), (4, 8), 1)[..., 0]
    assert (got[:, :4] == 255).all() and (got[:, 4:] == 100).all()
    bits = Image.fromarray(np.tile([True, False], (4, 4)))
    bits.save(tmp_path / "bits.png")
    assert set(np.unique(decode_image(str(tmp_path / "bits.png"), (4, 8), 3))) == {0, 255}
    Image.new("LAB", (4, 4), (50, 0, 0)).save(tmp_path / "lab.tif")
    with pytest.raises(ValueError, match="image mode 'LAB' has no faithful conversion"):
        decode_image(str(tmp_path / "lab.tif"), 4, 3)


def _smooth_rgb(width, height):
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    channels = [
        128 + 100 * np.sin(2 * np.pi * x) + 0 * y,
        128 + 100 * np.cos(3 * np.pi * y) + 0 * x,
        255 * (x + y) / 2,
    ]
    return np.stack(channels, -1).astype(np.uint8)


def test_large_images_decode_reduced_like_a_plain_resize(tmp_path):
    from flaxcls.data import folder as folder_lib

    pixels = _smooth_rgb(4000, 3000)
    Image.fromarray(pixels).save(tmp_path / "big.jpg", quality=90)
    Image.fromarray(pixels[::3, ::3]).save(tmp_path / "big.png")
    with Image.open(tmp_path / "big.jpg") as image:  # JPEG: decoded at 1/8 scale
        assert folder_lib._draft(image, 16, 16) == (500, 375)
    with Image.open(tmp_path / "big.png") as image:  # PNG: at full size, reduced afterwards
        assert folder_lib._draft(image, 16, 16) == (1334, 1000)
    for name in ("big.jpg", "big.png"):
        for height, width in ((16, 16), (12, 40)):
            got = decode_image(str(tmp_path / name), (height, width), 3).astype(int)
            with Image.open(tmp_path / name) as image:
                plain = image.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
            # on a smooth image the reduced decode is within JPEG noise of a full-size resize
            assert got.shape == (height, width, 3)
            assert np.abs(got - np.asarray(plain, int)).max() <= 4, (name, height, width)


def test_decoding_holds_a_bounded_number_of_pixels_at_once(monkeypatch):
    from flaxcls.data import folder as folder_lib

    monkeypatch.setattr(folder_lib, "MAX_IMAGE_PIXELS", 100)
    budget = folder_lib._PixelBudget()
    second_in = threading.Event()

    def second():
        with budget.hold(50):
            second_in.set()

    with budget.hold(80):
        thread = threading.Thread(target=second, daemon=True)
        thread.start()
        assert not second_in.wait(0.2)  # 80 + 50 is over the budget: it waits
    assert second_in.wait(5)
    thread.join(5)
    with budget.hold(500):  # one image over the budget still decodes, alone
        pass


def test_one_class_folder_is_an_error(tmp_path):
    root = _make_folder(tmp_path / "data", classes=("cat",))
    with pytest.raises(ConfigError, match="at least two class folders are needed.*: cat"):
        load_folder(_config(root))
    nested = _make_folder(tmp_path / "outer" / "images", classes=("cat", "dog"), per_class=5)
    with pytest.raises(ConfigError, match=f"has one: images. If {nested} holds the class"):
        load_folder(_config(tmp_path / "outer"))


def test_class_folder_without_image_files_says_what_it_holds(tmp_path):
    root = _make_folder(tmp_path / "data", classes=("cat", "dog"), per_class=5)
    (root / "owl" / "2019").mkdir(parents=True)
    (root / "owl" / "notes.txt").write_text("owls")
    _write(str(root / "owl" / "2019" / "00.png"), "RGB", (8, 8), 100)
    with pytest.raises(ConfigError, match="without image files") as error:
        load_folder(_config(root))
    assert f"{root / 'owl'} (holds 2019/, notes.txt)" in str(error.value)


def test_class_with_only_unreadable_files_is_an_error(tmp_path):
    root = _make_folder(tmp_path / "data", per_class=5)
    for path in (root / "dog").iterdir():
        path.write_bytes(b"not an image")
    with pytest.raises(CorruptImageError, match="dog/00"):
        load_folder(_config(root))
    with pytest.warns(UserWarning, match="unreadable"):
        with pytest.raises(ConfigError, match=r"class 'dog' \(.*dog\) has no readable images"):
            load_folder(_config(root, skip_corrupt=True))


def test_class_without_training_examples_is_an_error(tmp_path):
    for split in ("train", "val", "test"):
        for c in ("a", "b"):
            for i in range(3):
                _write(str(tmp_path / split / c / f"{i}.png"), "RGB", (8, 8), 100)
    for path in (tmp_path / "train" / "b").iterdir():
        path.write_bytes(b"not an image")
    with pytest.warns(UserWarning, match="unreadable"):
        with pytest.raises(ConfigError, match=r"class 'b' \(.*train/b\) has no training examples"):
            load_folder(_config(tmp_path, skip_corrupt=True))
    for i in range(3):
        _write(str(tmp_path / "train" / "b" / f"{i}.png"), "RGB", (8, 8), 100)
        _write(str(tmp_path / "val" / "c" / f"{i}.png"), "RGB", (8, 8), 100)
    with pytest.raises(ConfigError, match="with no training examples: .*val/c"):
        load_folder(_config(tmp_path))
