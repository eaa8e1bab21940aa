"""The speedrun recipe (configs/cifar10_speedrun.py) as a run: it resumes exactly, and the
choices it leaves to the platform are the documented ones. Its parity with airbench94's own
code is tests/test_speedrun_parity.py."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cifar10_speedrun
from flaxcls.core import sharding
from flaxcls.modes import train as train_lib
from flaxcls.modes.build import compute_dtype
from flaxcls.rundir.checkpoint import Checkpointer
from flaxcls.testing.toy import restored_state, tiny_config, write_npz
from tests.helpers import crash_after


def speedrun_config(npz: str, **overrides):
    """The recipe on 80 generated 28x28x1 images, batches of 16 (5 steps an epoch), 12 steps:
    the whitening bias frozen after step 5, lookahead at steps 5 and 10 and its final copy."""
    config = cifar10_speedrun.speedrun(tiny_config(npz))
    settings = {
        "batch_size": 16,
        "eval_batch_size": 24,
        "num_train_steps": 12,
        "optimizer.freeze_after_epochs": 1.0,
        "data.on_device": False,  # crash_after stops the host pipeline
        "checkpoint_every_steps": 5,
        "eval_every_epochs": 100.0,
        "progress_bar": False,
        **overrides,
    }
    config.update_from_flattened_dict(settings)
    return config


def test_resumed_speedrun_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    config = speedrun_config(write_npz(str(tmp_path)))
    straight = str(tmp_path / "straight")
    train_lib.train_and_evaluate(config, straight)

    interrupted = str(tmp_path / "interrupted")
    with monkeypatch.context() as m:
        crash_after(7, m)
        with pytest.raises(KeyboardInterrupt):
            train_lib.train_and_evaluate(config, interrupted)
    assert Checkpointer(os.path.join(interrupted, "checkpoints")).latest_step() == 5
    train_lib.train_and_evaluate(config, interrupted)

    a, b = restored_state(straight, config), restored_state(interrupted, config)
    assert int(a.step) == int(b.step) == 12
    # the slow weights are saved and restored with the rest; after the last step they are
    # the weights (the final copy)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    for x, y in zip(jax.tree.leaves(a.lookahead["params"]), jax.tree.leaves(a.params), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_platform_choices_on_a_cpu(tmp_path):
    config = speedrun_config(write_npz(str(tmp_path)))
    mesh = sharding.make_mesh()
    assert config.steps_per_dispatch == 0 and config.model.dtype == "auto"
    assert train_lib.steps_per_dispatch(config, mesh) == 1  # on CPUs
    assert compute_dtype("auto") == jnp.float32  # bfloat16 is emulated, and slow, on CPUs
    config.steps_per_dispatch = 5
    assert train_lib.steps_per_dispatch(config, mesh) == 5
