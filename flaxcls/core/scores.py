"""Metrics over a whole split from its predicted probabilities and true labels (numpy).

The predictions of every example are gathered first, so the figures are exact whatever the
device and process layout, and classes that never occur are reported with zero support.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from flaxcls.core.metrics import top_k_hits

ECE_BINS = 15


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[true, predicted]."""
    counts = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(counts, (labels, predicted), 1)
    return counts


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    out = np.zeros_like(numerator, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def per_class_scores(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support of each class."""
    true_positive = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1).astype(np.float64)
    predicted = confusion.sum(axis=0).astype(np.float64)
    precision = _divide(true_positive, predicted)
    recall = _divide(true_positive, support)
    f1 = _divide(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def top_k_accuracy(probs: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of examples whose label is among the k highest probabilities (ties count as hits
    only when fewer than k classes score strictly higher)."""
    return float(np.mean(top_k_hits(probs, labels, k)))


def log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-probability of the labels (probabilities clipped at 1e-12): the
    cross-entropy of predictions that are already probabilities."""
    label_prob = np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)
    return float(-np.mean(np.log(label_prob)))


def calibration(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> dict[str, Any]:
    """Expected calibration error over equal-width confidence bins, and the bins themselves."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    count = np.bincount(which, minlength=bins).astype(np.float64)
    mean_confidence = _divide(np.bincount(which, confidence, bins), count)
    accuracy = _divide(np.bincount(which, correct.astype(np.float64), bins), count)
    ece = float(np.sum(count / max(len(labels), 1) * np.abs(accuracy - mean_confidence)))
    return {
        "ece": ece,
        "bin_edges": edges.tolist(),
        "bin_count": count.astype(int).tolist(),
        "bin_accuracy": accuracy.tolist(),
        "bin_confidence": mean_confidence.tolist(),
    }


def classification_report(
    probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str]
) -> dict[str, Any]:
    """Every figure of an evaluation, JSON-ready."""
    num_classes = probs.shape[1]
    predicted = probs.argmax(axis=1)
    confusion = confusion_matrix(labels, predicted, num_classes)
    scores = per_class_scores(confusion)
    support = scores["support"]
    weights = support / max(support.sum(), 1.0)
    names = list(class_names) or [str(i) for i in range(num_classes)]
    return {
        "num_examples": int(len(labels)),
        "accuracy": float(np.mean(predicted == labels)),
        "top5_accuracy": top_k_accuracy(probs, labels, 5),
        "loss": log_loss(probs, labels),
        "macro": {k: float(np.mean(scores[k])) for k in ("precision", "recall", "f1")},
        "weighted": {k: float(np.sum(weights * scores[k])) for k in ("precision", "recall", "f1")},
        "per_class": [
            {
                "class": names[c],
                "precision": float(scores["precision"][c]),
                "recall": float(scores["recall"][c]),
                "f1": float(scores["f1"][c]),
                "support": int(support[c]),
            }
            for c in range(num_classes)
        ],
        "confusion_matrix": confusion.tolist(),
        "calibration": calibration(probs, labels),
        "class_names": names,
    }


def format_table(report: dict[str, Any]) -> str:
    """The per-class table and the summary lines, for a terminal."""
    width = max(12, *(len(row["class"]) for row in report["per_class"]))
    lines = [f"{'class':<{width}} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>8}"]
    for row in report["per_class"]:
        lines.append(
            f"{row['class']:<{width}} {row['precision']:>9.4f} {row['recall']:>7.4f} "
            f"{row['f1']:>6.4f} {row['support']:>8d}"
        )
    for avg in ("macro", "weighted"):
        r = report[avg]
        lines.append(
            f"{avg + ' avg':<{width}} {r['precision']:>9.4f} {r['recall']:>7.4f} {r['f1']:>6.4f} "
            f"{report['num_examples']:>8d}"
        )
    lines.append(
        f"accuracy {report['accuracy']:.4f}  top-5 {report['top5_accuracy']:.4f}  "
        f"loss {report['loss']:.4f}  ECE {report['calibration']['ece']:.4f}"
    )
    return "\n".join(lines)
