"""The model and batch contract of the steps: what breaks it is one clear error where it is
first met, not a silent wrong result."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flaxcls import create_train_state, eval_step, train_step
from flaxcls.errors import ContractError


class Good(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Dense(8)(x.reshape(x.shape[0], -1))
        x = nn.BatchNorm(use_running_average=not train)(x)
        return nn.Dense(3)(nn.Dropout(0.1, deterministic=not train)(x))


class NoTrainKeyword(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


class ExtraCollection(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        self.variable("cache", "seen", jnp.zeros, ())
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


class FeatureMap(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        return nn.Conv(3, (3, 3))(x)


def _state(model):
    return create_train_state(model, optax.sgd(0.1), jax.random.PRNGKey(0), (4, 4, 1))


@pytest.mark.parametrize(
    "model,message",
    [
        (NoTrainKeyword(), "must take a `train` keyword"),
        (ExtraCollection(), r"variables are \['cache', 'params'\]"),
        (FeatureMap(), r"returned \(1, 4, 4, 3\) for 1 image\(s\); .* \(batch, num_classes\)"),
    ],
)
def test_a_model_that_breaks_the_contract_is_named_at_create_train_state(model, message):
    with pytest.raises(ContractError, match=message):
        _state(model)


def _batch(**changes):
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.normal(size=(6, 4, 4, 1)).astype(np.float32),
        "label": rng.integers(0, 3, 6).astype(np.int32),
    }
    return {**batch, **changes}


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"image": np.zeros((6, 4, 4, 1), np.uint8)}, "batch\\['image'\\] is uint8"),
        ({"label": np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1, 2]]}, "is float32"),
        ({"label": np.zeros(5, np.int32)}, r"\(6, 4, 4, 1\) and batch\['label'\] \(5,\)"),
    ],
)
@pytest.mark.parametrize("step", [train_step, eval_step])
def test_a_batch_that_breaks_the_contract_is_named_at_the_first_trace(changes, message, step):
    state = _state(Good())
    with pytest.raises(ContractError, match=message):
        jax.jit(step)(state, _batch(**changes))


def test_a_batch_without_labels_is_named():
    with pytest.raises(ContractError, match="needs 'image' and 'label'"):
        jax.jit(train_step)(_state(Good()), {"image": _batch()["image"]})


def test_a_model_that_keeps_the_contract_trains():
    state, sums = jax.jit(train_step)(_state(Good()), _batch())
    assert int(state.step) == 1 and float(sums["count"]) == 6
