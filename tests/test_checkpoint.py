import jax
import numpy as np
import optax
import orbax.checkpoint as ocp

from flaxcls import create_train_state, get_model
from flaxcls.rundir.checkpoint import Checkpointer


def _state(seed):
    model = get_model("cifar_resnet20", num_classes=10)  # has batch_stats
    return create_train_state(
        model, optax.sgd(0.1, momentum=0.9), jax.random.PRNGKey(seed), (8, 8, 3)
    )


def _assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_restores_every_leaf(tmp_path):
    saved = _state(0).replace(step=7)
    saved = saved.replace(opt_state=jax.tree.map(lambda x: x + 1, saved.opt_state))
    checkpointer = Checkpointer(str(tmp_path))
    checkpointer.save(saved)
    checkpointer.close()

    target = _state(1)  # different values, same structure
    restored = Checkpointer(str(tmp_path)).restore(target).state
    assert int(restored.step) == 7
    _assert_trees_equal(
        (restored.params, restored.batch_stats, restored.opt_state, restored.rng),
        (saved.params, saved.batch_stats, saved.opt_state, saved.rng),
    )


def test_keeps_latest_and_best(tmp_path):
    checkpointer = Checkpointer(str(tmp_path), keep=2)
    state = _state(0)
    for step, accuracy in [(1, 0.5), (2, 0.9), (3, 0.6), (4, 0.7), (5, 0.65)]:
        checkpointer.save(state.replace(step=step), {"val_accuracy": accuracy})
        checkpointer.manager.wait_until_finished()
    assert checkpointer.best_step() == 2
    assert sorted(checkpointer.manager.all_steps()) == [2, 4, 5]
    checkpointer.close()


def test_loop_state_round_trips_and_older_checkpoints_still_restore(tmp_path):
    older = _state(0).replace(step=3)
    with ocp.CheckpointManager(str(tmp_path)) as manager:  # the state alone, as runs once saved
        manager.save(3, args=ocp.args.StandardSave(older))
    checkpointer = Checkpointer(str(tmp_path))
    restored = checkpointer.restore(_state(1))
    assert (restored.step, restored.loop) == (3, {})
    _assert_trees_equal(restored.state.params, older.params)
    loop = {"best_value": 0.25, "validations_without_gain": 2, "loss_level": None}
    checkpointer.save(restored.state.replace(step=4), loop=loop)
    checkpointer.close()
    again = Checkpointer(str(tmp_path)).restore(_state(1))
    assert (again.step, again.loop) == (4, loop)


def test_metrics_without_the_best_metric_name_it_and_the_fix(tmp_path):
    import pytest

    from flaxcls.rundir.checkpoint import CheckpointError

    checkpointer = Checkpointer(str(tmp_path), keep=1)
    state = _state(0)
    checkpointer.save(state.replace(step=1), {"val_accuracy": 0.5})
    with pytest.raises(CheckpointError) as caught:
        checkpointer.save(state.replace(step=2), {"loss": 0.3})
    message = str(caught.value)
    assert "lack 'val_accuracy'" in message and "best_metric=" in message
    assert "disk" not in message and "permissions" not in message
    checkpointer.close()
    assert sorted(checkpointer.manager.all_steps()) == [1]  # nothing written for step 2


def test_a_metric_of_your_own_or_none_at_all(tmp_path):
    state = _state(0)
    by_loss = Checkpointer(str(tmp_path / "by_loss"), keep=1, best_metric="train_loss")
    for step, loss in [(1, 0.9), (2, 0.2), (3, 0.5)]:
        by_loss.save(state.replace(step=step), {"train_loss": loss})
        by_loss.manager.wait_until_finished()
    assert by_loss.best_step() == 2 and sorted(by_loss.manager.all_steps()) == [2, 3]
    by_loss.close()

    newest = Checkpointer(str(tmp_path / "newest"), keep=2, best_metric=None)
    for step in (1, 2, 3):
        newest.save(state.replace(step=step), {"anything": 1.0})
    newest.close()
    assert sorted(newest.manager.all_steps()) == [2, 3]
    restored = Checkpointer(str(tmp_path / "newest"), best_metric=None).restore(_state(1))
    assert restored.step == 3
