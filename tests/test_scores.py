"""Evaluation metrics against scikit-learn's on random predictions."""

import numpy as np
import pytest
from sklearn import metrics as skm

from flaxcls.core import scores


def _random(n=500, num_classes=7, missing=(3,), seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    for c in missing:  # a class that never occurs among the labels
        labels[labels == c] = (c + 1) % num_classes
    logits = rng.normal(size=(n, num_classes)) + 2.0 * np.eye(num_classes)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs, labels


@pytest.mark.parametrize("seed", [0, 1])
def test_metrics_equal_scikit_learn(seed):
    probs, labels = _random(seed=seed)
    num_classes = probs.shape[1]
    predicted = probs.argmax(axis=1)
    report = scores.classification_report(probs, labels, [f"c{i}" for i in range(7)])
    classes = list(range(num_classes))
    np.testing.assert_array_equal(
        report["confusion_matrix"], skm.confusion_matrix(labels, predicted, labels=classes)
    )
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        labels, predicted, labels=classes, zero_division=0
    )
    rows = report["per_class"]
    np.testing.assert_allclose([r["precision"] for r in rows], precision)
    np.testing.assert_allclose([r["recall"] for r in rows], recall)
    np.testing.assert_allclose([r["f1"] for r in rows], f1)
    np.testing.assert_array_equal([r["support"] for r in rows], support)
    assert rows[3]["support"] == 0
    for average in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            labels, predicted, labels=classes, average=average, zero_division=0
        )
        np.testing.assert_allclose(
            [report[average][k] for k in ("precision", "recall", "f1")], [p, r, f]
        )
    assert report["accuracy"] == pytest.approx(skm.accuracy_score(labels, predicted))
    assert report["top5_accuracy"] == pytest.approx(
        skm.top_k_accuracy_score(labels, probs, k=5, labels=classes)
    )
    assert report["loss"] == pytest.approx(skm.log_loss(labels, probs, labels=classes))


def test_expected_calibration_error_by_hand():
    # two bins used: confidence 0.95 (2 examples, 1 right), 0.55 (2 examples, both right)
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.55, 0.45], [0.45, 0.55]])
    labels = np.array([0, 1, 0, 1])
    ece = scores.calibration(probs, labels)["ece"]
    assert ece == pytest.approx(0.5 * abs(0.5 - 0.95) + 0.5 * abs(1.0 - 0.55))


def test_table_names_every_class():
    probs, labels = _random()
    names = [f"class-{i}" for i in range(7)]
    table = scores.format_table(scores.classification_report(probs, labels, names))
    assert all(name in table for name in names) and "macro avg" in table
