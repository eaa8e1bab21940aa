"""Training data held on the devices trains as the host pipeline does, augmentations included."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxcls import train as train_lib
from flaxcls.data.augment import get_augmentation
from tests.helpers import tiny_config, write_npz
from tests.test_train import _params


@pytest.mark.parametrize("augment", ["none", "crop_flip"])
def test_device_held_data_trains_as_the_host_pipeline(tmp_path, augment):
    npz = write_npz(str(tmp_path))
    host_config = tiny_config(npz, **{"data.augment": augment})
    device_config = tiny_config(npz, **{"data.augment": augment, "data.on_device": True})
    host = train_lib.train_and_evaluate(host_config, str(tmp_path / "host"))
    device = train_lib.train_and_evaluate(device_config, str(tmp_path / "device"))
    a = _params(str(tmp_path / "host"), host_config)
    b = _params(str(tmp_path / "device"), device_config)
    assert int(a.step) == int(b.step) == host_config.num_train_steps
    # The host normalises in numpy, the device in XLA (which may fuse a multiply-add): inputs
    # differ in the last bit, and Adam's normalised updates (1e-3 a step) carry that into an
    # element whose gradient is near zero; 1e-5 is 1% of one step.
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5)
    assert host["num_examples"] == device["num_examples"]
    np.testing.assert_allclose(host["loss"], device["loss"], rtol=1e-4)


def test_jax_augmentations_equal_the_numpy_ones():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 9, 7, 3), dtype=np.uint8)
    uniforms = rng.random((6, 3))
    for name in ("flip", "crop", "crop_flip"):
        host = get_augmentation(name, 2)(images, uniforms)
        device = get_augmentation(name, 2, xp=jnp)(jnp.asarray(images), jnp.asarray(uniforms))
        np.testing.assert_array_equal(host, np.asarray(device), err_msg=name)
        assert not np.array_equal(host, images)
