import gzip
import struct
import types

import numpy as np
import pytest

from flaxcls.data import (
    ArraySplit,
    DatasetNotPreparedError,
    Layout,
    Normalizer,
    augment,
    build_input,
    idx,
    pipeline,
    sources,
)
from flaxcls.data.datasets import get_dataset_info
from flaxcls.errors import ConfigError
from flaxcls.testing.toy import tiny_config, write_npz


def _write_idx(path, array, compress):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(data)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_round_trip(tmp_path, compress):
    rng = np.random.default_rng(0)
    images = {
        s: rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for s, n in [("train", 7), ("test", 3)]
    }
    labels = {s: rng.integers(0, 10, len(images[s]), dtype=np.uint8) for s in images}
    suffix = ".gz" if compress else ""
    for split, (img_stem, lbl_stem) in idx.IDX_FILES.items():
        _write_idx(str(tmp_path / (img_stem + suffix)), images[split], compress)
        _write_idx(str(tmp_path / (lbl_stem + suffix)), labels[split], compress)
    got_images, got_labels = idx.load_idx_split(str(tmp_path), "train")
    np.testing.assert_array_equal(got_images[..., 0], images["train"])
    np.testing.assert_array_equal(got_labels, labels["train"])
    assert got_images.shape == (7, 28, 28, 1) and got_labels.dtype == np.int32


def test_idx_truncated_file_names_the_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    _write_idx(str(path), np.zeros((4, 5, 5), np.uint8), compress=False)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated or corrupt") as info:
        idx.read_idx(str(path))
    assert str(path) in str(info.value)


def test_npz_validation_errors(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, images=np.zeros((4, 8, 8, 3), np.float32), labels=np.zeros(4, np.int64))
    cfg = tiny_config(str(path)).data
    with pytest.raises(ValueError, match=r"every value in \[0, 1\]: a 0..1 scale or dark"):
        sources.load_splits(cfg)  # more cases in tests/test_bad_data.py


def test_validation_is_carved_from_the_end_of_train(tmp_path):
    cfg = tiny_config(write_npz(str(tmp_path))).data
    info, splits = sources.load_splits(cfg)
    with np.load(cfg.path) as f:
        labels = f["labels"]
    assert len(splits["train"]) == 60 and len(splits["validation"]) == 20
    np.testing.assert_array_equal(splits["validation"].labels, labels[60:])
    assert info.num_classes == 3 and info.image_shape == (28, 28, 1)


def _array_input(tmp_path, **kw):
    cfg = tiny_config(write_npz(str(tmp_path)), **{"data.augment": "crop_flip"}).data
    return build_input(cfg, global_batch_size=16, eval_batch_size=24, seed=3, **kw)


def test_training_batches_resume_exactly(tmp_path):
    inputs = _array_input(tmp_path)
    it = inputs.train(0)
    first = [next(it) for _ in range(9)]  # 60 examples, 16 per batch: crosses epoch boundaries
    resumed = inputs.train(5)
    for expected in first[5:]:
        got = next(resumed)
        np.testing.assert_array_equal(got["image"], expected["image"])
        np.testing.assert_array_equal(got["label"], expected["label"])


def test_each_epoch_is_a_permutation(tmp_path):
    n, batch, seed = 48, 16, 7
    seen = np.concatenate([pipeline.global_indices(seed, s, batch, n) for s in range(3)])
    assert sorted(seen.tolist()) == list(range(n))
    second_epoch = np.concatenate([pipeline.global_indices(seed, s, batch, n) for s in range(3, 6)])
    assert sorted(second_epoch.tolist()) == list(range(n))
    assert not np.array_equal(seen, second_epoch)


def test_processes_see_their_rows_of_the_same_global_batch(tmp_path):
    whole = next(_array_input(tmp_path).train(4))
    parts = [
        next(_array_input(tmp_path, process_index=i, process_count=2).train(4)) for i in range(2)
    ]
    for key in ("image", "label"):
        np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])


