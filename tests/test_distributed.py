"""Several processes, several devices, one device: the same training, and checkpoints that
move between those topologies."""

import json
import os

import jax
import numpy as np
import pytest

from flaxcls import eval_step
from flaxcls.core import metrics as metrics_lib
from flaxcls.data import build_input
from flaxcls.modes import train as train_lib
from flaxcls.testing.launch import run_py, write_config
from flaxcls.testing.toy import restored_state, tiny_config, write_npz

# Subprocess runs on 8 devices and on two processes.
pytestmark = pytest.mark.slow

# The seed CNN keeps eight steps well conditioned, so float tolerances hold; BatchNorm over the
# global batch is the same jit program on any layout (tests/test_devices.py, tests/test_pmap.py).
OVERRIDES = {
    "model.name": "seed_cnn",
    "optimizer.name": "sgd",
    "optimizer.learning_rate": 0.01,
    "eval_batch_size": 16,  # 31 test examples: a multiple of neither 16 nor 2 processes
    "checkpoint_every_steps": 2,
}
N_TEST = 31


def _assert_same(a, b, what):
    leaves_a = jax.tree.leaves((a.params, a.batch_stats, a.opt_state))
    leaves_b = jax.tree.leaves((b.params, b.batch_stats, b.opt_state))
    assert len(leaves_a) == len(leaves_b) > 10
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5, err_msg=what)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A reference run on this test process's one device, and one run that changes topology
    twice: steps 1-4 on 1 process x 8 devices, 5-6 on 2 processes x 2 devices (each in one
    compiled call of several steps), 7-8 on this process's one device."""
    tmp = tmp_path_factory.mktemp("distributed")
    npz = write_npz(str(tmp), n_train=85, n_test=N_TEST)
    config_file = write_config(str(tmp), npz, **OVERRIDES)
    config = tiny_config(npz, **OVERRIDES)
    steps = lambda n: f"--config.num_train_steps={n}"  # noqa: E731
    ref, moved = str(tmp / "ref"), str(tmp / "moved")
    run_py(config_file, moved, steps(4), "--config.steps_per_dispatch=4", devices=8)
    allow = "--config.allow_config_change=True"  # a longer run on the same workdir
    run_py(
        config_file, moved, steps(6), allow, "--config.steps_per_dispatch=2", processes=2, devices=2
    )
    with open(os.path.join(moved, "test_metrics.json"), encoding="utf-8") as f:
        two_process_test = json.load(f)
    config.num_train_steps = 8
    config.allow_config_change = True
    train_lib.train_and_evaluate(config, moved)
    train_lib.train_and_evaluate(config, ref)
    return ref, moved, two_process_test, config


def test_eight_devices_and_two_processes_train_as_one_device(runs):
    ref, moved, _, config = runs
    _assert_same(
        restored_state(ref, config, 4), restored_state(moved, config, 4), "1 process x 8 devices"
    )
    _assert_same(
        restored_state(ref, config, 6), restored_state(moved, config, 6), "2 processes x 2 devices"
    )


def test_checkpoints_move_between_topologies(runs):
    # Step 4 was saved by 8 devices and restored by 2 processes; step 6 was saved by 2
    # processes and restored by 1 device, which ran to step 8.
    ref, moved, _, config = runs
    _assert_same(
        restored_state(ref, config, 8), restored_state(moved, config, 8), "8 -> 2 processes -> 1"
    )


def test_evaluation_on_two_processes_counts_every_example_once(runs):
    ref, moved, two_process_test, config = runs
    assert two_process_test["step"] == 6
    assert two_process_test["num_examples"] == N_TEST
    state = restored_state(moved, config, 6)  # evaluated again here, on one device
    inputs = build_input(
        config.data, global_batch_size=16, eval_batch_size=config.eval_batch_size, seed=0
    )
    total = None
    for batch in inputs.evaluate("test"):
        total = metrics_lib.add_sums(total, jax.device_get(jax.jit(eval_step)(state, batch)))
    one_device = metrics_lib.summarize(total)
    assert one_device["num_examples"] == N_TEST
    assert two_process_test["accuracy"] == one_device["accuracy"]
    np.testing.assert_allclose(two_process_test["loss"], one_device["loss"], rtol=1e-4)
