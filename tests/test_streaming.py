"""The tf.data streaming path, on tfds mock data and on a tiny tfds dataset prepared offline.

`tfds.testing.mock_data` ignores split slicing and file shuffling (every split yields the same
`num_examples` examples), so the tests of splits, process shares and exact evaluation use a real
prepared dataset whose labels are unique example ids.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")

from flaxcls.data import Layout, build_input, datasets, streaming  # noqa: E402
from flaxcls.data.sources import DatasetNotPreparedError  # noqa: E402
from flaxcls.errors import ConfigError  # noqa: E402
from tests.tfds_mock import mock_streamed_data  # noqa: E402

MOCK_EXAMPLES = 13  # not a multiple of the batch, so batches straddle epoch boundaries
TINY_TRAIN, TINY_TEST = 53, 23  # 23 divides neither the eval batch (6) nor the processes (2)


def data_config(data_dir: str, **overrides) -> types.SimpleNamespace:
    fields = dict(
        dataset="imagenet2012",
        source="auto",
        path="",
        data_dir=data_dir,
        download=True,
        validation_fraction=0.1,
        test_fraction=0.0,
        num_classes=0,
        augment="inception_crop_flip",
        crop_padding=4,
        image_size=32,
        eval_resize=36,
        shuffle_buffer=8,
    )
    fields.update(overrides)
    return types.SimpleNamespace(**fields)


@pytest.fixture
def mock_input(tmp_path):
    """Builds imagenet2012 inputs on mock data; tfds reads lazily (once per epoch and per
    evaluation), so the mock stays on for the whole test, not only while building."""
    with mock_streamed_data(str(tmp_path), MOCK_EXAMPLES):

        def make(seed=0, **overrides):
            cfg = data_config(str(tmp_path), **overrides)
            return build_input(cfg, global_batch_size=4, eval_batch_size=6, seed=seed)

        yield make


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_batch_shapes_dtypes_and_normalisation(mock_input):
    data = mock_input()
    assert data.info.image_shape == (32, 32, 3)
    # The mock reports every split, sliced or not, at its `num_examples`.
    assert data.split_sizes == {"train": 13, "validation": 13, "test": 13}
    info = datasets.get_dataset_info("imagenet2012")
    low = (0.0 - np.array(info.mean)) / np.array(info.std)
    high = (1.0 - np.array(info.mean)) / np.array(info.std)

    # Streamed batches are uint8 pixels; the steps normalise them on the device.
    batch = next(data.train(0))
    assert batch["image"].shape == (4, 32, 32, 3) and batch["image"].dtype == np.uint8
    assert batch["label"].shape == (4,) and batch["label"].dtype == np.int32
    assert batch["label"].min() >= 0 and batch["label"].max() < 1000
    eval_batches = list(data.evaluate("test"))
    assert len(eval_batches) == data.eval_steps("test") == 3
    for b in [batch, *eval_batches]:
        assert b["image"].dtype == np.uint8
        image = data.normalizer.to_float(b["image"])
        assert np.all(image >= low - 1e-5) and np.all(image <= high + 1e-5)
    last = eval_batches[-1]
    assert last["image"].shape == (6, 32, 32, 3) and last["mask"].dtype == np.float32
    np.testing.assert_array_equal(last["mask"], [1, 0, 0, 0, 0, 0])
    # Random mock pixels: a real image spreads over the range, padding is all zeros.
    assert last["image"][0].std() > 30 and not last["image"][1:].any()


def test_resume_yields_the_uninterrupted_batches(mock_input):
    data = mock_input()
    full = take(data.train(0), 9)  # 36 examples: almost three epochs of 13
    # Augmentation is on: the same example differs between epochs.
    assert not np.array_equal(full[0]["image"], full[4]["image"][:4])
    for start in (1, 3, 6):  # step 3 holds the last example of epoch 0 and three of epoch 1
        assert_same_batches(take(data.train(start), 2), full[start : start + 2])


def test_same_seed_same_batches_other_seed_differs(mock_input):
    first = take(mock_input(seed=3).train(0), 4)
    again = take(mock_input(seed=3).train(0), 4)
    other = take(mock_input(seed=4).train(0), 4)
    assert_same_batches(first, again)
    assert not np.array_equal(first[0]["image"], other[0]["image"])
    # Over an epoch the labels are the same multiset, in another order.
    first_labels = np.concatenate([b["label"] for b in first])[:13]
    other_labels = np.concatenate([b["label"] for b in other])[:13]
    assert sorted(first_labels) == sorted(other_labels)
    assert not np.array_equal(first_labels, other_labels)


def test_evaluation_without_augmentation_is_the_training_view(mock_input):
    # augment='none' trains on the evaluation view; the order is the only difference.
    data = mock_input(augment="none")
    train_images = np.concatenate([b["image"] for b in take(data.train(0), 4)])[:13]
    eval_images = np.concatenate([b["image"] for b in data.evaluate("test")])[:13]
    key = lambda images: sorted(map(bytes, images))  # noqa: E731
    assert key(train_images) == key(eval_images)


def test_small_images_still_give_full_crops():
    image = tf.constant(np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3))
    seed = tf.constant([1, 2], tf.int64)
    center = streaming.center_crop(image, resize=36, size=32)
    crop = streaming.inception_crop_flip(image, seed, size=32)
    assert center.shape == crop.shape == (32, 32, 3)
    flat = tf.constant(np.full((3, 9, 3), 200, np.uint8))
    np.testing.assert_allclose(streaming.center_crop(flat, resize=36, size=32), 200.0)


# --- A real prepared dataset: slicing, process shares and exact evaluation ----------------------


class FlaxclsTinyStream(tfds.core.GeneratorBasedBuilder):
    """JPEGs of assorted sizes (some smaller than the crop) whose label is a unique id."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                    "label": tfds.features.ClassLabel(num_classes=TINY_TRAIN + TINY_TEST),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {
            "train": self._generate_examples(0, TINY_TRAIN),
            "validation": self._generate_examples(TINY_TRAIN, TINY_TEST),
        }

    def _generate_examples(self, first_id, count):
        rng = np.random.default_rng(first_id)
        for i in range(first_id, first_id + count):
            h, w = rng.integers(8, 60, size=2)
            yield i, {"image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "label": i}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    FlaxclsTinyStream(data_dir=data_dir).download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )
    return data_dir


@pytest.fixture
def tiny_input(tiny_dir, monkeypatch):
    def make(
        process_index=0, process_count=1, test_split="validation", device_count=1, **overrides
    ):
        info = datasets.DatasetInfo(
            name="tiny_stream",
            num_classes=TINY_TRAIN + TINY_TEST,
            image_shape=(32, 32, 3),
            mean=(0.5, 0.5, 0.5),
            std=(0.25, 0.25, 0.25),
            tfds_name="flaxcls_tiny_stream",
            test_split=test_split,
            streaming=True,
        )
        monkeypatch.setitem(datasets.DATASETS, "tiny_stream", info)
        cfg = data_config(
            tiny_dir, dataset="tiny_stream", download=False, validation_fraction=0.2, **overrides
        )
        return build_input(
            cfg,
            global_batch_size=6,
            eval_batch_size=6,
            seed=0,
            process_index=process_index,
            process_count=process_count,
            device_count=device_count,
        )

    return make


def labels_of(batches, masked=False):
    if masked:
        return np.concatenate([b["label"][b["mask"] == 1] for b in batches])
    return np.concatenate([b["label"] for b in batches])


def test_validation_is_the_end_of_train(tiny_input, tiny_dir):
    data = tiny_input()
    # round(53 * 0.2) = 11 examples carved from the end, as the in-memory path does.
    assert data.split_sizes == {"train": 42, "validation": 11, "test": TINY_TEST}
    builder = tfds.builder("flaxcls_tiny_stream", data_dir=tiny_dir)
    tail = [int(ex["label"]) for ex in builder.as_dataset(split="train[42:]")]
    validation = labels_of(data.evaluate("validation"), masked=True)
    assert sorted(validation) == sorted(tail)
    epoch = labels_of(take(data.train(0), 7))  # 42 examples = 7 batches of 6
    assert sorted(epoch) == sorted(set(range(TINY_TRAIN)) - set(tail))


def test_two_processes_read_disjoint_shares_and_resume(tiny_input):
    processes = [tiny_input(process_index=i, process_count=2) for i in range(2)]
    # 21 examples each, batches of 3: one epoch is 7 steps, the second starts at step 7.
    runs = [take(data.train(0), 14) for data in processes]
    shares = [labels_of(run[:7]) for run in runs]
    assert len(set(shares[0]) | set(shares[1])) == 42
    for share, run in zip(shares, runs, strict=True):
        second_epoch = labels_of(run[7:])
        assert sorted(second_epoch) == sorted(share) and list(second_epoch) != list(share)
    assert_same_batches(take(processes[1].train(6), 3), runs[1][6:9])


def test_evaluation_counts_every_example_once_over_two_processes(tiny_input):
    runs = [list(tiny_input(i, 2).evaluate("test")) for i in range(2)]
    assert len(runs[0]) == len(runs[1]) == 4  # ceil(23 / 6)
    assert sum(b["mask"].sum() for run in runs for b in run) == TINY_TEST
    seen = np.concatenate([labels_of(run, masked=True) for run in runs])
    assert sorted(seen) == list(range(TINY_TRAIN, TINY_TRAIN + TINY_TEST))
    for b in (b for run in runs for b in run):
        assert b["image"].shape == (3, 32, 32, 3)
        assert not b["image"][b["mask"] == 0].any()


def test_a_process_without_examples_runs_the_same_steps_on_padding(tiny_input):
    # One example over two processes: tfds gives the second an empty share it cannot read.
    runs = [list(tiny_input(i, 2, test_split="validation[:1]").evaluate("test")) for i in range(2)]
    assert len(runs[0]) == len(runs[1]) == 1
    np.testing.assert_array_equal(runs[0][0]["mask"], [1, 0, 0])
    np.testing.assert_array_equal(runs[1][0]["mask"], [0, 0, 0])


@pytest.mark.parametrize("process_count", [1, 2])
def test_evaluation_pads_every_batch_to_a_multiple_of_the_devices(tiny_input, process_count):
    # 6 examples a step, 8 rows on 4 devices: 23 examples in ceil(23 / 6) = 4 padded steps.
    runs = [
        list(tiny_input(i, process_count, device_count=4).evaluate("test"))
        for i in range(process_count)
    ]
    for run in runs:
        assert len(run) == 4
        for b in run:
            assert b["image"].shape == (8 // process_count, 32, 32, 3)
            assert b["mask"][-1] == 0 and not b["image"][b["mask"] == 0].any()
    seen = np.concatenate([labels_of(run, masked=True) for run in runs])
    assert sorted(seen) == list(range(TINY_TRAIN, TINY_TRAIN + TINY_TEST))


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"eval_resize": 16}, "data.eval_resize=16 is smaller than image_size=32"),
        ({"validation_fraction": 1.0}, r"data.validation_fraction=1.0 must be in \[0, 1\)"),
        ({"augment": "crop_flip"}, "Unknown augmentation 'crop_flip' for a streamed dataset"),
    ],
)
def test_config_mistakes_are_config_errors(mock_input, overrides, message):
    with pytest.raises(ConfigError, match=message):
        mock_input(**overrides)


def test_a_batch_bigger_than_the_data_is_a_config_error(tiny_dir):
    builder = tfds.builder("flaxcls_tiny_stream", data_dir=tiny_dir)
    layout = Layout(global_batch_size=64, eval_batch_size=6, seed=0)
    batches = streaming.train_batches(
        builder, "train", 0, layout=layout, shuffle_buffer=8, preprocess=None
    )
    with pytest.raises(ConfigError, match="reads 53 training examples, fewer than its batch of 64"):
        next(batches)


def test_unprepared_dataset_fails_at_once(tmp_path, monkeypatch):
    def no_preparing(*args, **kwargs):
        raise AssertionError("an unprepared dataset was downloaded or prepared")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_preparing)
    cfg = data_config(str(tmp_path), download=False)
    with pytest.raises(DatasetNotPreparedError, match="tfds build imagenet2012"):
        build_input(cfg, global_batch_size=4, eval_batch_size=4, seed=0)
