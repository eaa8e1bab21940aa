"""The streamed ImageNet views on small generated JPEGs: the training view decodes only its crop
window and must equal decoding the whole image and slicing it; the evaluation view must equal
an independent PIL + numpy resize and centre crop."""

from __future__ import annotations

import functools
import io

import jax
import numpy as np
import pytest
from PIL import Image

tf = pytest.importorskip("tensorflow")

from flaxcls.data import streaming  # noqa: E402
from flaxcls.data.contract import Normalizer, normalizing  # noqa: E402

SIZE, RESIZE = 32, 36


def smooth_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A colour gradient with mild noise: JPEG keeps it close, so decoders agree to a level."""
    corners = rng.integers(0, 256, (2, 2, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(corners).resize((width, height), Image.BILINEAR), np.int16)
    image = image + rng.integers(-6, 7, image.shape, dtype=np.int16)
    return np.clip(image, 0, 255).astype(np.uint8)


def encode(image: np.ndarray, fmt: str = "JPEG") -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return out.getvalue()


@pytest.fixture(scope="module")
def jpegs() -> list[bytes]:
    """16 JPEGs of assorted sizes and aspect ratios, some smaller than the crop."""
    rng = np.random.default_rng(0)
    sizes = [(int(h), int(w)) for h, w in rng.integers(20, 90, (16, 2))]
    return [encode(smooth_image(rng, h, w)) for h, w in sizes]


def seed_of(i: int) -> tf.Tensor:
    return tf.constant([7, i], tf.int64)


def test_the_decoded_window_is_the_slice_of_the_whole_image(jpegs):
    for i, data in enumerate(jpegs):
        encoded = tf.constant(data)
        whole = tf.io.decode_jpeg(encoded, channels=3).numpy()
        begin, shape = streaming.inception_window(tf.image.extract_jpeg_shape(encoded), seed_of(i))
        (top, left), (height, width) = begin.numpy(), shape.numpy()
        assert 0 <= top and top + height <= whole.shape[0]
        assert 0 <= left and left + width <= whole.shape[1]
        window = tf.concat([begin, shape], 0)
        crop = tf.image.decode_and_crop_jpeg(encoded, window, channels=3).numpy().astype(int)
        sliced = whole[top : top + height, left : left + width].astype(int)
        # libjpeg decodes the window from the same coefficients: the same pixels, except that
        # the chroma upsampling of the window's first and last columns sees no neighbour
        # beyond them (a few levels at most).
        np.testing.assert_array_equal(crop[:, 1:-1], sliced[:, 1:-1])
        np.testing.assert_allclose(crop, sliced, rtol=0, atol=8)


def test_training_view_decoding_the_window_equals_decoding_everything(jpegs):
    for i, data in enumerate(jpegs):
        encoded = tf.constant(data)
        fast = streaming.decode_inception_crop_flip(encoded, seed_of(i), size=SIZE, channels=3)
        whole = streaming.decode(encoded, 3)
        reference = streaming.inception_crop_flip(whole, seed_of(i), size=SIZE)
        assert fast.shape == (SIZE, SIZE, 3) and fast.dtype == tf.uint8
        # Bilinear weights are convex: the window's edge columns (above) differ by at most as
        # much after resizing (and rounding), and only the output pixels that read them differ.
        diff = np.abs(fast.numpy().astype(int) - reference.numpy())
        assert diff.max() <= 8 and np.mean(diff > 0) < 0.1


def test_a_png_takes_the_whole_decode_path_with_the_same_window():
    image = smooth_image(np.random.default_rng(1), 50, 70)
    seed = seed_of(3)
    crop = streaming.decode_inception_crop(
        tf.constant(encode(image, "PNG")), seed, size=SIZE, channels=3
    )
    np.testing.assert_array_equal(
        crop.numpy(), streaming.inception_crop(tf.constant(image), seed, size=SIZE).numpy()
    )


def test_training_batches_are_uint8_pixels_of_the_training_view(jpegs):
    preprocess = functools.partial(
        streaming.train_example,
        transform=streaming.get_train_transform("inception_crop_flip", SIZE, RESIZE, 3),
        seed=5,
        process_index=0,
        process_count=1,
    )
    examples = {"image": tf.constant(jpegs), "label": tf.range(16, dtype=tf.int64)}
    ds = tf.data.Dataset.from_tensor_slices(examples).enumerate().map(preprocess).batch(16)
    batch = next(ds.as_numpy_iterator())
    assert batch["image"].shape == (16, SIZE, SIZE, 3) and batch["image"].dtype == np.uint8
    assert batch["label"].dtype == np.int32
    np.testing.assert_array_equal(batch["label"], np.arange(16))
    assert batch["image"].std() > 10  # real image content, not a constant
    view = streaming.decode_inception_crop_flip(
        tf.constant(jpegs[3]), tf.constant([5, 3], tf.int64), size=SIZE, channels=3
    )
    np.testing.assert_array_equal(batch["image"][3], view.numpy())


def test_resized_pixels_are_the_bilinear_resize_rounded(jpegs):
    for data in jpegs:
        decoded = streaming.decode(tf.constant(data), 3)
        pixels = streaming.resize_to_pixels(decoded, [SIZE, SIZE + 5]).numpy()
        exact = bilinear_resize(decoded.numpy(), SIZE, SIZE + 5)
        assert pixels.dtype == np.uint8
        assert np.abs(pixels - exact).max() <= 0.5 + 1e-3


def test_uint8_batches_normalised_in_the_step_equal_normalising_on_the_host():
    normalizer = Normalizer((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    pixels = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    seen = jax.jit(normalizing(lambda state, batch: batch["image"], normalizer))
    np.testing.assert_allclose(
        seen(None, {"image": pixels}), normalizer(pixels), rtol=1e-6, atol=1e-6
    )
    floats = normalizer(pixels)  # float batches pass through unchanged
    np.testing.assert_array_equal(seen(None, {"image": floats}), floats)


def bilinear_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize with half-pixel centres and edge clamping, in float64."""

    def axis(n_in: int, n_out: int):
        src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        low = np.floor(src)
        lerp = src - low
        return np.maximum(low, 0).astype(int), np.minimum(np.ceil(src), n_in - 1).astype(int), lerp

    image = image.astype(np.float64)
    lo, hi, t = axis(image.shape[0], height)
    rows = image[lo] + (image[hi] - image[lo]) * t[:, None, None]
    lo, hi, t = axis(image.shape[1], width)
    return rows[:, lo] + (rows[:, hi] - rows[:, lo]) * t[None, :, None]


def test_evaluation_view_is_the_resized_centre_crop(jpegs):
    for data in jpegs:
        pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))  # PIL's decoder
        h, w = pixels.shape[:2]
        scale = RESIZE / min(h, w)
        new_h, new_w = max(round(h * scale), RESIZE), max(round(w * scale), RESIZE)
        top, left = (new_h - SIZE) // 2, (new_w - SIZE) // 2
        reference = bilinear_resize(pixels, new_h, new_w)[top : top + SIZE, left : left + SIZE]
        decoded = streaming.decode(tf.constant(data), 3)
        view = streaming.center_crop(decoded, resize=RESIZE, size=SIZE).numpy()
        # The geometry alone (the same decoded pixels): float rounding apart.
        same = bilinear_resize(decoded.numpy(), new_h, new_w)[top : top + SIZE, left : left + SIZE]
        np.testing.assert_allclose(view, same, rtol=0, atol=0.5 + 1e-3)  # rounded to a level
        # PIL's libjpeg upsamples chroma differently: up to 3 levels on these images, and a
        # bilinear resize (convex weights) cannot widen that.
        np.testing.assert_allclose(view, reference, rtol=0, atol=3.5 + 1e-3)
