"""SAM (`optimizer.sam_rho`): the train step against a hand-written reference, BatchNorm
statistics from the unperturbed pass, a non-finite perturbed pass flagged, the config path."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flaxcls import create_train_state, cross_entropy, train_step
from flaxcls.config import check_config
from flaxcls.core.optim import create_optimizer, make_optimizer, uses_sam
from flaxcls.errors import ConfigError
from tests.helpers import TinyNet, tiny_batch

RHO = 0.05
SGD = dict(learning_rate=0.1, weight_decay=5e-4, momentum=0.9, nesterov=True)


def _state(tx, model=None, image_shape=(8, 8, 3)):
    model = model or TinyNet(dropout_rate=0.0)  # no dropout: the reference needs no rng
    # The rbg generator: threefry makes initialisation several times slower to compile on
    # XLA:CPU, and nothing here depends on the generator.
    return create_train_state(model, tx, jax.random.key(0, impl="rbg"), image_shape)


def _reference_steps(state, batches):
    """SAM written out: g at w, g' at w + rho * g / ||g|| (BatchNorm on the batch in both
    passes, running statistics updated from the first), then the base optimiser on g' at w."""
    base = make_optimizer("sgd", **SGD)
    params, stats, opt_state = state.params, state.batch_stats, base.init(state.params)
    plain, plain_state = params, opt_state  # the base optimiser on g alone

    @jax.jit  # one compilation for the six gradients (eager ops each compile on XLA:CPU)
    def grad(p, stats, images, labels):
        def loss(p):
            logits, updates = state.apply_fn(
                {"params": p, "batch_stats": stats}, images, train=True, mutable=["batch_stats"]
            )
            return cross_entropy(logits, labels).mean(), updates["batch_stats"]

        return jax.grad(loss, has_aux=True)(p)

    for batch in batches:
        g, new_stats = grad(params, stats, batch["image"], batch["label"])
        norm = np.sqrt(sum(float(jnp.sum(x * x)) for x in jax.tree.leaves(g)))
        scale = RHO / norm
        perturbed = jax.tree.map(lambda w, x, scale=scale: w + scale * x, params, g)
        g2, _ = grad(perturbed, stats, batch["image"], batch["label"])
        updates, opt_state = base.update(g2, opt_state, params)
        params, stats = optax.apply_updates(params, updates), new_stats
        g_plain, _ = grad(plain, stats, batch["image"], batch["label"])
        plain_updates, plain_state = base.update(g_plain, plain_state, plain)
        plain = optax.apply_updates(plain, plain_updates)
    return params, stats, opt_state, plain


def _close(a, b):
    # Same float32 operations, jitted against eager: rounding only (differences ~1e-7).
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_two_sam_steps_match_a_hand_written_reference():
    batches = [tiny_batch(32, seed=0), tiny_batch(32, seed=1)]
    state = _state(make_optimizer("sgd", **SGD, sam_rho=RHO))
    assert uses_sam(state.opt_state)
    step = jax.jit(train_step)
    start = state
    for batch in batches:
        state, sums = step(state, batch)
        assert float(sums["nonfinite"]) == 0.0
    params, stats, opt_state, plain = _reference_steps(start, batches)
    _close(state.params, params)
    _close(state.batch_stats, stats)  # the first pass's statistics, not the perturbed one's
    _close(state.opt_state.opt_state, opt_state)  # the base optimiser's momentum
    assert int(state.step) == 2

    # The perturbation matters: plain SGD on the same batches lands elsewhere, far beyond the
    # tolerance above.
    gap = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(state.params), strict=True)
    )
    assert gap > 1e-3


def test_batchnorm_statistics_come_from_the_unperturbed_pass():
    """With rho so large that the perturbed pass sees other activations, the running
    statistics are still exactly those of a plain step on the same batch."""
    batch = tiny_batch(32, seed=2)
    sam_state, _ = jax.jit(train_step)(_state(make_optimizer("sgd", **SGD, sam_rho=10.0)), batch)
    plain_state, _ = jax.jit(train_step)(_state(make_optimizer("sgd", **SGD)), batch)
    _close(sam_state.batch_stats, plain_state.batch_stats)


class _SqrtNet(nn.Module):
    """Logits (sqrt(p), 0): finite at p = 0.01; for label 0 the gradient in p is negative, so
    SAM's perturbation by rho = 0.05 moves p below 0, where sqrt is NaN."""

    @nn.compact
    def __call__(self, x, *, train: bool):
        p = self.param("p", nn.initializers.constant(0.01), (1,))
        ones = jnp.ones((x.shape[0], 1))
        return jnp.concatenate([jnp.sqrt(p) * ones, 0.0 * ones], axis=1)


@pytest.mark.parametrize("skip", [False, True])
def test_a_nonfinite_perturbed_pass_is_flagged(skip):
    tx = make_optimizer("sgd", learning_rate=0.1, sam_rho=RHO, skip_nonfinite=skip)
    state = _state(tx, _SqrtNet(), (2, 2, 1))
    batch = {"image": jnp.zeros((4, 2, 2, 1)), "label": jnp.zeros((4,), jnp.int32)}
    new, sums = jax.jit(train_step)(state, batch)
    assert np.isfinite(float(sums["loss"]))  # the unperturbed pass is fine
    assert float(sums["nonfinite"]) == 1.0
    if skip:  # optax.apply_if_finite inside SAM keeps the parameters
        np.testing.assert_array_equal(new.params["p"], state.params["p"])


def test_config_turns_sam_on_and_checks_rho():
    from configs import default

    config = default.get_config()
    assert not uses_sam(create_optimizer(config, 10, 100).init({"w": jnp.zeros((2, 2))}))
    config.optimizer.sam_rho = 0.05
    assert uses_sam(create_optimizer(config, 10, 100).init({"w": jnp.zeros((2, 2))}))
    config.optimizer.sam_rho = -0.1
    with pytest.raises(ConfigError, match="optimizer.sam_rho"):
        check_config(config)
