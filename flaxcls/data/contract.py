"""The data contract: what every source and pipeline hands the training loop.

A leaf module (it imports nothing from `flaxcls.data`), so sources, pipelines and the steps
share one definition of a batch, of the dataset facts, of normalisation and of how batches are
cut over processes and devices, without importing each other.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from flaxcls.errors import ConfigError

if TYPE_CHECKING:
    import jax

# image (NHWC: float32 normalised, or uint8 pixels that the loop normalises on the device),
# label (int32) and, for evaluation, mask (float32, 0 marks padding); on the host numpy arrays,
# inside a compiled step jax arrays. `flaxcls.train_step` itself takes float images only.
Batch = dict[str, "np.ndarray | jax.Array"]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset; nothing here depends on where the files live."""

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]  # (height, width, channels) as stored; streaming sets resize.
    mean: tuple[float, ...]  # per-channel, on the 0..1 scale
    std: tuple[float, ...]
    tfds_name: str
    train_split: str = "train"
    test_split: str = "test"
    class_names: tuple[str, ...] = ()
    # Folders where a Debian (or other system) package installs the original IDX files.
    local_idx_dirs: tuple[str, ...] = ()
    # Too big to hold in memory: read with tf.data from tfds files instead of as arrays.
    streaming: bool = False


@dataclasses.dataclass(frozen=True)
class ArraySplit:
    """One split held in memory, as every in-memory source yields it."""

    images: np.ndarray  # uint8, (N, H, W, C)
    labels: np.ndarray  # int32, (N,)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, index: slice | np.ndarray) -> ArraySplit:
        return ArraySplit(self.images[index], self.labels[index])


class Normalizer:
    """uint8 -> float32 `(x / 255 - mean) / std`, as one multiply-add by `scale` and `shift`.

    The one definition of the normalisation: the host pipeline, the tf.data pipeline and the
    compiled steps all use these two arrays, so their images agree to the last bit.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        std_arr = np.asarray(std, np.float32)
        self.scale = (1.0 / (255.0 * std_arr)).astype(np.float32)
        self.shift = (-np.asarray(mean, np.float32) / std_arr).astype(np.float32)

    def __call__(self, images: Any) -> Any:
        """uint8 numpy or jax.numpy images -> normalised float32 images."""
        return self.apply(images.astype(np.float32))

    def apply(self, pixels: Any) -> Any:
        """float32 pixels on the 0..255 scale -> normalised; any array library that broadcasts
        with numpy (numpy, jax.numpy, TensorFlow: cast with `tf.cast` first)."""
        return pixels * self.scale + self.shift

    def to_float(self, images: Any) -> Any:
        """Images as the steps take them: uint8 pixels normalised, float images as they are.
        Inside a compiled step the dtype is static, so this costs nothing for float batches."""
        return self(images) if images.dtype == np.uint8 else images

    def float_batch(self, batch: Batch) -> Batch:
        """`batch` with its image `to_float`: how the loop's compiled steps take batches of
        uint8 pixels (a quarter of the bytes of float32 to make, batch and copy to devices)."""
        return batch | {"image": self.to_float(batch["image"])}

    def to_uint8(self, images: np.ndarray) -> np.ndarray:
        """The inverse: normalised images back to their uint8 pixels (uint8 ones as they are)."""
        if images.dtype == np.uint8:
            return images
        pixels = (images - self.shift) / self.scale
        return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def _share(rows: int, process_index: int, process_count: int, name: str) -> slice:
    if rows % process_count:
        raise ConfigError(f"{name}={rows} does not divide over {process_count} processes.")
    per_process = rows // process_count
    return slice(process_index * per_process, (process_index + 1) * per_process)


@dataclasses.dataclass(frozen=True)
class Layout:
    """How batches are cut: their global sizes, the seed of their order, and this process's
    share. Evaluation batches hold `eval_batch_size` examples and are padded with masked rows
    to `eval_rows`, a multiple of the device count, so any batch size runs on any mesh."""

    global_batch_size: int
    eval_batch_size: int
    seed: int
    process_index: int = 0
    process_count: int = 1
    device_count: int = 1

    @property
    def eval_rows(self) -> int:
        """Rows of every evaluation batch: `eval_batch_size` rounded up to a multiple of the
        devices (and processes)."""
        multiple = math.lcm(self.device_count, self.process_count)
        return -(-self.eval_batch_size // multiple) * multiple

    def train_share(self) -> slice:
        """This process's rows of a global training batch."""
        return _share(self.global_batch_size, self.process_index, self.process_count, "batch_size")

    def eval_share(self) -> slice:
        """This process's rows of a (padded) global evaluation batch."""
        return _share(self.eval_rows, self.process_index, self.process_count, "eval_rows")

    def eval_steps(self, num_examples: int) -> int:
        """Evaluation batches that cover `num_examples`: the same on every process."""
        return -(-num_examples // self.eval_batch_size)


@dataclasses.dataclass(frozen=True)
class Input:
    """What the training loop needs from the data, whatever the source.

    Batches hold this process's rows of the global batch: `image` NHWC, float32 normalised
    (in-memory data) or uint8 pixels (streamed data, normalised inside the compiled steps by
    `normalizer.float_batch`), `label` int32, and for evaluation `mask` float32 (0 marks
    padding).
    """

    info: DatasetInfo
    split_sizes: dict[str, int]
    layout: Layout
    train: Callable[[int], Iterator[Batch]]  # start_step -> endless training batches
    evaluate: Callable[[str], Iterator[Batch]]  # split -> every example once, padded
    # In-memory datasets only, for training with the data held on the devices:
    train_split: ArraySplit | None = None  # uint8 images and labels of the training split
    # (start step, with_uniforms=True) -> {"index"[, "uniforms"]}: this process's rows and
    # their augmentation draws
    train_indices: Callable[..., Iterator[Batch]] | None = None
    normalizer: Normalizer | None = None  # uint8 pixels -> the float images steps take

    @property
    def global_batch_size(self) -> int:
        return self.layout.global_batch_size

    @property
    def eval_batch_size(self) -> int:
        """Examples per evaluation step (the batches may hold masked padding rows beyond)."""
        return self.layout.eval_batch_size

    def steps_per_epoch(self) -> int:
        return max(1, self.split_sizes["train"] // self.global_batch_size)

    def eval_steps(self, split: str) -> int:
        return self.layout.eval_steps(self.split_sizes[split])


def normalizing(step: Callable[..., Any], normalizer: Normalizer | None) -> Callable[..., Any]:
    """`step(state, batch, ...)` that also takes batches of uint8 pixels, normalising them
    first: jit it, and the normalisation runs on the device, fused into the step."""
    if normalizer is None:
        return step

    def step_on_pixels(state: Any, batch: Batch, *args: Any, **kwargs: Any) -> Any:
        return step(state, normalizer.float_batch(batch), *args, **kwargs)

    return step_on_pixels
