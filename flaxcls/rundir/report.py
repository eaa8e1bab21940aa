"""The evaluation report: PNG pictures (matplotlib) and one HTML page that shows them with the
metrics, a single file with the pictures inside it (base64 PNG), readable offline and safe to
mail or attach; the pictures also go to TensorBoard.

Pictures: confusion-matrix heatmap, per-class precision/recall/F1 bars, the most confident
mistakes, training curves (from metrics.jsonl) and a reliability diagram.
"""

from __future__ import annotations

import base64
import html
import json
import os
from typing import Any

import numpy as np

from flaxcls.rundir import event_file


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, path: str) -> str:
    fig.savefig(path, dpi=100, bbox_inches="tight")  # legends outside the axes stay in
    plt.close(fig)
    return path


def plot_confusion(report: dict[str, Any], path: str) -> str:
    plt = _pyplot()
    names = report["class_names"]
    counts = np.asarray(report["confusion_matrix"], np.float64)
    rows = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)  # recall per true class
    size = max(5.0, 0.55 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size), layout="constrained")
    image = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(names) <= 20:
        for i in range(len(names)):
            for j in range(len(names)):
                if counts[i, j]:
                    color = "white" if rows[i, j] > 0.5 else "black"
                    ax.text(
                        j, i, int(counts[i, j]), ha="center", va="center", fontsize=7, color=color
                    )
    fig.colorbar(image, ax=ax, label="share of the true class")
    ax.set_title(f"Confusion matrix ({report['split']}, accuracy {report['accuracy']:.4f})")
    return _save(plt, fig, path)


def plot_per_class(report: dict[str, Any], path: str) -> str:
    return _save(_pyplot(), per_class_figure(report), path)


def per_class_figure(report: dict[str, Any]) -> Any:
    """Precision, recall and F1 bars per class, the legend above the bars."""
    plt = _pyplot()
    rows = report["per_class"]
    names = [r["class"] for r in rows]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(names) + 2), 4), layout="constrained")
    for offset, key in ((-0.27, "precision"), (0.0, "recall"), (0.27, "f1")):
        ax.bar(x + offset, [r[key] for r in rows], width=0.27, label=key)
    ax.set_xticks(x, names, rotation=45, ha="right")
    ax.set_ylim(0, 1.04)
    ax.set_ylabel("score")
    # above the axes, between title and bars: a legend inside would hide the bars it names
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    ax.set_title("Per-class precision, recall and F1", pad=24)
    return fig


def plot_mistakes(mistakes: list[Any], names: list[str], path: str) -> str:
    return _save(_pyplot(), mistakes_figure(mistakes, names), path)


