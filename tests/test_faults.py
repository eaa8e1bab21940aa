"""Nothing lost: kills at random moments, torn and corrupt checkpoints, failed saves, NaNs."""

import errno
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from flaxcls.core import steps as steps_lib
from flaxcls.data import pipeline
from flaxcls.errors import TrainingStopped
from flaxcls.models import get_model
from flaxcls.modes import train as train_lib
from flaxcls.rundir.checkpoint import CheckpointError
from flaxcls.testing.killing import finished_steps, run_with_kills
from flaxcls.testing.launch import write_config
from flaxcls.testing.toy import restored_state, tiny_config, write_npz
from tests.helpers import (
    LONG,
    assert_same_params,
    largest_file,
    poison_when_first_label_is_zero,
    trained_run,
)


@pytest.mark.slow
def test_killed_at_random_moments_ends_bit_identical(tmp_path):
    npz = write_npz(str(tmp_path))
    cache = str(tmp_path / "jax_cache")  # restarts skip recompiling
    config_file = write_config(str(tmp_path), npz, **LONG, compilation_cache_dir=cache)
    report = run_with_kills(config_file, str(tmp_path / "killed"), kills=3, seed=1)
    assert report.final_returncode == 0
    assert (report.kills, report.resumes, report.lost) == (3, 3, 0), report
    reference = tiny_config(npz, **LONG)
    train_lib.train_and_evaluate(reference, str(tmp_path / "reference"))
    killed = restored_state(str(tmp_path / "killed"), reference)
    assert int(killed.step) == 300
    assert_same_params(killed, restored_state(str(tmp_path / "reference"), reference))


@pytest.mark.parametrize("damage", ["truncate", "bitflip", "delete"])
def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys, damage):
    config, workdir = trained_run(tmp_path)
    steps = finished_steps(workdir)
    assert steps[-2:] == [15, 20]
    previous = restored_state(workdir, config, step=15)
    target = largest_file(os.path.join(workdir, "checkpoints", "20"))
    data = open(target, "rb").read()
    if damage == "truncate":
        open(target, "wb").write(data[: len(data) // 2])
    elif damage == "bitflip":
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0x10
        open(target, "wb").write(bytes(flipped))
    else:
        os.remove(target)
    capsys.readouterr()
    restored = restored_state(workdir, config)  # the latest: 20 is refused, 15 is used
    message = capsys.readouterr().out
    assert "step 20" in message and "Restored step 15 instead" in message
    assert int(restored.step) == 15
    assert_same_params(restored, previous)


def test_no_usable_checkpoint_is_a_clear_error(tmp_path):
    config, workdir = trained_run(tmp_path, keep_checkpoints=1)
    for step in finished_steps(workdir):
        os.remove(largest_file(os.path.join(workdir, "checkpoints", str(step))))
    with pytest.raises(CheckpointError, match="no usable checkpoint.*Moved aside, not deleted"):
        restored_state(workdir, config)


def _failing_saves_from(monkeypatch, first_failing_step):
    real_save = ocp.CheckpointManager.save

    def save(self, step, *args, **kwargs):
        if step >= first_failing_step:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", save)


def test_disk_full_stops_with_the_last_checkpoint_intact(tmp_path, monkeypatch):
    _failing_saves_from(monkeypatch, 12)
    config = tiny_config(
        write_npz(str(tmp_path)), **{**LONG, "num_train_steps": 20, "eval_every_epochs": 100.0}
    )
    workdir = str(tmp_path / "run")
    with pytest.raises(CheckpointError, match="step 15 .*No space left.*step 10 is intact"):
        train_lib.train_and_evaluate(config, workdir)
    monkeypatch.undo()
    assert int(restored_state(workdir, config).step) == 10
    train_lib.train_and_evaluate(config, workdir)  # space again: the same command resumes
    assert int(restored_state(workdir, config).step) == 20


def test_disk_full_can_be_survived_by_option(tmp_path, monkeypatch, capsys):
    _failing_saves_from(monkeypatch, 12)
    config = tiny_config(
        write_npz(str(tmp_path)),
        **{**LONG, "num_train_steps": 20, "on_save_error": "continue", "eval_every_epochs": 100.0},
    )
    test = train_lib.train_and_evaluate(config, str(tmp_path / "run"))
    assert test["step"] == 20 and "Training continues" in capsys.readouterr().out
    monkeypatch.undo()
    assert finished_steps(str(tmp_path / "run"))[-1] == 10


def test_nan_stops_at_its_step_and_keeps_finite_checkpoints(tmp_path):
    config = tiny_config(
        write_npz(str(tmp_path)),
        **{
            "optimizer.learning_rate": 1e12,
            "optimizer.name": "sgd",
            "optimizer.momentum": 0.0,
            "checkpoint_every_steps": 1,
        },
    )
    with pytest.raises(TrainingStopped, match=r"stopped at step (\d+)"):
        train_lib.train_and_evaluate(config, str(tmp_path / "run"))
    saved = restored_state(str(tmp_path / "run"), config)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(saved.params))


@pytest.mark.parametrize("steps_per_dispatch", [1, 8])
def test_nan_updates_are_skipped_and_counted_by_option(tmp_path, monkeypatch, steps_per_dispatch):
    poison_when_first_label_is_zero(monkeypatch)
    npz = write_npz(str(tmp_path))
    overrides = {"nonfinite": "skip", "num_train_steps": 30, "log_every_steps": 30}
    config = tiny_config(npz, **overrides, steps_per_dispatch=steps_per_dispatch)
    train_lib.train_and_evaluate(config, str(tmp_path / "run"))
    state = restored_state(str(tmp_path / "run"), config)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(state.params))
    labels = np.load(npz)["labels"][:60]  # the 60 training examples (25% validation held out)
    poisoned = sum(
        labels[pipeline.global_indices(config.seed, s, 16, 60)[0]] == 0 for s in range(30)
    )
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        last = [json.loads(line) for line in f if "skipped_steps" in line][-1]
    assert 0 < poisoned < 30 and last["skipped_steps"] == poisoned
    assert int(state.opt_state.total_notfinite) == poisoned


def test_skipped_update_leaves_params_and_batch_stats(tmp_path):
    model = get_model("cifar_resnet20", num_classes=3)
    tx = optax.apply_if_finite(optax.sgd(0.1), max_consecutive_errors=100)
    state = steps_lib.create_train_state(model, tx, jax.random.PRNGKey(0), (8, 8, 3))
    batch = {
        "image": jnp.ones((4, 8, 8, 3)).at[0, 0, 0, 0].set(jnp.inf),
        "label": jnp.zeros(4, jnp.int32),
    }
    new, sums = jax.jit(steps_lib.train_step)(state, batch)
    assert float(sums["nonfinite"]) == 1.0
    assert_same_params(new.params, state.params)
    assert_same_params(new.batch_stats, state.batch_stats)
