"""The learning rate, visible: in the optimiser state when injected (read, and set between
steps without recompiling), and in every run's train metrics."""

import json
import os

import jax
import numpy as np
import optax
import pytest

from flaxcls import create_train_state, make_optimizer, make_schedule, train_step
from flaxcls.core.optim import learning_rate_of, set_learning_rate
from flaxcls.errors import ConfigError
from flaxcls.modes import train as train_lib
from flaxcls.testing.toy import tiny_config, write_npz
from tests.helpers import TinyNet, tiny_batch


def _state(tx):
    return create_train_state(TinyNet(), tx, jax.random.PRNGKey(0), (8, 8, 3))


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_an_injected_rate_updates_as_the_plain_optimiser_does(name):
    options = dict(weight_decay=1e-3, schedule="cosine", total_steps=10, grad_clip_norm=1.0)
    plain = _state(make_optimizer(name, 0.05, **options))
    injected = _state(make_optimizer(name, 0.05, inject_learning_rate=True, **options))
    step, batch = jax.jit(train_step), tiny_batch(16)
    for _ in range(3):
        plain, _ = step(plain, batch)
        injected, _ = step(injected, batch)
    for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(injected.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    # The rate of the last update (the third: schedule step 2).
    expected = float(make_schedule("cosine", 0.05, total_steps=10)(2))
    assert float(learning_rate_of(injected.opt_state)) == pytest.approx(expected, rel=1e-6)


def test_setting_the_rate_mid_run_reuses_the_compiled_step():
    traces = []

    def counted(state, batch):
        traces.append(1)
        return train_step(state, batch)

    step, batch = jax.jit(counted, donate_argnums=0), tiny_batch(16)
    state = _state(make_optimizer("sgd", 0.1, inject_learning_rate=True, skip_nonfinite=True))
    state, _ = step(state, batch)
    state = state.replace(opt_state=set_learning_rate(state.opt_state, 0.0))
    assert float(learning_rate_of(state.opt_state)) == 0.0
    before = jax.device_get(state.params)
    state, _ = step(state, batch)
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # rate 0: no change
    assert len(traces) == 1


def test_without_injection_reading_it_says_how():
    state = _state(make_optimizer("adam", 1e-3))
    with pytest.raises(ValueError, match="inject_learning_rate=True"):
        learning_rate_of(state.opt_state)
    with pytest.raises(ValueError, match="inject_learning_rate=True"):
        set_learning_rate(optax.sgd(0.1).init({}), 0.1)
    with pytest.raises(ConfigError, match="sgd, adam and adamw"):
        make_optimizer("sgd_decoupled", 1.0, inject_learning_rate=True)


def test_a_run_logs_the_rate_of_each_logged_step(tmp_path):
    config = tiny_config(write_npz(str(tmp_path)), num_train_steps=8)
    config.log_every_steps = 2
    config.schedule.name = "cosine"
    config.optimizer.learning_rate = 0.01
    workdir = str(tmp_path / "run")
    train_lib.train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        logged = {r["step"]: r["learning_rate"] for r in map(json.loads, f) if "train_loss" in r}
    schedule = make_schedule("cosine", 0.01, total_steps=8)
    assert {2, 4, 6, 8} <= set(logged)
    for step, rate in logged.items():
        assert rate == pytest.approx(float(schedule(step - 1)), rel=1e-6)