def mistakes_figure(mistakes: list[Any], names: list[str]) -> Any:
    """A grid of the most confident mistakes (`flaxcls.modes.evaluate.Mistake`): image, true and
    predicted class, confidence."""
    plt = _pyplot()
    n = max(len(mistakes), 1)
    cols = min(6, n)
    rows = -(-n // cols)
    # constrained layout gives each three-line caption its own space above its image
    fig, axes = plt.subplots(
        rows, cols, figsize=(2.0 * cols, 2.6 * rows), squeeze=False, layout="constrained"
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, m in zip(axes.flat, mistakes, strict=False):
        gray = m.image.shape[-1] == 1
        ax.imshow(
            m.image[..., 0] if gray else m.image, cmap="gray" if gray else None, vmin=0, vmax=255
        )
        ax.set_title(
            f"#{m.position}\ntrue {names[m.label]}\npred {names[m.predicted]} {m.confidence:.2f}",
            fontsize=8,
        )
    if not mistakes:
        axes.flat[0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    fig.suptitle("Most confident mistakes: #position in the split, true class, predicted class")
    return fig


def read_metrics_log(workdir: str) -> list[dict[str, float]]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_curves(records: list[dict[str, float]], steps_per_epoch: float, path: str) -> str:
    """Training and validation loss and accuracy per epoch."""
    plt = _pyplot()
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    for prefix, style in (("train_", "-"), ("val_", "o-")):
        points = [r for r in records if prefix + "loss" in r]
        epochs = [r["step"] / steps_per_epoch for r in points]
        label = prefix.rstrip("_").replace("val", "validation")
        loss_ax.plot(epochs, [r[prefix + "loss"] for r in points], style, label=label)
        acc_ax.plot(epochs, [r[prefix + "accuracy"] for r in points], style, label=label)
    for ax, title in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(plt, fig, path)


def plot_reliability(report: dict[str, Any], path: str) -> str:
    plt = _pyplot()
    cal = report["calibration"]
    edges = np.asarray(cal["bin_edges"])
    centres = (edges[:-1] + edges[1:]) / 2
    used = np.asarray(cal["bin_count"]) > 0
    fig, ax = plt.subplots(figsize=(4.5, 4.5), layout="constrained")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.bar(
        centres[used],
        np.asarray(cal["bin_accuracy"])[used],
        width=edges[1] - edges[0],
        edgecolor="black",
        alpha=0.7,
        label="accuracy",
    )
    ax.plot(
        np.asarray(cal["bin_confidence"])[used],
        np.asarray(cal["bin_accuracy"])[used],
        "r.",
        label="mean confidence",
    )
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    ax.set_title(f"Reliability (ECE {cal['ece']:.4f})")
    return _save(plt, fig, path)


def _table(header: list[str], rows: list[list[str]], css: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f'<table class="{css}"><tr>{head}</tr>{body}</table>'


def embedded_png(path: str) -> str:
    """A PNG file as a data: URI, so the page holds its pictures and needs no other file."""
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode("ascii")


def write_html(workdir: str, report: dict[str, Any], pictures: dict[str, str]) -> str:
    per_class = [
        [
            r["class"],
            f"{r['precision']:.4f}",
            f"{r['recall']:.4f}",
            f"{r['f1']:.4f}",
            str(r["support"]),
        ]
        for r in report["per_class"]
    ] + [
        [
            f"{avg} avg",
            *(f"{report[avg][k]:.4f}" for k in ("precision", "recall", "f1")),
            str(report["num_examples"]),
        ]
        for avg in ("macro", "weighted")
    ]
    variants = [
        [
            v["variant"],
            f"{v['accuracy']:.4f}",
            f"{v['loss']:.4f}",
            f"{v['ece']:.4f}",
            v.get("note", ""),
        ]
        for v in report.get("variants", [])
    ]
    images = "".join(
        f"<h2>{html.escape(title)}</h2>"
        f'<img alt="{html.escape(title)}" src="{embedded_png(path)}">'
        f"<p class=file>{html.escape(os.path.relpath(path, workdir))}</p>"
        for title, path in pictures.items()
    )
    checkpoint = report.get("checkpoint_text") or f"step {report['step']} ({report['checkpoint']})"
    headline = report.get("headline", "this run")
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>flaxcls report: {html.escape(workdir)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;
text-align:right}}td:first-child,.notes td:last-child{{text-align:left}}img{{max-width:100%}}
.file{{color:#777;font-size:small;margin-top:0}}</style></head><body>
<h1>Evaluation of {html.escape(workdir)}</h1>
<p>Split <b>{html.escape(report["split"])}</b>, {report["num_examples"]} examples; checkpoint
{html.escape(checkpoint)}; flip TTA {"on" if report["flip_tta"] else "off"};
ensemble of {len(report["ensemble"])}.</p>
<p>Accuracy <b>{report["accuracy"]:.4f}</b>, top-5 {report["top5_accuracy"]:.4f}, loss
{report["loss"]:.4f}, expected calibration error {report["calibration"]["ece"]:.4f}: the
figures of <i>{html.escape(headline)}</i>, as are the tables and pictures below.</p>
<h2>What each variant adds</h2>
{_table(["variant", "accuracy", "loss", "ECE", "note"], variants, "notes")}
<h2>Per class</h2>
{_table(["class", "precision", "recall", "F1", "support"], per_class)}
{images}
</body></html>
"""
    path = os.path.join(workdir, "report.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path


def write_report(workdir: str, report: dict[str, Any], mistakes: list[Any]) -> str:
    """All pictures under WORKDIR/eval/<split>/, the HTML page at WORKDIR/report.html, and the
    pictures in TensorBoard at the evaluated step."""
    split = report["split"]
    out = os.path.join(workdir, "eval", split)
    os.makedirs(out, exist_ok=True)
    names = report["class_names"]
    pictures = {
        "Confusion matrix": plot_confusion(report, os.path.join(out, "confusion_matrix.png")),
        "Per-class scores": plot_per_class(report, os.path.join(out, "per_class.png")),
        "Most confident mistakes": plot_mistakes(
            mistakes, names, os.path.join(out, "mistakes.png")
        ),
        "Reliability diagram": plot_reliability(report, os.path.join(out, "reliability.png")),
    }
    records = read_metrics_log(workdir)
    epoch_points = [r for r in records if "epoch" in r and r["epoch"] > 0]
    if epoch_points:
        steps_per_epoch = epoch_points[-1]["step"] / epoch_points[-1]["epoch"]
        pictures["Training curves"] = plot_curves(
            records, steps_per_epoch, os.path.join(out, "curves.png")
        )
    _to_tensorboard(workdir, report["step"], split, pictures)
    return write_html(workdir, report, pictures)


def _to_tensorboard(workdir: str, step: int, split: str, pictures: dict[str, str]) -> None:
    if not event_file.available():  # the PNG files stay the record
        return
    writer = event_file.EventFile(os.path.join(workdir, "tensorboard"))
    for path in pictures.values():
        writer.write_png(step, f"eval_{split}/{os.path.splitext(os.path.basename(path))[0]}", path)
    writer.close()
