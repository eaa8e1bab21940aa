"""Classification metrics as masked sums: they add across batches, devices and hosts.

A step returns sums (and the count of real examples); the loop adds them and divides once,
so a padded last batch or an uneven split never biases a mean.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

Sums = dict[str, jax.Array]


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """Per-example softmax cross-entropy against (optionally smoothed) one-hot labels."""
    num_classes = logits.shape[-1]
    targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def top_k_hits(scores: Any, labels: Any, k: int, xp: Any = np) -> Any:
    """Per example, whether its label is among the `k` highest `scores` (logits or
    probabilities): fewer than k classes score strictly higher, so ties count as hits. `xp` is
    numpy or jax.numpy."""
    k = min(k, scores.shape[-1])
    label_score = xp.take_along_axis(scores, labels[:, None], axis=-1)
    return xp.sum(scores > label_score, axis=-1) < k


def classification_sums(
    logits: jax.Array, labels: jax.Array, mask: jax.Array, per_example_loss: jax.Array
) -> Sums:
    """Masked sums of loss, top-1 and top-5 hits, and the number of real examples."""
    mask = mask.astype(jnp.float32)
    top1 = jnp.argmax(logits, axis=-1) == labels
    topk = top_k_hits(logits, labels, 5, jnp)
    return {
        "loss": jnp.sum(per_example_loss * mask),
        "correct": jnp.sum(top1 * mask),
        "correct_top5": jnp.sum(topk * mask),
        "count": jnp.sum(mask),
    }


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """n / (k * n_c) per class c (scikit-learn's "balanced"), so every class weighs as much in
    the loss; 0 for a class without examples."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = len(labels) / (num_classes * np.maximum(counts, 1.0))
    return np.where(counts > 0, weights, 0.0).astype(np.float32)


# The validation metrics a run can keep its best checkpoint by and stop early on.
BEST_METRICS = ("val_accuracy", "val_top5_accuracy", "val_loss")


def lower_is_better(metric: str) -> bool:
    return metric.endswith("loss")


def improves(metric: str, value: float, best: float | None) -> bool:
    """Whether `value` of `metric` beats the best so far (None: nothing yet)."""
    if best is None:
        return True
    return value < best if lower_is_better(metric) else value > best


def add_sums(total: Mapping[str, np.ndarray] | None, sums: Mapping[str, np.ndarray]) -> dict:
    """Host-side accumulation in float64, so long runs do not lose counts to rounding."""
    sums = {k: np.float64(v) for k, v in sums.items()}
    if total is None:
        return sums
    return {k: total[k] + sums[k] for k in total}


def summarize(sums: Mapping[str, float]) -> dict[str, float]:
    """Means from sums: loss, accuracy, top5_accuracy, plus the example count."""
    count = float(sums["count"])
    denominator = max(count, 1.0)
    return {
        "loss": float(sums["loss"]) / denominator,
        "accuracy": float(sums["correct"]) / denominator,
        "top5_accuracy": float(sums["correct_top5"]) / denominator,
        "num_examples": int(round(count)),
    }
