"""Your own loss in `train_step(loss_fn=...)`, and `scan_steps`'s contract for any step."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flaxcls import create_train_state, eval_step, scan_steps, train_step
from flaxcls.core.optim import make_optimizer
from flaxcls.errors import ContractError
from tests.helpers import TinyNet, tiny_batch


def focal_loss(logits, labels, gamma=2.0):
    """Lin et al.'s focal loss, per example: -(1 - p_y)^gamma log p_y."""
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32))
    log_p_y = jnp.take_along_axis(log_p, labels[:, None], axis=-1)[:, 0]
    return -((1.0 - jnp.exp(log_p_y)) ** gamma) * log_p_y


def _state(tx=None, ema_decay=0.0):
    tx = tx if tx is not None else optax.adam(1e-2)
    return create_train_state(TinyNet(), tx, jax.random.PRNGKey(0), (8, 8, 3), ema_decay)


def _close(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sam", [False, True])
def test_focal_loss_with_gamma_0_is_the_default_step(sam):
    tx = make_optimizer("sgd", 0.1, momentum=0.9, sam_rho=0.05 if sam else 0.0)
    batch = tiny_batch(16)
    batch["mask"] = jnp.asarray((np.arange(16) < 13).astype(np.float32))  # padded
    gamma0 = functools.partial(focal_loss, gamma=0.0)
    focal0 = jax.jit(functools.partial(train_step, loss_fn=gamma0))
    default = jax.jit(train_step)
    a, b = _state(tx, ema_decay=0.9), _state(tx, ema_decay=0.9)
    for _ in range(3):
        a, sums_a = focal0(a, batch)
        b, sums_b = default(b, batch)
    _close(a.params, b.params)
    _close(a.ema, b.ema)
    _close(sums_a, sums_b)
    assert float(sums_a["count"]) == 13.0


def test_a_focal_loss_trains_under_scan_steps_and_eval_step_reports_it():
    state, batch = _state(), tiny_batch(32)
    loss = functools.partial(focal_loss, gamma=2.0)
    steps = jax.jit(scan_steps(functools.partial(train_step, loss_fn=loss)))
    block = jax.tree.map(lambda x: jnp.stack([x] * 10), batch)
    first = float(jax.jit(functools.partial(eval_step, loss_fn=loss))(state, batch)["loss"])
    for _ in range(3):
        state, sums = steps(state, block)
    assert int(state.step) == 30
    assert np.all(np.asarray(sums["nonfinite"]) == 0)
    last = float(jax.jit(functools.partial(eval_step, loss_fn=loss))(state, batch)["loss"])
    assert last < 0.5 * first
    # The reported loss is the focal loss's, not the cross-entropy's.
    cross_entropy_sum = float(jax.jit(eval_step)(state, batch)["loss"])
    assert last < cross_entropy_sum


def test_mixed_labels_weigh_the_loss_of_each_label():
    batch = tiny_batch(16)
    mixed = {
        **batch,
        "mix_label": jnp.roll(batch["label"], 1),
        "mix_weight": jnp.full((16,), 0.7, jnp.float32),
    }
    loss = functools.partial(focal_loss, gamma=2.0)
    state = _state(optax.sgd(0.0))
    _, sums = jax.jit(functools.partial(train_step, loss_fn=loss))(state, mixed)
    _, sums_a = jax.jit(functools.partial(train_step, loss_fn=loss))(state, batch)
    other = {**batch, "label": mixed["mix_label"]}
    _, sums_b = jax.jit(functools.partial(train_step, loss_fn=loss))(state, other)
    # Dropout draws the same masks (same rng, same step), so the logits are the same.
    expected = 0.7 * float(sums_a["loss"]) + 0.3 * float(sums_b["loss"])
    assert float(sums["loss"]) == pytest.approx(expected, rel=1e-5)


def test_a_loss_that_takes_the_mean_is_a_contract_error():
    def mean_loss(logits, labels):
        return jnp.mean(focal_loss(logits, labels))

    with pytest.raises(ContractError, match=r"one loss per example, shape \(16,\)"):
        train_step(_state(), tiny_batch(16), loss_fn=mean_loss)


def test_loss_fn_and_label_smoothing_together_are_refused():
    with pytest.raises(ContractError, match="label smoothing belongs to the default"):
        train_step(_state(), tiny_batch(16), loss_fn=focal_loss, label_smoothing=0.1)


def test_scan_steps_names_what_a_step_lacks():
    def my_step(state, batch):
        state, sums = train_step(state, batch)
        return state, {"loss": sums["loss"], "count": sums["count"]}  # no 'nonfinite'

    block = jax.tree.map(lambda x: jnp.stack([x] * 2), tiny_batch(8))
    with pytest.raises(ContractError, match=r"lack \['nonfinite'\].*'nonfinite' \(1.0 when"):
        jax.jit(scan_steps(my_step))(_state(), block)
    one = jax.tree.map(lambda x: x[:1], block)  # the one-step path checks too
    with pytest.raises(ContractError, match=r"my_step's sums .* lack \['nonfinite'\]"):
        jax.jit(scan_steps(my_step))(_state(), one)

    def no_dict(state, batch):
        return train_step(state, batch)[0], 1.0

    with pytest.raises(ContractError, match="sums a dict holding at least"):
        jax.jit(scan_steps(no_dict))(_state(), block)
