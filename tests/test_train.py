import json
import os
import types

import jax
import numpy as np
import pytest

from flaxcls.core import sharding
from flaxcls.errors import TrainingStopped
from flaxcls.modes import train as train_lib
from flaxcls.rundir.checkpoint import Checkpointer
from flaxcls.testing.toy import restored_state, tiny_config, write_npz
from tests.helpers import crash_after, register_tiny_net


@pytest.mark.parametrize(
    "model,augment,ema_decay",
    [("seed_cnn", "crop_flip", 0.0), ("tiny_net", "none", 0.0), ("seed_cnn", "none", 0.9)],
)
def test_resume_after_a_crash_equals_an_uninterrupted_run(
    tmp_path, monkeypatch, model, augment, ema_decay
):
    register_tiny_net(monkeypatch)  # BatchNorm statistics resume too
    overrides = {
        "ema_decay": ema_decay,
        "model.name": model,
        "data.augment": augment,
        "checkpoint_every_steps": 3,
        "num_train_steps": 10,
        "schedule.name": "cosine",
        "model.dropout_rate": 0.2,
    }
    config = tiny_config(write_npz(str(tmp_path)), **overrides)
    straight = str(tmp_path / "straight")
    train_lib.train_and_evaluate(config, straight)

    interrupted = str(tmp_path / "interrupted")
    with monkeypatch.context() as m:
        crash_after(7, m)
        with pytest.raises(KeyboardInterrupt):
            train_lib.train_and_evaluate(config, interrupted)
    assert Checkpointer(os.path.join(interrupted, "checkpoints")).latest_step() == 6
    train_lib.train_and_evaluate(config, interrupted)  # resumes at step 6

    a, b = restored_state(straight, config), restored_state(interrupted, config)
    assert int(a.step) == int(b.step) == 10
    assert (a.ema is None) == (ema_decay == 0.0)
    for x, y in zip(
        jax.tree.leaves((a.params, a.batch_stats, a.opt_state, a.ema)),
        jax.tree.leaves((b.params, b.batch_stats, b.opt_state, b.ema)),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    with open(os.path.join(straight, "test_metrics.json")) as f:
        straight_metrics = json.load(f)
    with open(os.path.join(interrupted, "test_metrics.json")) as f:
        assert json.load(f) == straight_metrics


def test_run_writes_results_and_learns(tmp_path):
    config = tiny_config(write_npz(str(tmp_path), n_train=200), num_train_steps=60)
    config.optimizer.learning_rate = 3e-3
    workdir = str(tmp_path / "run")
    result = train_lib.train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "test_metrics.json")) as f:
        written = json.load(f)
    assert written == result
    assert written["num_examples"] == 30 and written["step"] == 60
    assert written["accuracy"] > 0.8  # the toy classes are separable
    lines = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert any("val_accuracy" in line for line in lines)
    assert any("train_loss" in line for line in lines)
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["num_train_steps"] == 60
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
    assert ckpt.latest_step() == 60 and ckpt.best_step() is not None
    ckpt.close()


def test_non_finite_loss_stops_with_the_step(tmp_path):
    config = tiny_config(
        write_npz(str(tmp_path)),
        **{"optimizer.learning_rate": 1e12, "optimizer.name": "sgd", "optimizer.momentum": 0.0},
        divergence_factor=0.0,  # the loss passes through huge finite values on its way
    )
    with pytest.raises(TrainingStopped, match=r"stopped at step \d+: a non-finite training loss"):
        train_lib.train_and_evaluate(config, str(tmp_path / "run"))


def test_batch_size_must_divide_over_devices():
    eight_devices = types.SimpleNamespace(devices=np.empty(8))
    sharding.check_batch_size(64, eight_devices)
    with pytest.raises(ValueError, match="batch_size=60 does not divide over 8 devices"):
        sharding.check_batch_size(60, eight_devices)
