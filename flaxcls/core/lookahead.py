"""Lookahead with a growing pull, as airbench94 averages its weights.

Every `every` steps the slow copy moves towards the trained weights,
slow <- d * slow + (1 - d) * weights, with d = decay**every * (step / total_steps)**power,
and training continues from the slow copy (weights <- slow). Early on d is near 0 and the
slow copy follows the weights; towards the end it holds on to its past. After the last step
the weights are the slow copy. BatchNorm running statistics are averaged with the parameters.

`optax.lookahead` keeps a fixed slow step size and sees only the parameters, so it cannot
express the schedule or the statistics; this is a few lines on the train state instead.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Lookahead:
    """When and how hard the slow weights pull (see the module docstring)."""

    every: int = 5
    decay: float = 0.95
    power: float = 3.0
    total_steps: int = 1

    def decay_at(self, step: jax.Array) -> jax.Array:
        """d after update `step` (1-based): the share of the slow weights that stays."""
        progress = step.astype(jnp.float32) / max(self.total_steps, 1)
        return self.decay**self.every * progress**self.power

    def sync(self, step: jax.Array, weights: Any, slow: Any) -> tuple[Any, Any]:
        """(weights, slow) after update `step`: pulled together at multiples of `every`, the
        weights replaced by the slow copy at `total_steps`, unchanged otherwise."""
        on_period = step % self.every == 0
        at_end = step >= self.total_steps
        decay = jnp.where(on_period, self.decay_at(step), 1.0)
        slow = jax.tree.map(
            lambda s, w: jnp.where(on_period, decay * s + (1.0 - decay) * w, s), slow, weights
        )
        weights = jax.tree.map(lambda s, w: jnp.where(on_period | at_end, s, w), slow, weights)
        return weights, slow
