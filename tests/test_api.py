"""The config-free data and optimiser functions against the config path they stand in for."""

import itertools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

from configs import default
from flaxcls.core.optim import create_optimizer, make_optimizer
from flaxcls.data import api, build_input
from flaxcls.errors import ConfigError
from flaxcls.testing.toy import write_npz

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config_input(batch_size=8, eval_batch_size=8, seed=0, **data_fields):
    data = default.get_config().data
    data.update(data_fields)
    return build_input(
        data, global_batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed
    )


def _assert_same_batches(got, want):
    got, want = list(got), list(want)
    assert len(got) == len(want) > 0
    for a, b in zip(got, want, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype
            np.testing.assert_array_equal(a[key], b[key])


def _write_folder(root, classes=("cat", "dog", "owl"), per_class=6):
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        os.makedirs(os.path.join(root, name))
        for i in range(per_class):
            size = (20 + 3 * i, 18 + 2 * c)
            pixels = rng.integers(40 * c, 40 * c + 100, (*size[::-1], 3)).astype(np.uint8)
            Image.fromarray(pixels, "RGB").save(os.path.join(root, name, f"{i}.png"))
    return str(root)


def test_npz_arrays_and_batches_match_build_input(tmp_path):
    path = write_npz(str(tmp_path))
    want = _config_input(seed=3, dataset="custom", source="npz", path=path, augment="crop_flip")
    assert api.dataset_info(path) == want.info
    _assert_same_batches(
        api.batches(path, batch_size=8, seed=3, augment="crop_flip", steps=14),
        itertools.islice(want.train(0), 14),
    )
    _assert_same_batches(
        api.batches(path, batch_size=8, seed=3, augment="crop_flip", start_step=5, steps=2),
        itertools.islice(want.train(5), 2),
    )
    for split in ("validation", "test"):
        _assert_same_batches(api.eval_batches(path, split, batch_size=8), want.evaluate(split))
    # uint8 arrays: exactly the file's, with the last 20% of train held out for validation.
    with np.load(path) as f:
        expected = {
            "train": (f["images"][:64], f["labels"][:64]),
            "validation": (f["images"][64:], f["labels"][64:]),
            "test": (f["test_images"], f["test_labels"]),
        }
    for split, (images, labels) in expected.items():
        got_images, got_labels = api.load_arrays(path, split)
        assert got_images.dtype == np.uint8 and got_labels.dtype == np.int32
        np.testing.assert_array_equal(got_images, images)
        np.testing.assert_array_equal(got_labels, labels)
    raw = next(api.eval_batches(path, "test", batch_size=30, normalize=False))
    np.testing.assert_array_equal(raw["image"], expected["test"][0])


def test_folder_arrays_and_batches_match_build_input(tmp_path):
    root = _write_folder(tmp_path / "images")
    options = dict(image_size=12, validation_fraction=0.25, test_fraction=0.25)
    want = _config_input(batch_size=4, eval_batch_size=3, dataset="folder", path=root, **options)
    assert api.dataset_info(root, **options) == want.info
    assert want.info.class_names == ("cat", "dog", "owl")
    images, labels = api.load_arrays(root, "train", **options)
    np.testing.assert_array_equal(images, want.train_split.images)
    np.testing.assert_array_equal(labels, want.train_split.labels)
    _assert_same_batches(
        api.batches(root, batch_size=4, epochs=2, **options),
        itertools.islice(want.train(0), 2 * want.steps_per_epoch()),
    )
    for split in ("validation", "test"):
        _assert_same_batches(
            api.eval_batches(root, split, batch_size=3, **options), want.evaluate(split)
        )
        images, labels = api.load_arrays(root, split, **options)
        assert len(images) == len(labels) == want.split_sizes[split]
        batch = next(
            api.eval_batches(root, split, batch_size=len(images), normalize=False, **options)
        )
        np.testing.assert_array_equal(images, batch["image"])


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda p: api.batches(p, validation_frac=0.1), "'validation_frac'.*'validation_fraction'"),
        (lambda p: api.load_arrays(p, bach_size=3), "'bach_size'.*Valid keywords: split, source"),
        (lambda p: api.eval_batches(p, bach_size=3), "did you mean 'batch_size'"),
        (lambda p: api.batches(p, mixup_alpha=0.2), "inside the training step"),
        (lambda p: api.batches(p, split="test"), r"eval_batches\(split=...\)"),
        (lambda p: api.batches(p, path="x.npz"), "for named datasets"),
        (lambda p: api.batches(p, steps=2, epochs=1), "not both"),
    ],
)
def test_bad_keywords_are_named(tmp_path, call, match):
    with pytest.raises(TypeError, match=match):
        call(write_npz(str(tmp_path)))


def test_bad_values_and_names_are_config_errors(tmp_path):
    path = write_npz(str(tmp_path))
    with pytest.raises(ConfigError, match=r"^validation_fraction=1.5 must be in \[0, 1\)"):
        api.load_arrays(path, validation_fraction=1.5)
    with pytest.raises(ConfigError, match="split='val'; choose one of train, validation, test"):
        api.load_arrays(path, "val")
    with pytest.raises(ConfigError, match="neither a dataset name .*fashion_mnist"):
        api.batches(str(tmp_path / "missing.npz"))


def _schedule_config(name, schedule):
    config = default.get_config()
    config.optimizer.update(name=name, learning_rate=0.3, weight_decay=0.05, grad_clip_norm=1.0)
    config.schedule.update(name=schedule, warmup_epochs=1.5, decay_epochs=(1, 2.5))
    config.schedule.end_factor = 0.01
    return config


def _updates(tx, steps=6):
    params = {
        "conv": {"kernel": jnp.linspace(-1.0, 1.0, 12).reshape(2, 2, 1, 3)},
        "head": {"kernel": jnp.linspace(0.5, -0.5, 6).reshape(3, 2), "bias": jnp.ones(2)},
    }
    state, out = tx.init(params), []
    for i in range(steps):
        grads = jax.tree.map(lambda p, i=i: jnp.sin(p * (i + 1)) * 2.0, params)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        out.append(updates)
    return out


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("schedule", ["warmup_cosine", "step"])
def test_make_optimizer_matches_create_optimizer(name, schedule):
    config = _schedule_config(name, schedule)
    from_config = create_optimizer(config, steps_per_epoch=4, total_steps=6)
    plain = make_optimizer(
        name,
        0.3,
        schedule=schedule,
        total_steps=6,
        warmup_steps=6,  # 1.5 epochs of 4 steps
        decay_steps=(4, 10),
        end_factor=0.01,
        weight_decay=0.05,
        grad_clip_norm=1.0,
    )
    for got, want in zip(_updates(plain), _updates(from_config), strict=True):
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_array_equal(a, b)


def test_decaying_schedules_need_total_steps():
    with pytest.raises(ConfigError, match="needs total_steps"):
        make_optimizer("sgd", 0.1, schedule="cosine")
    with pytest.raises(ConfigError, match="choose one of sgd, adam, adamw"):
        make_optimizer("lamb")


def test_example_trains_and_reports_test_accuracy(tmp_path):
    path = write_npz(str(tmp_path))
    script = os.path.join(ROOT, "examples", "train_fashion_mnist.py")
    result = subprocess.run(
        [sys.executable, script, "--data", path, "--steps", "3", "--batch-size", "16"],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"JAX_PLATFORMS": "cpu"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "test accuracy" in result.stdout and "on 30 images" in result.stdout