def test_random_crop_and_flip_match_a_loop_reference():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 5, 7, 2), dtype=np.uint8)
    uniforms = rng.random((6, augment.NUM_UNIFORMS))
    got = augment.get_augmentation("crop_flip", crop_padding=2)(images, uniforms)
    for i in range(6):
        top, left = int(uniforms[i, 1] * 5), int(uniforms[i, 2] * 5)
        padded = np.zeros((9, 11, 2), np.uint8)
        padded[2:7, 2:9] = images[i]
        expected = padded[top : top + 5, left : left + 7]
        if uniforms[i, 0] < 0.5:
            expected = expected[:, ::-1]
        np.testing.assert_array_equal(got[i], expected)


@pytest.mark.parametrize("process_count,device_count", [(1, 1), (3, 3), (1, 8), (2, 8)])
def test_eval_batches_cover_every_example_once(process_count, device_count):
    n, batch = 53, 12  # 53 divides neither the batch nor the process count; 12 not the devices
    split = ArraySplit(np.zeros((n, 2, 2, 1), np.uint8), np.arange(n, dtype=np.int32))
    normalize = Normalizer((0.0,), (1.0,))
    rows = -(-batch // device_count) * device_count  # 12 -> 16 rows on 8 devices
    seen, steps = [], []
    for p in range(process_count):
        layout = Layout(batch, batch, 0, p, process_count, device_count)
        batches = list(pipeline.eval_batches(split, layout, normalize=normalize))
        steps.append(len(batches))
        for b in batches:
            assert b["label"].shape == (rows // process_count,)
            seen.extend(b["label"][b["mask"] == 1].tolist())
    assert steps == [layout.eval_steps(n)] * process_count == [5] * process_count
    assert sorted(seen) == list(range(n))


def test_eval_batch_of_500_pads_to_504_rows_on_8_devices(tmp_path):
    cfg = tiny_config(write_npz(str(tmp_path), n_test=1100)).data
    inputs = build_input(cfg, global_batch_size=16, eval_batch_size=500, seed=0, device_count=8)
    batches = list(inputs.evaluate("test"))
    assert len(batches) == inputs.eval_steps("test") == 3
    assert [len(b["label"]) for b in batches] == [504] * 3
    assert [int(b["mask"].sum()) for b in batches] == [500, 500, 100]
    np.testing.assert_array_equal(batches[0]["mask"][496:], [1, 1, 1, 1, 0, 0, 0, 0])
    real = np.concatenate([b["label"][b["mask"] == 1] for b in batches])
    with np.load(cfg.path) as f:
        np.testing.assert_array_equal(real, f["test_labels"])


def test_padded_evaluation_has_the_metrics_of_an_unpadded_one(tmp_path):
    """500 -> 504 rows on 8 devices: the 4 masked rows change nothing, not even the count."""
    import jax
    import optax

    from flaxcls import create_train_state, eval_step
    from flaxcls.core.metrics import add_sums, summarize
    from tests.helpers import TinyNet

    cfg = tiny_config(write_npz(str(tmp_path), n_test=1100)).data
    state = create_train_state(TinyNet(), optax.sgd(0.1), jax.random.PRNGKey(0), (28, 28, 1))
    step = jax.jit(eval_step)

    def evaluate(device_count):
        inputs = build_input(
            cfg, global_batch_size=16, eval_batch_size=500, seed=0, device_count=device_count
        )
        total, rows = None, set()
        for batch in inputs.evaluate("test"):
            rows.add(len(batch["label"]))
            total = add_sums(total, jax.device_get(step(state, batch)))
        return summarize(total), rows

    padded, padded_rows = evaluate(8)
    plain, plain_rows = evaluate(1)
    assert padded_rows == {504} and plain_rows == {500}
    assert padded["num_examples"] == plain["num_examples"] == 1100
    assert padded["accuracy"] == plain["accuracy"]
    assert padded["top5_accuracy"] == plain["top5_accuracy"]
    assert padded["loss"] == pytest.approx(plain["loss"], rel=1e-6)


def test_normalizer_is_one_formula_for_numpy_jax_and_tensorflow():
    import jax.numpy as jnp

    mean, std = (0.2, 0.5, 0.7), (0.3, 0.25, 0.2)
    normalize = Normalizer(mean, std)
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=-1)
    expected = (pixels / 255.0 - np.array(mean)) / np.array(std)
    on_host = normalize(pixels)
    assert on_host.dtype == np.float32
    np.testing.assert_allclose(on_host, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(normalize(jnp.asarray(pixels))), on_host)
    np.testing.assert_array_equal(normalize.to_uint8(on_host), pixels)
    tf = pytest.importorskip("tensorflow")
    in_tf = normalize.apply(tf.cast(tf.constant(pixels), tf.float32))
    np.testing.assert_array_equal(in_tf.numpy(), on_host)


def test_layout_pads_evaluation_rows_to_the_devices_and_processes():
    assert Layout(64, 500, 0, device_count=8).eval_rows == 504
    assert Layout(64, 504, 0, device_count=8).eval_rows == 504
    assert Layout(64, 500, 0, 1, 2, device_count=8).eval_share() == slice(252, 504)
    assert Layout(64, 7, 0, 0, 3).eval_rows == 9  # three processes of one device each
    with pytest.raises(ConfigError, match="batch_size=64 does not divide over 3 processes"):
        Layout(64, 500, 0, 0, 3).train_share()


def test_every_source_is_resolved_through_the_registry(tmp_path):
    npz = write_npz(str(tmp_path))
    picks = {
        ("custom", "auto", npz): "custom",
        ("folder", "auto", str(tmp_path)): "folder",
        ("fashion_mnist", "auto", npz): "npz",
        ("fashion_mnist", "auto", str(tmp_path)): "idx",
        ("cifar10", "auto", ""): "tfds",
        ("cifar10", "tfds", ""): "tfds",
        ("mnist", "idx", str(tmp_path)): "idx",
    }
    for (dataset, source, path), expected in picks.items():
        cfg = types.SimpleNamespace(dataset=dataset, source=source, path=path)
        assert sources.source_name(cfg) == expected
        assert expected in sources.SOURCES
    with pytest.raises(ConfigError, match="data.source='folder'; choose one of auto, tfds, idx"):
        sources.source_name(types.SimpleNamespace(dataset="cifar10", source="folder", path=""))
    with pytest.raises(ConfigError, match="data.dataset='custom' needs data.path"):
        sources.load_splits(tiny_config("", **{"data.source": "auto"}).data)


def test_unprepared_tfds_dataset_fails_at_once(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")

    def no_preparing(*args, **kwargs):
        raise AssertionError("an unprepared dataset was downloaded or prepared")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_preparing)
    with pytest.raises(DatasetNotPreparedError, match="tfds build cifar10"):
        sources.load_splits(
            tiny_config(
                "x",
                **{
                    "data.dataset": "cifar10",
                    "data.source": "tfds",
                    "data.data_dir": str(tmp_path),
                },
            ).data
        )


def test_tfds_source_under_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    cfg = tiny_config(
        "",
        **{
            "data.dataset": "cifar10",
            "data.source": "tfds",
            "data.download": True,
            "data.data_dir": str(tmp_path),
        },
    ).data
    with tfds.testing.mock_data(num_examples=40):
        info, splits = sources.load_splits(cfg)
    assert info.num_classes == 10
    assert (
        splits["train"].images.shape == (30, 32, 32, 3) and splits["train"].images.dtype == np.uint8
    )
    assert len(splits["validation"]) == 10 and len(splits["test"]) == 40


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(ValueError, match="cifar10.*fashion_mnist"):
        get_dataset_info("cifar11")
