"""The moving average of the weights (`ema_decay`): its arithmetic, who uses it, and resume."""

import jax
import numpy as np
import optax
import pytest

from flaxcls import create_train_state, eval_step, train_step
from flaxcls.core.steps import predict
from flaxcls.errors import ConfigError
from flaxcls.modes import train as train_lib
from flaxcls.testing.toy import tiny_config, write_npz
from tests.helpers import TinyNet, tiny_batch

DECAY = 0.8


def _weights(state):
    return jax.device_get({"params": state.params, "batch_stats": state.batch_stats})


def test_ema_follows_the_weights_by_hand():
    """After each step: ema = d_t * ema + (1 - d_t) * weights, d_t = min(decay, (1+t)/(10+t))."""
    state = create_train_state(
        TinyNet(), optax.sgd(0.5), jax.random.PRNGKey(0), (8, 8, 3), ema_decay=DECAY
    )
    expected = _weights(state)
    step = jax.jit(train_step)
    for t in range(12):
        state, _ = step(state, tiny_batch(seed=t))
        d = min(DECAY, (1 + t) / (10 + t))
        expected = jax.tree.map(lambda e, w, d=d: d * e + (1 - d) * w, expected, _weights(state))
    got = jax.tree.leaves(jax.device_get(state.ema))
    weights = jax.tree.leaves(_weights(state))
    for e, g in zip(jax.tree.leaves(expected), got, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
    # ...and it is an average, not the weights themselves
    assert any(not np.allclose(g, w) for g, w in zip(got, weights, strict=True))


def test_evaluation_uses_the_average():
    state = create_train_state(
        TinyNet(), optax.sgd(0.5), jax.random.PRNGKey(0), (8, 8, 3), ema_decay=DECAY
    )
    for t in range(5):
        state, _ = jax.jit(train_step)(state, tiny_batch(seed=t))
    as_weights = state.replace(
        params=state.ema["params"], batch_stats=state.ema["batch_stats"], ema=None
    )
    batch = tiny_batch(seed=99)
    np.testing.assert_allclose(
        predict(state, batch["image"]), predict(as_weights, batch["image"]), rtol=1e-6
    )
    loss = float(eval_step(as_weights, batch)["loss"])
    assert float(eval_step(state, batch)["loss"]) == pytest.approx(loss, rel=1e-6)
    without = state.replace(ema=None)
    assert not np.allclose(predict(state, batch["image"]), predict(without, batch["image"]))


def test_no_average_unless_asked():
    state = create_train_state(TinyNet(), optax.sgd(0.5), jax.random.PRNGKey(0), (8, 8, 3))
    state, _ = jax.jit(train_step)(state, tiny_batch())
    assert state.ema is None


def test_bad_decay_is_refused(tmp_path):
    config = tiny_config(write_npz(str(tmp_path)), ema_decay=1.0)
    with pytest.raises(ConfigError, match=r"ema_decay=1.0 must be in \[0, 1\)"):
        train_lib.train_and_evaluate(config, str(tmp_path / "run"))
