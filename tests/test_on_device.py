"""Training data held on the devices trains exactly as the host pipeline does."""

import jax
import numpy as np
import pytest

from flaxcls import train as train_lib
from flaxcls.errors import ConfigError
from tests.helpers import tiny_config, write_npz
from tests.test_train import _params


def test_device_held_data_trains_as_the_host_pipeline(tmp_path):
    npz = write_npz(str(tmp_path))
    host_config, device_config = tiny_config(npz), tiny_config(npz, **{"data.on_device": True})
    host = train_lib.train_and_evaluate(host_config, str(tmp_path / "host"))
    device = train_lib.train_and_evaluate(device_config, str(tmp_path / "device"))
    a = _params(str(tmp_path / "host"), host_config)
    b = _params(str(tmp_path / "device"), device_config)
    assert int(a.step) == int(b.step) == host_config.num_train_steps
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)
    assert host["num_examples"] == device["num_examples"]
    np.testing.assert_allclose(host["loss"], device["loss"], rtol=1e-4)


def test_device_held_data_says_what_it_cannot_do(tmp_path):
    overrides = {"data.on_device": True, "data.augment": "flip"}
    config = tiny_config(write_npz(str(tmp_path)), **overrides)
    with pytest.raises(ConfigError, match="data.augment=none"):
        train_lib.train_and_evaluate(config, str(tmp_path / "w"))
