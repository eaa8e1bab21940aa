"""A state with its extra copies of the weights (the moving average, lookahead's slow weights)
runs under `jax.jit(train_step, donate_argnums=0)`, as the README shows: each copy is a buffer
of its own, so no buffer is donated twice."""

import functools

import jax
import numpy as np
import optax
import pytest

from flaxcls import create_train_state, train_step
from flaxcls.core.lookahead import Lookahead
from tests.helpers import TinyNet, tiny_batch


@pytest.mark.parametrize(
    "extras",
    [
        {"ema_decay": 0.999},
        {"lookahead": Lookahead(every=2, total_steps=4)},
        {"ema_decay": 0.9, "lookahead": Lookahead(every=2, total_steps=4)},
    ],
    ids=["ema", "lookahead", "both"],
)
def test_donated_state_with_weight_copies_steps(extras):
    state = create_train_state(
        TinyNet(), optax.sgd(0.1), jax.random.PRNGKey(0), (8, 8, 3), **extras
    )
    step = jax.jit(functools.partial(train_step), donate_argnums=0)
    for t in range(4):
        state, sums = step(state, tiny_batch(seed=t))
    assert int(state.step) == 4 and np.isfinite(float(sums["loss"]))
    copies = [c for c in (state.ema, state.lookahead) if c is not None]
    for copy in copies:  # copies, not the weights themselves
        for a, b in zip(
            jax.tree.leaves(copy["params"]), jax.tree.leaves(state.params), strict=True
        ):
            assert a.unsafe_buffer_pointer() != b.unsafe_buffer_pointer()
