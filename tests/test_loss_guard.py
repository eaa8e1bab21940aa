"""The loss rails: a non-finite or diverging loss stops the run in one line, before anything
after it is saved, and a resumed run's rail decides as an uninterrupted one's would."""

import jax
import pytest

from flaxcls.core import steps as steps_lib
from flaxcls.errors import TrainingStopped
from flaxcls.modes import train as train_lib
from flaxcls.rundir.loss_guard import LossGuard
from flaxcls.testing.killing import finished_steps
from flaxcls.testing.launch import run_py_once, write_config
from flaxcls.testing.toy import tiny_config, write_npz


def _observe_all(guard, losses, first_step=1):
    for step, loss in enumerate(losses, start=first_step):
        guard.observe(step, False, loss)


def test_a_loss_far_above_its_level_stops_at_its_step():
    guard = LossGuard(divergence_factor=100.0, num_classes=10)
    _observe_all(guard, [2.3, 1.9, 1.5, 40.0, 1.2])  # a spike under 100x log(10) trains on
    with pytest.raises(TrainingStopped, match=r"step 6: the training loss 1e\+35 is over 100x"):
        guard.observe(6, False, 1e35)


def test_the_rail_is_off_at_zero_and_skips_count_in_skip_mode():
    guard = LossGuard(divergence_factor=0.0, nonfinite="skip", max_consecutive_skips=2)
    _observe_all(guard, [2.3, 1e35])
    guard.observe(3, True, float("nan"))
    guard.observe(4, True, float("nan"))
    assert guard.skipped_steps == 2
    with pytest.raises(TrainingStopped, match="step 5: 3 non-finite steps in a row"):
        guard.observe(5, True, float("nan"))


def test_a_restored_guard_decides_as_the_original():
    losses = [2.3, 2.0, 1.0, 0.5, 0.2, 0.1, 0.05]
    original = LossGuard(divergence_factor=5.0, num_classes=2)
    _observe_all(original, losses)
    resumed = LossGuard(divergence_factor=5.0, num_classes=2)
    resumed.load_state_dict(original.state_dict())
    spike = 20.0  # over 5x the running level (about 2.2: it moves slowly)
    fresh = LossGuard(divergence_factor=5.0, num_classes=2)
    fresh.observe(8, False, spike)  # a guard without the run's level cannot judge it
    for guard in (original, resumed):
        with pytest.raises(TrainingStopped, match="step 8"):
            guard.observe(8, False, spike)


def _explode_loss_values(monkeypatch):
    """The loss reads 1e35 while its gradient stays as it was: nothing turns non-finite, so
    only the divergence rail can see it."""
    real = steps_lib._training_loss

    def exploded(logits, batch, *args):  # label_smoothing, loss_fn
        loss = real(logits, batch, *args)
        return loss + jax.lax.stop_gradient(1e35 * loss)

    monkeypatch.setattr(steps_lib, "_training_loss", exploded)


def test_a_resumed_run_whose_loss_explodes_stops_in_its_first_step(tmp_path, monkeypatch):
    settings = {"num_train_steps": 8, "checkpoint_every_steps": 4, "eval_every_epochs": 100.0}
    config = tiny_config(write_npz(str(tmp_path)), **settings)
    workdir = str(tmp_path / "run")
    train_lib.train_and_evaluate(config, workdir)
    config.num_train_steps = 16
    config.allow_config_change = True  # a longer run on the same workdir
    _explode_loss_values(monkeypatch)
    with pytest.raises(
        TrainingStopped, match=r"stopped at step 9: the training loss .* step 8, is kept"
    ):
        train_lib.train_and_evaluate(config, workdir)
    assert finished_steps(workdir)[-1] == 8


def test_a_non_finite_stop_is_one_line_through_run_py(tmp_path):
    overrides = {
        "optimizer.learning_rate": 1e12,
        "optimizer.name": "sgd",
        "optimizer.momentum": 0.0,
        "num_train_steps": 20,
    }
    config = write_config(str(tmp_path), write_npz(str(tmp_path)), **overrides)
    result = run_py_once(config, str(tmp_path / "run"))
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "error: stopped at step" in errors[0], result.stderr[-3000:]
