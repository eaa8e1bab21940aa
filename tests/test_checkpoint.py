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
