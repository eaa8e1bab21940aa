"""Several optimiser steps per compiled call (`steps_per_dispatch`): the same training as one
step per call, with logging, checkpoints, resume and the non-finite rail at call boundaries."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flaxcls import scan_steps
from flaxcls.core.steps import create_train_state, train_step
from flaxcls.errors import TrainingStopped
from flaxcls.modes import train as train_lib
from flaxcls.rundir.checkpoint import Checkpointer
from flaxcls.testing.toy import restored_state, tiny_config, write_npz
from tests.helpers import TinyNet, crash_after, tiny_batch

# 60 training examples in batches of 16: 3 steps an epoch, so validation every 3 steps, logs
# every 4 and 20 steps in all: calls of 8 cross every kind of boundary and end on a short one.
OVERRIDES = {
    "model.name": "tiny_net",  # registered by the `tiny_net` fixture: BatchNorm, dropout, a conv
    "data.augment": "crop_flip",
    "model.dropout_rate": 0.2,
    "num_train_steps": 20,
    "schedule.name": "cosine",
}


def _leaves(state):
    return [np.asarray(x) for x in jax.tree.leaves((state.params, state.opt_state))]


def _metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_scan_steps_equals_the_steps_one_by_one():
    # BatchNorm statistics and the dropout key ride along the scan.
    state = create_train_state(TinyNet(), optax.sgd(0.01, 0.9), jax.random.PRNGKey(0), (8, 8, 3))
    batches = [tiny_batch(8, seed=k) for k in range(5)]
    block = jax.tree.map(lambda *xs: jnp.stack(xs), *batches)
    one, totals = state, None
    step = jax.jit(train_step)
    for k in range(5):
        one, sums = step(one, jax.tree.map(lambda x, k=k: x[k], block))
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    for unroll in (False, True):
        scanned, block_sums = jax.jit(scan_steps(train_step, unroll=unroll))(state, block)
        assert int(scanned.step) == 5
        for x, y in zip(jax.tree.leaves(one), jax.tree.leaves(scanned), strict=True):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(block_sums["nonfinite"]), np.zeros(5))
        for key in ("loss", "correct", "count"):
            np.testing.assert_allclose(float(block_sums[key]), float(totals[key]), rtol=1e-5)


@pytest.mark.parametrize("on_device", [False, True])
def test_eight_steps_per_call_train_as_one(tmp_path, on_device, tiny_net):
    npz = write_npz(str(tmp_path))
    workdirs, results = {}, {}
    for k in (1, 8):
        config = tiny_config(
            npz, **OVERRIDES, **{"steps_per_dispatch": k, "data.on_device": on_device}
        )
        workdirs[k] = str(tmp_path / f"k{k}")
        results[k] = train_lib.train_and_evaluate(config, workdirs[k])
    a, b = restored_state(workdirs[1], config), restored_state(workdirs[8], config)
    assert int(a.step) == int(b.step) == 20
    for x, y in zip(_leaves(a), _leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(results[1]["loss"], results[8]["loss"], rtol=1e-4)
    # Everything periodic happened at the call boundaries 8, 16 and 20.
    assert {m["step"] for m in _metrics(workdirs[8])} == {8, 16, 20}
    ckpt = Checkpointer(os.path.join(workdirs[8], "checkpoints"))
    assert set(ckpt.manager.all_steps()) <= {8, 16, 20} and ckpt.latest_step() == 20
    ckpt.close()
    # A log window of several calls still counts each training example once.
    k1_train = [m for m in _metrics(workdirs[1]) if "train_loss" in m]
    k8_train = [m for m in _metrics(workdirs[8]) if "train_loss" in m]
    assert len(k8_train) == 3 and len(k1_train) > len(k8_train)


def test_resumed_eight_step_calls_equal_an_uninterrupted_run(tmp_path, monkeypatch, tiny_net):
    config = tiny_config(
        write_npz(str(tmp_path)),
        **OVERRIDES,
        **{"steps_per_dispatch": 8, "checkpoint_every_steps": 8, "eval_every_epochs": 100.0},
    )
    straight = str(tmp_path / "straight")
    train_lib.train_and_evaluate(config, straight)

    interrupted = str(tmp_path / "interrupted")
    with monkeypatch.context() as m:
        crash_after(17, m)  # inside the third call's block
        with pytest.raises(KeyboardInterrupt):
            train_lib.train_and_evaluate(config, interrupted)
    assert Checkpointer(os.path.join(interrupted, "checkpoints")).latest_step() == 16
    train_lib.train_and_evaluate(config, interrupted)  # resumes at step 16: one call of 4

    a, b = restored_state(straight, config), restored_state(interrupted, config)
    assert int(a.step) == int(b.step) == 20
    for x, y in zip(_leaves(a), _leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_non_finite_step_is_named_inside_a_call(tmp_path):
    npz = write_npz(str(tmp_path))
    steps = []
    for k in (1, 4):
        config = tiny_config(
            npz,
            **{
                "optimizer.learning_rate": 1e12,
                "optimizer.name": "sgd",
                "optimizer.momentum": 0.0,
                "steps_per_dispatch": k,
            },
        )
        with pytest.raises(TrainingStopped, match=r"stopped at step (\d+)") as error:
            train_lib.train_and_evaluate(config, str(tmp_path / f"k{k}"))
        steps.append(int(str(error.value).split("step ")[1].split(":")[0]))
    assert steps[0] == steps[1]


def test_profile_steps_writes_a_trace_with_the_loop_waits_named(tmp_path):
    config = tiny_config(write_npz(str(tmp_path)), **{"steps_per_dispatch": 2, "profile_steps": 4})
    workdir = str(tmp_path / "run")
    train_lib.train_and_evaluate(config, workdir)
    traces = [
        os.path.join(root, name)
        for root, _, names in os.walk(os.path.join(workdir, "profile"))
        for name in names
        if name.endswith(".xplane.pb")
    ]
    assert len(traces) == 1
    with open(traces[0], "rb") as f:
        content = f.read()
    assert b"host: wait for the metrics of earlier calls" in content
    assert b"host: the next block of batches" in content
