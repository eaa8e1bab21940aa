import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from flaxcls.core.optim import create_learning_rate_schedule, create_optimizer, decay_mask
from flaxcls.errors import ConfigError


def _config(**kw):
    config = default.get_config()
    for key, value in kw.items():
        section, name = key.split(".")
        config[section][name] = value
    return config


def test_weight_decay_skips_biases_and_scales():
    params = {
        "conv": {"kernel": jnp.ones((3, 3, 1, 2)), "bias": jnp.ones(2)},
        "bn": {"scale": jnp.ones(2)},
    }
    config = _config(
        **{
            "optimizer.name": "sgd",
            "optimizer.weight_decay": 0.1,
            "optimizer.learning_rate": 1.0,
            "optimizer.momentum": 0.0,
        }
    )
    tx = create_optimizer(config, steps_per_epoch=10, total_steps=100)
    zeros = {
        "conv": {"kernel": jnp.zeros((3, 3, 1, 2)), "bias": jnp.zeros(2)},
        "bn": {"scale": jnp.zeros(2)},
    }
    updates, _ = tx.update(zeros, tx.init(params), params)
    np.testing.assert_allclose(updates["conv"]["kernel"], -0.1)
    np.testing.assert_allclose(updates["conv"]["bias"], 0.0)
    np.testing.assert_allclose(updates["bn"]["scale"], 0.0)
    assert decay_mask(params) == {"conv": {"kernel": True, "bias": False}, "bn": {"scale": False}}


def test_warmup_cosine_schedule_in_epochs():
    config = _config(
        **{
            "schedule.name": "warmup_cosine",
            "schedule.warmup_epochs": 2.0,
            "optimizer.learning_rate": 0.4,
        }
    )
    lr = create_learning_rate_schedule(config, steps_per_epoch=10, total_steps=100)
    assert float(lr(0)) == 0.0
    assert float(lr(10)) == pytest.approx(0.2)
    assert float(lr(20)) == pytest.approx(0.4)
    assert float(lr(60)) == pytest.approx(0.4 * 0.5 * (1 + np.cos(np.pi * 40 / 80)), rel=1e-5)
    assert float(lr(100)) == pytest.approx(0.0, abs=1e-7)


def test_step_schedule_boundaries_in_epochs():
    config = _config(
        **{
            "schedule.name": "step",
            "schedule.decay_epochs": (2, 3),
            "schedule.decay_factor": 0.1,
            "optimizer.learning_rate": 1.0,
        }
    )
    lr = create_learning_rate_schedule(config, steps_per_epoch=5, total_steps=20)
    assert [round(float(lr(s)), 6) for s in (9, 10, 14, 15)] == [1.0, 0.1, 0.1, 0.01]


def test_gradient_clipping():
    config = _config(
        **{
            "optimizer.name": "sgd",
            "optimizer.momentum": 0.0,
            "optimizer.learning_rate": 1.0,
            "optimizer.grad_clip_norm": 1.0,
        }
    )
    tx = create_optimizer(config, 1, 1)
    grads = {"w": jnp.array([3.0, 4.0])}
    updates, _ = tx.update(grads, tx.init(grads), grads)
    np.testing.assert_allclose(updates["w"], [-0.6, -0.8], rtol=1e-6)


def test_adamw_matches_optax():
    config = _config(**{"optimizer.name": "adamw", "optimizer.weight_decay": 0.05})
    tx = create_optimizer(config, 1, 1)
    ref = optax.adamw(1e-3, weight_decay=0.05, eps=1e-8, mask=decay_mask)
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    grads = {"w": jnp.full((2, 2), 0.5), "b": jnp.full(2, 0.5)}
    got, _ = tx.update(grads, tx.init(params), params)
    want, _ = ref.update(grads, ref.init(params), params)
    for k in params:
        np.testing.assert_allclose(got[k], want[k])


@pytest.mark.parametrize("section,name", [("optimizer", "rmsprop"), ("schedule", "linear")])
def test_unknown_names_list_choices(section, name):
    config = _config(**{f"{section}.name": name})
    with pytest.raises(ValueError, match="choose one of"):
        create_optimizer(config, 1, 1)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_frozen_parameters_never_change(name):
    params = {
        "stem": {"kernel": jnp.ones((2, 2, 1, 8))},
        "head": {"kernel": jnp.ones((8, 3)), "bias": jnp.ones(3)},
    }
    config = _config(
        **{"optimizer.name": name, "optimizer.weight_decay": 0.1, "optimizer.freeze": "^stem/"}
    )
    tx = create_optimizer(config, steps_per_epoch=10, total_steps=10)
    state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    for _ in range(3):
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    np.testing.assert_array_equal(params["stem"]["kernel"], 1.0)
    assert np.all(np.asarray(params["head"]["kernel"]) != 1.0)


def test_freeze_that_is_not_a_regex_is_a_config_error():
    with pytest.raises(ConfigError, match="not a regex"):
        create_optimizer(_config(**{"optimizer.freeze": "stem/("}), 10, 10)
