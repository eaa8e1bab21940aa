"""report.html: one self-contained file (pictures inside it), captions and legends that leave
what they label visible, and the variants' notes."""

import base64
import json
import os
import re

import matplotlib
import numpy as np
import pytest

from flaxcls.core import scores
from flaxcls.modes.evaluate import Mistake, flip_tta_note, trained_with_flips
from flaxcls.rundir import report

matplotlib.use("Agg")
NAMES = [f"class_{i}" for i in range(10)]


def _result(seed: int = 0, n: int = 300) -> dict:
    """A classification report of noisy predictions, with the fields evaluate_run adds."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(NAMES), n)
    logits = rng.normal(size=(n, len(NAMES)))
    logits[np.arange(n), labels] += 2.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    result = scores.classification_report(probs, labels, NAMES)
    result.update(
        split="test",
        step=40,
        checkpoint="best",
        checkpoint_text="best by val_accuracy (0.7000), step 40; the latest is step 60",
        headline="this run",
        flip_tta=False,
        ensemble=["run"],
        variants=[
            {"variant": "this run", "accuracy": 0.7, "loss": 0.9, "ece": 0.05},
            {
                "variant": "this run + flip TTA",
                "accuracy": 0.66,
                "loss": 1.0,
                "ece": 0.06,
                "note": flip_tta_note({"accuracy": 0.66}, {"accuracy": 0.7}, False),
            },
        ],
    )
    return result


def _mistakes(k: int = 14, seed: int = 0) -> list[Mistake]:
    rng = np.random.default_rng(seed)
    return [
        Mistake(0.9 - i / 100, i, i % 10, (i + 1) % 10, rng.integers(0, 256, (28, 28, 1), np.uint8))
        for i in range(k)
    ]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("report"))
    with open(os.path.join(workdir, "metrics.jsonl"), "w", encoding="utf-8") as f:
        for step in (10, 20, 30):
            record = {"step": step, "epoch": step / 10, "train_loss": 1.0 / step}
            record |= {"train_accuracy": 0.5, "val_loss": 1.1 / step, "val_accuracy": 0.6}
            f.write(json.dumps(record) + "\n")
    path = report.write_report(workdir, _result(), _mistakes())
    with open(path, encoding="utf-8") as f:
        return workdir, f.read()


def test_page_needs_no_other_file(written):
    workdir, page = written
    sources = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources), [
        s[:40] for s in sources
    ]
    assert "<link" not in page and "<script" not in page and "url(" not in page


def test_embedded_pictures_are_the_png_files(written):
    workdir, page = written
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    names = ("confusion_matrix", "per_class", "mistakes", "reliability", "curves")
    assert len(embedded) == len(names)
    for data, name in zip(embedded, names, strict=True):
        with open(os.path.join(workdir, "eval", "test", f"{name}.png"), "rb") as f:
            assert base64.b64decode(data) == f.read(), name


def test_page_names_the_checkpoint_and_the_flip_note(written):
    _, page = written
    assert "best by val_accuracy (0.7000), step 40; the latest is step 60" in page
    assert "did not train with flips" in page and "costs 4.00 points" in page


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_mistake_captions_stay_clear_of_the_row_above():
    fig = report.mistakes_figure(_mistakes(14), NAMES)
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)  # runs the layout
    axes = [ax for ax in fig.axes if ax.images]
    for ax in axes:
        title = ax.title.get_window_extent(renderer)
        for other in axes:
            if other is not ax:
                assert not _overlap(title, other.get_window_extent(renderer))
    matplotlib.pyplot.close(fig)


def test_per_class_legend_covers_no_bar():
    result = _result()
    for row in result["per_class"]:  # bars at full height, where a legend inside would sit
        row["precision"] = row["recall"] = row["f1"] = 1.0
    fig = report.per_class_figure(result)
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent(renderer)
    assert ax.patches
    for bar in ax.patches:
        assert not _overlap(legend, bar.get_window_extent(renderer))
    matplotlib.pyplot.close(fig)


@pytest.mark.parametrize(
    ("augment", "flips"), [("none", False), ("crop", False), ("flip", True), ("crop_flip", True)]
)
def test_flip_note_says_whether_the_run_saw_mirrored_images(augment, flips):
    assert trained_with_flips({"data": {"augment": augment}}) is flips
    note = flip_tta_note({"accuracy": 0.8125}, {"accuracy": 0.8}, flips)
    assert "adds 1.25 points" in note
    assert ("did not train with flips" in note) is not flips
