"""Batches streamed from tfds files with tf.data, for datasets bigger than memory (ImageNet).

Each process reads only its share of every split. Training order is a pure function of
(seed, step), as in the in-memory path: epoch e of this process's split is read with file and
buffer shuffle seeds derived from (seed, e), and augmentation draws are seeded by the example's
position in the stream. `train(start_step)` therefore starts at the right epoch and skips only
within it, before any image is decoded, and yields exactly what an uninterrupted run would.
Evaluation reads every example once, padded with masked rows to the same number of steps on
every process.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import itertools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from flaxcls.data import pipeline
from flaxcls.data.contract import Batch, DatasetInfo, Input, Layout, Normalizer
from flaxcls.data.datasets import get_dataset_info
from flaxcls.data.sources import tfds_builder
from flaxcls.errors import ConfigError

Example = dict[str, tf.Tensor]
# Decode, crop, resize and flip (or not) one encoded image (with a seed) to uint8 pixels
# [size, size, C]. Batches leave tf.data as uint8 (a quarter of float32's bytes to batch, copy
# and send to the devices); the compiled steps normalise them on the device
# (`contract.normalizing`), where it is nearly free.
Transform = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]

AUTOTUNE = tf.data.AUTOTUNE
# Images stay encoded until after shuffling and skipping, so a resume skip decodes nothing.
_SKIP_IMAGE_DECODING = {"image": tfds.decode.SkipDecoding()}
_AS_DATASET = threading.Lock()  # see `_as_dataset`
# Salts that keep the seeds drawn for different purposes from the same (seed, epoch) apart.
_FILE_SALT, _BUFFER_SALT, _AUGMENT_SALT = 1, 2, 3


def _image_sizes(data_config: Any, info: DatasetInfo) -> tuple[int, int]:
    """(training crop size, evaluation resize before the centre crop)."""
    image_size = int(getattr(data_config, "image_size", info.image_shape[0]))
    eval_resize = int(getattr(data_config, "eval_resize", image_size * 8 // 7))
    if eval_resize < image_size:
        raise ConfigError(
            f"data.eval_resize={eval_resize} is smaller than image_size={image_size}."
        )
    return image_size, eval_resize


def _split_batches(
    builder: Any, splits: dict[str, str], sizes: dict[str, int], split: str, **kwargs: Any
) -> Iterator[Batch]:
    """Every example of `split` once, in padded evaluation batches."""
    return eval_batches(builder, splits[split], num_examples=sizes[split], **kwargs)


def streaming_input(data_config: Any, layout: Layout) -> Input:
    """Training and evaluation batches streamed from a prepared tfds dataset."""
    hide_gpus_from_tensorflow()
    info = get_dataset_info(data_config.dataset)
    builder = tfds_builder(info, data_config)
    splits = split_specs(builder, info, data_config.validation_fraction)
    sizes = {name: split_size(builder, spec) for name, spec in splits.items()}

    image_size, eval_resize = _image_sizes(data_config, info)
    channels = info.image_shape[-1]
    normalizer = Normalizer(info.mean, info.std)  # applied on the device, to uint8 batches
    eval_transform = functools.partial(center_crop, resize=eval_resize, size=image_size)
    train_transform = get_train_transform(data_config.augment, image_size, eval_resize, channels)

    preprocess = functools.partial(
        train_example,
        transform=train_transform,
        seed=derive_seed(layout.seed, _AUGMENT_SALT),
        process_index=layout.process_index,
        process_count=layout.process_count,
    )
    train = functools.partial(
        train_batches,
        builder,
        splits["train"],
        layout=layout,
        shuffle_buffer=int(getattr(data_config, "shuffle_buffer", 10_000)),
        preprocess=preprocess,
    )

    evaluate = functools.partial(
        _split_batches,
        builder,
        splits,
        sizes,
        layout=layout,
        image_shape=(image_size, image_size, channels),
        preprocess=functools.partial(eval_example, transform=eval_transform, channels=channels),
    )

    return Input(
        info=_with_image_size(info, image_size),
        split_sizes=sizes,
        layout=layout,
        train=train,
        evaluate=evaluate,
        normalizer=normalizer,
    )


def hide_gpus_from_tensorflow() -> None:
    """Keeps TensorFlow off the accelerators, which belong to JAX."""
    try:
        tf.config.set_visible_devices([], "GPU")
    except (RuntimeError, ValueError):
        # TensorFlow already initialised its devices; nothing can change now.
        pass


def _with_image_size(info: DatasetInfo, image_size: int) -> DatasetInfo:
    # Batches have the crop size, whatever size the images are stored at.
    return dataclasses.replace(info, image_shape=(image_size, image_size, info.image_shape[-1]))


# --- Splits -------------------------------------------------------------------------------


def split_specs(builder: Any, info: DatasetInfo, validation_fraction: float) -> dict[str, str]:
    """tfds split strings: validation is the last `validation_fraction` of train, as in memory."""
    if not 0.0 <= validation_fraction < 1.0:
        raise ConfigError(f"data.validation_fraction={validation_fraction} must be in [0, 1).")
    train = info.train_split
    if builder.info.splits:
        n = builder.info.splits[train].num_examples
        cut = f"{n - int(round(n * validation_fraction))}"
    else:
        # No split statistics (e.g. under tfds.testing.mock_data): slice by whole percents.
        cut = f"{100 - int(round(100 * validation_fraction))}%"
    return {"train": f"{train}[:{cut}]", "validation": f"{train}[{cut}:]", "test": info.test_split}


def split_size(builder: Any, split: Any) -> int:
    """Examples in a split string or tfds sub-split, from the statistics tfds wrote."""
    if builder.info.splits:
        return int(builder.info.splits[split].num_examples)
    # No statistics: count what the reader yields (tfds mocks report their size as cardinality).
    ds = _as_dataset(builder, split=split, decoders=_SKIP_IMAGE_DECODING)
    count = int(ds.cardinality())
    if count < 0:
        count = int(ds.reduce(np.int64(0), lambda n, _: n + 1))
    return count


def _read(builder: Any, split: Any, *, file_seed: int | None) -> tf.data.Dataset:
    """(image bytes, label) pairs in a fixed order: files shuffled with `file_seed` if given."""
    options = tf.data.Options()
    options.deterministic = True
    read_config = tfds.ReadConfig(shuffle_seed=file_seed, options=options, try_autocache=False)
    ds = _as_dataset(
        builder,
        split=split,
        shuffle_files=file_seed is not None,
        decoders=_SKIP_IMAGE_DECODING,
        read_config=read_config,
    )
    return ds.map(lambda ex: {"image": ex["image"], "label": ex["label"]})


def _as_dataset(builder: Any, **kwargs: Any) -> tf.data.Dataset:
    """`builder.as_dataset(**kwargs)`, one call at a time: the next epoch is built in a thread
    of its own, and tfds does not promise that a builder is thread-safe (its `mock_data`
    patches file access process-wide during the call). A call only describes the pipeline, so
    nothing waits long."""
    with _AS_DATASET:
        return builder.as_dataset(**kwargs)


# --- Training -------------------------------------------------------------------------------


def derive_seed(seed: int, *salts: int) -> int:
    """A 32-bit seed that is a pure function of (seed, salts)."""
    return int(np.random.SeedSequence([seed, *salts]).generate_state(1)[0])


def train_batches(
    builder: Any,
    split: str,
    start_step: int,
    *,
    layout: Layout,
    shuffle_buffer: int,
    preprocess: Callable[[tf.Tensor, Example], Example],
) -> Iterator[Batch]:
    """Endless training batches of this process's rows, from global step `start_step` on.

    Batches run across epoch boundaries: the partial batch that ends an epoch is completed by
    the first examples of the next, so every step holds `global_batch_size` examples.
    """
    rows = layout.train_share()
    batch, seed = rows.stop - rows.start, layout.seed
    # Equal shares (remainder dropped) keep every process at the same step in its own epochs.
    shares = tfds.even_splits(split, n=layout.process_count, drop_remainder=True)
    local_split = shares[layout.process_index]
    n = split_size(builder, local_split)
    if n < batch:
        raise ConfigError(
            f"Each process reads {n} training examples, fewer than its batch of {batch}."
        )
    epoch, offset = divmod(start_step * batch, n)

    def epoch_batches(epoch: int, offset: int) -> Iterator[Batch]:
        ds = _epoch_examples(builder, local_split, n, epoch, seed, shuffle_buffer).skip(offset)
        ds = ds.map(preprocess, num_parallel_calls=AUTOTUNE)
        # Batches sit on multiples of `batch` in the stream: an epoch that starts mid-batch
        # (only ever at offset 0) leaves room for the rows the previous epoch carries over.
        return _aligned_batches(ds, batch, (epoch * n) % batch if offset == 0 else 0)

    # The next epoch starts (reads its files and fills its shuffle buffer) while this one is
    # consumed, so an epoch boundary costs no wait: two shuffle buffers are held meanwhile.
    ahead = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="flaxcls-next-epoch")
    try:
        batches = epoch_batches(epoch, offset)
        carry: Batch | None = None  # the rows of a batch that the previous epoch began
        while True:
            upcoming = ahead.submit(_started, epoch_batches, epoch + 1, 0)
            for rows_batch in batches:
                if carry is not None:
                    carried = len(carry["label"])
                    rows_batch = {
                        k: np.concatenate([carry[k], v[carried:]]) for k, v in rows_batch.items()
                    }
                    carry = None
                if len(rows_batch["label"]) < batch:
                    carry = rows_batch
                else:
                    yield rows_batch
            batches, epoch = upcoming.result(), epoch + 1
    finally:
        ahead.shutdown(wait=False)  # a next epoch being started finishes on its own


def _started(make: Callable[..., Iterator[Batch]], *args: Any) -> Iterator[Batch]:
    """`make(*args)` with its first batch already produced."""
    batches = make(*args)
    return itertools.chain([next(batches)], batches)


def _epoch_examples(
    builder: Any, split: Any, n: int, epoch: int, seed: int, shuffle_buffer: int
) -> tf.data.Dataset:
    """Epoch `epoch`, still encoded, as (position in this process's stream, example)."""
    ds = _read(builder, split, file_seed=derive_seed(seed, _FILE_SALT, epoch))
    ds = ds.shuffle(shuffle_buffer, seed=derive_seed(seed, _BUFFER_SALT, epoch))
    return ds.enumerate(start=epoch * n)


def _aligned_batches(ds: tf.data.Dataset, batch: int, carried: int) -> Iterator[Batch]:
    """Batches of one epoch whose first `carried` rows are placeholders for the rows the previous
    epoch left over, so batch boundaries stay on multiples of `batch` in the stream. Only the
    first batch of an epoch is copied to fill them in, and the pipeline never reads twice."""
    if carried:
        ds = (
            tf.data.Dataset.from_tensors(_zeros_like(ds.element_spec))
            .repeat(carried)
            .concatenate(ds)
        )
    return _numpy_batches(ds, batch)


def _numpy_batches(ds: tf.data.Dataset, batch: int) -> Iterator[Batch]:
    """`ds` in batches of `batch` rows, as numpy, prefetched.

    tf.data's autotuning model is off: parallel maps then run one call per core and prefetch
    buffers still grow as needed, at the same speed here, and deleting a finished iterator
    (each epoch, each evaluation) no longer waits seconds for the model's thread."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.batch(batch).prefetch(AUTOTUNE).with_options(options).as_numpy_iterator()


def _zeros_like(spec: Any) -> Any:
    return tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), spec)


def train_example(
    position: tf.Tensor,
    example: Example,
    *,
    transform: Transform,
    seed: int,
    process_index: int,
    process_count: int,
) -> Example:
    """Decodes and augments one example; its random draws depend only on where it is in the
    stream, so they are the same after a resume."""
    stream_id = position * process_count + process_index  # unique across processes
    example_seed = tf.stack([tf.constant(seed, tf.int64), stream_id])
    image = transform(example["image"], example_seed)
    return {"image": image, "label": tf.cast(example["label"], tf.int32)}


# --- Evaluation -------------------------------------------------------------------------------


def eval_batches(
    builder: Any,
    split: str,
    *,
    num_examples: int,
    layout: Layout,
    image_shape: tuple[int, int, int],
    preprocess: Callable[[Example], Example],
) -> Iterator[Batch]:
    """Every example of `split` once over all processes, padded with `mask` 0 rows so that
    each process runs `ceil(num_examples / eval_batch_size)` steps of the same shape.

    Each process reads its own share, `ceil(eval_batch_size / processes)` examples a step, and
    pads every batch to its rows of `layout.eval_rows` (a multiple of the devices)."""
    rows = layout.eval_share()
    batch = rows.stop - rows.start
    read = -(-layout.eval_batch_size // layout.process_count)  # <= batch: eval_rows rounds up
    steps = layout.eval_steps(num_examples)
    shares = tfds.even_splits(split, n=layout.process_count, drop_remainder=False)
    local_split = shares[layout.process_index]
    n = split_size(builder, local_split) if steps else 0
    if n > steps * read:
        raise RuntimeError(f"{n} examples of {split} do not fit {steps} steps of {read} rows.")
    padding = tf.data.Dataset.from_tensors(
        {
            "image": tf.zeros(image_shape, tf.uint8),
            "label": tf.zeros([], tf.int32),
            "mask": tf.zeros([], tf.float32),
        }
    ).repeat()
    ds = padding
    if n:  # tfds cannot read an empty share (a split with fewer examples than processes)
        ds = _read(builder, local_split, file_seed=None).map(
            preprocess, num_parallel_calls=AUTOTUNE
        )
        ds = ds.concatenate(padding)
    batches = _numpy_batches(ds.take(steps * read), read)
    return batches if read == batch else (pipeline.pad_rows(b, batch) for b in batches)


def eval_example(
    example: Example,
    *,
    transform: Callable[[tf.Tensor], tf.Tensor],
    channels: int,
) -> Example:
    return {
        "image": transform(decode(example["image"], channels)),
        "label": tf.cast(example["label"], tf.int32),
        "mask": tf.ones([], tf.float32),
    }


# --- Image operations -----------------------------------------------------------------------


def decode(encoded: tf.Tensor, channels: int) -> tf.Tensor:
    """JPEG or PNG bytes -> uint8 [h, w, channels]."""
    image = tf.io.decode_image(encoded, channels=channels, expand_animations=False)
    image.set_shape([None, None, channels])
    return image


def resize_to_pixels(image: tf.Tensor, shape: Any) -> tf.Tensor:
    """Bilinear resize of uint8 pixels to `shape`, rounded back to uint8 pixels.

    Bilinear weights are convex, so every value stays within 0..255 and adding 0.5 before the
    truncating cast rounds it: two elementwise passes instead of round, clip and cast."""
    return tf.cast(tf.image.resize(image, shape, method="bilinear") + 0.5, tf.uint8)


def center_crop(image: tf.Tensor, *, resize: int, size: int) -> tf.Tensor:
    """The standard ImageNet evaluation view: shorter side to `resize`, central `size` square."""
    shape = tf.shape(image)[:2]
    scale = resize / tf.cast(tf.reduce_min(shape), tf.float32)
    # At least `resize` on both sides, so that even a tiny image yields a full crop.
    new_shape = tf.maximum(tf.cast(tf.round(tf.cast(shape, tf.float32) * scale), tf.int32), resize)
    image = resize_to_pixels(image, new_shape)
    top, left = (new_shape[0] - size) // 2, (new_shape[1] - size) // 2
    crop = image[top : top + size, left : left + size]
    crop.set_shape([size, size, image.shape[-1]])  # batching and epoch seams need static shapes
    return crop


def inception_window(shape: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(top-left, height-width) of a random crop of 8%-100% of the area and aspect ratio
    3/4-4/3 of an image of `shape` [h, w, ...]; a pure function of the height, width and seed."""
    begin, crop_shape, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.stack([shape[0], shape[1], 1]),
        bounding_boxes=tf.zeros([0, 0, 4], tf.float32),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.08, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    return begin[:2], crop_shape[:2]


def inception_crop(image: tf.Tensor, seed: tf.Tensor, *, size: int) -> tf.Tensor:
    """The inception crop of a decoded image, resized to `size`."""
    begin, crop_shape = inception_window(tf.shape(image), seed)
    crop = tf.slice(image, tf.concat([begin, [0]], 0), tf.concat([crop_shape, [-1]], 0))
    return resize_to_pixels(crop, [size, size])


def decode_inception_crop(
    encoded: tf.Tensor, seed: tf.Tensor, *, size: int, channels: int
) -> tf.Tensor:
    """`inception_crop(decode(encoded))`, decoding only the crop window of a JPEG.

    The window comes from the JPEG header alone, and libjpeg then skips the colour conversion
    and inverse DCT of the rows and columns outside it (on average the crop is about half the
    image). Other formats are decoded whole; the window is the same either way."""

    def jpeg() -> tf.Tensor:
        begin, crop_shape = inception_window(tf.image.extract_jpeg_shape(encoded), seed)
        window = tf.concat([begin, crop_shape], 0)
        crop = tf.image.decode_and_crop_jpeg(encoded, window, channels=channels)
        crop.set_shape([None, None, channels])
        return resize_to_pixels(crop, [size, size])

    def other() -> tf.Tensor:
        return inception_crop(decode(encoded, channels), seed, size=size)

    crop = tf.cond(tf.io.is_jpeg(encoded), jpeg, other)
    crop.set_shape([size, size, channels])  # static, for batching and normalisation
    return crop


def _random_flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    # After the resize, on uint8: the smallest copy of the view there is to mirror.
    return tf.image.stateless_random_flip_left_right(image, seed)


def inception_crop_flip(image: tf.Tensor, seed: tf.Tensor, *, size: int) -> tf.Tensor:
    """The training view of a decoded image: inception crop, then a flip with probability 1/2."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    return _random_flip(inception_crop(image, crop_seed, size=size), flip_seed)


def decode_inception_crop_flip(
    encoded: tf.Tensor, seed: tf.Tensor, *, size: int, channels: int
) -> tf.Tensor:
    """`inception_crop_flip(decode(encoded))`, decoding only the crop window of a JPEG."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    crop = decode_inception_crop(encoded, crop_seed, size=size, channels=channels)
    return _random_flip(crop, flip_seed)


def get_train_transform(name: str, image_size: int, eval_resize: int, channels: int) -> Transform:
    """Training view by name: inception_crop_flip (the ImageNet recipe) | none (eval view)."""
    transforms: dict[str, Transform] = {
        "inception_crop_flip": functools.partial(
            decode_inception_crop_flip, size=image_size, channels=channels
        ),
        "none": lambda encoded, seed: center_crop(
            decode(encoded, channels), resize=eval_resize, size=image_size
        ),
    }
    if name not in transforms:
        raise ConfigError(
            f"Unknown augmentation {name!r} for a streamed dataset; "
            f"choose one of {', '.join(transforms)}."
        )
    return transforms[name]
