"""Evaluate a run's checkpoint on any split: metrics, flip TTA, ensembles, and the report.

  python run.py --mode=evaluate --workdir RUN [--split=test] [--checkpoint=best|latest]
      [--ensemble=RUN2,RUN3]

The run's own config (RUN/config.json) rebuilds its data and model. Predictions of every
example are gathered before any figure is computed, so metrics are exact on any number of
devices and processes. Writes RUN/eval/<split>.json and RUN/report.html (with its pictures).
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from flaxcls.core import scores, sharding
from flaxcls.core.steps import TrainState, predict
from flaxcls.data import Input
from flaxcls.data.contract import Normalizer, normalizing
from flaxcls.errors import ConfigError
from flaxcls.modes.build import LoadedRun, load_run
from flaxcls.rundir import files
from flaxcls.rundir.checkpoint import Checkpointer

MISTAKES_KEPT = 36  # the most confident mistakes shown in the report


@dataclasses.dataclass(frozen=True)
class Mistake:
    confidence: float  # probability of the wrong prediction
    position: int  # index of the example in the split
    label: int
    predicted: int
    image: np.ndarray  # uint8 HWC


@dataclasses.dataclass
class Predictions:
    probs: np.ndarray  # (N, C) float32, every example of the split in order
    labels: np.ndarray  # (N,) int
    # the most confident mistakes among the examples this process loaded (all, on one process)
    mistakes: list[Mistake] = dataclasses.field(default_factory=list)


def predict_step(
    state: TrainState, batch: dict, *, flip_tta: bool = False, translate_tta: int = 0
) -> dict:
    """Class probabilities for a batch, with its labels and padding mask passed through."""
    logits = predict(state, batch["image"], flip_tta=flip_tta, translate_tta=translate_tta)
    return {"probs": jax.nn.softmax(logits), "label": batch["label"], "mask": batch["mask"]}


def compile_predict(
    state: TrainState,
    mesh,
    flip_tta: bool,
    normalizer: Normalizer | None = None,
    translate_tta: int = 0,
) -> Callable:
    """`predict_step` jitted; batches of uint8 pixels are normalised on the device."""
    state_sharding = jax.tree.map(lambda x: x.sharding, state)
    step = functools.partial(predict_step, flip_tta=flip_tta, translate_tta=translate_tta)
    return jax.jit(
        normalizing(step, normalizer),
        in_shardings=(state_sharding, sharding.batch_sharding(mesh)),
        out_shardings=sharding.replicated(mesh),  # every process gets the global batch
    )


def collect_predictions(
    p_predict: Callable, state: TrainState, inputs: Input, split: str, mesh
) -> Predictions:
    """Every example of `split` once (padding dropped), and the most confident mistakes."""
    probs, labels, kept = [], [], []
    global_batch = inputs.eval_batch_size
    for step, batch in enumerate(inputs.evaluate(split)):
        out = jax.device_get(p_predict(state, sharding.to_global(batch, mesh)))
        real = out["mask"] > 0
        probs.append(out["probs"][real])
        labels.append(out["label"][real])
        # this process's rows of the global batch, and their positions in the split
        local = len(batch["label"])
        first = step * global_batch + jax.process_index() * local
        rows = slice(jax.process_index() * local, (jax.process_index() + 1) * local)
        local_probs, local_labels = out["probs"][rows], out["label"][rows]
        wrong = np.nonzero((local_probs.argmax(1) != local_labels) & (batch["mask"] > 0))[0]
        for i in wrong:
            # (confidence, position) orders the heap; the rest rides along
            item = (
                float(local_probs[i].max()),
                first + int(i),
                i,
                batch["image"][i],
                int(local_labels[i]),
                int(local_probs[i].argmax()),
            )
            if len(kept) < MISTAKES_KEPT:
                heapq.heappush(kept, item)
            elif item[:2] > kept[0][:2]:
                heapq.heapreplace(kept, item)
    kept.sort(key=lambda item: item[:2], reverse=True)
    mistakes = [
        Mistake(conf, pos, label, pred, inputs.normalizer.to_uint8(image))
        for conf, pos, _, image, label, pred in kept
    ]
    return Predictions(np.concatenate(probs), np.concatenate(labels).astype(np.int64), mistakes)


def run_predictions(run: LoadedRun, split: str, flip_tta: bool, mesh) -> Predictions:
    if split not in run.inputs.split_sizes or not run.inputs.split_sizes[split]:
        available = [s for s, n in run.inputs.split_sizes.items() if n and s != "train"]
        raise ConfigError(f"split {split!r} is empty or unknown; this run has {available}.")
    # The run's translated views join its test-time augmentation (flip TTA) variant.
    translate = int(run.config.get("translate_tta", 0)) if flip_tta else 0
    p_predict = compile_predict(run.state, mesh, flip_tta, run.inputs.normalizer, translate)
    return collect_predictions(p_predict, run.state, run.inputs, split, mesh)


def _variant_summary(name: str, probs: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    return {
        "variant": name,
        "accuracy": float(np.mean(probs.argmax(1) == labels)),
        "loss": scores.log_loss(probs, labels),
        "ece": scores.calibration(probs, labels)["ece"],
    }


def trained_with_flips(config: Any) -> bool:
    """Whether training mirrored images (data.augment flip, crop_flip, inception_crop_flip)."""
    return "flip" in str(config.get("data", {}).get("augment", ""))


def flip_tta_note(flipped: dict[str, Any], plain: dict[str, Any], with_flips: bool) -> str:
    """What flip TTA changes, in accuracy points, and why it may hurt: a model that never saw
    a mirrored image is tested on mirrored images as new data."""
    points = 100 * (flipped["accuracy"] - plain["accuracy"])
    change = f"{'adds' if points >= 0 else 'costs'} {abs(points):.2f} points"
    if with_flips:
        return f"flip TTA {change}"
    return f"this run did not train with flips (data.augment); flip TTA {change}"


@dataclasses.dataclass(frozen=True)
class CheckpointUsed:
    """Which checkpoint evaluation restored, in words and as a field of eval/<split>.json."""

    kind: str  # best | latest | step (an older one, where the asked one was unusable)
    text: str  # e.g. "best by val_accuracy (0.9123), step 6750; the latest is step 7500"


def checkpoint_used(run: LoadedRun, asked: str) -> CheckpointUsed:
    """Names the restored step against the run's best and latest checkpoints."""
    metric = run.config.get("best_metric", "val_accuracy")
    checkpointer = Checkpointer(files.checkpoint_dir(run.workdir), best_metric=metric)
    try:
        best, latest = checkpointer.best_step(), checkpointer.latest_step()
    finally:
        checkpointer.close()
    if run.step == best and (asked == "best" or best != latest):
        value = _logged_value(run.workdir, best, metric)
        text = f"best by {metric}{f' ({value:.4f})' if value is not None else ''}, step {best}"
        return CheckpointUsed(
            "best", text + (f"; the latest is step {latest}" if latest != best else "")
        )
    if run.step == latest:
        if asked == "best" and best is None:
            why = "the run never validated, so it has no best"
        elif best is not None and best != latest:
            why = f"the best by {metric} is step {best}"
        else:
            why = ""
        return CheckpointUsed("latest", f"latest, step {latest}" + (f" ({why})" if why else ""))
    return CheckpointUsed("step", f"step {run.step} (the {asked} checkpoint was unusable)")


def _logged_value(workdir: str, step: int, key: str) -> float | None:
    """`key` as metrics.jsonl logged it at `step`, if it did."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    values = [r[key] for r in records if r.get("step") == step and key in r]
    return values[-1] if values else None


def ensemble_sums(
    base: LoadedRun,
    ensemble: Sequence[str],
    plain: Predictions,
    flipped: Predictions,
    split: str,
    checkpoint: str,
    mesh,
) -> dict[bool, np.ndarray]:
    """Summed probabilities of this run and every `ensemble` run, without and with flip TTA."""
    sums = {False: plain.probs.copy(), True: flipped.probs.copy()}
    for other_dir in ensemble:
        other = load_run(other_dir, checkpoint, mesh)
        other.share_inputs(base)  # the same data is read and decoded once
        for tta in (False, True):
            other_pred = run_predictions(other, split, tta, mesh)
            if not np.array_equal(other_pred.labels, plain.labels):
                raise ConfigError(f"{other_dir} evaluates other examples than {base.workdir}.")
            sums[tta] += other_pred.probs
    return sums


def _write_results(workdir: str, split: str, result: dict, mistakes: list, report: bool) -> None:
    out_dir = os.path.join(workdir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{split}.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    print(
        f"{workdir}: {split} split, {result['num_examples']} examples, checkpoint "
        f"{result['checkpoint_text']}; figures of {result['headline']!r}"
    )
    print(scores.format_table(result))
    for v in result["variants"]:
        note = f"  ({v['note']})" if v.get("note") else ""
        print(
            f"{v['variant']:<28} accuracy {v['accuracy']:.4f}  loss {v['loss']:.4f}  "
            f"ECE {v['ece']:.4f}{note}"
        )
    if report:
        from flaxcls.rundir import (
            report as report_lib,  # matplotlib, only when pictures are asked for
        )

        path = report_lib.write_report(workdir, result, mistakes)
        print(f"report: {path}")


def evaluate_run(
    workdir: str,
    *,
    split: str = "test",
    checkpoint: str = "best",
    ensemble: Sequence[str] = (),
    report: bool = True,
) -> dict[str, Any]:
    """Evaluates the run in `workdir` (with flip TTA and any `ensemble` runs as variants) and
    writes WORKDIR/eval/<split>.json and, with `report`, WORKDIR/report.html."""
    mesh = sharding.make_mesh()
    run = load_run(workdir, checkpoint, mesh)
    names = run.class_names
    uses_tta = bool(run.config.get("flip_tta", False))
    plain = run_predictions(run, split, False, mesh)
    flipped = run_predictions(run, split, True, mesh)
    variants = [
        _variant_summary("this run", plain.probs, plain.labels),
        _variant_summary("this run + flip TTA", flipped.probs, flipped.labels),
    ]
    variants[1]["note"] = flip_tta_note(variants[1], variants[0], trained_with_flips(run.config))
    chosen = flipped if uses_tta else plain
    if ensemble:
        sums = ensemble_sums(run, ensemble, plain, flipped, split, checkpoint, mesh)
        k = 1 + len(ensemble)
        variants.append(_variant_summary(f"ensemble of {k}", sums[False] / k, plain.labels))
        variants.append(
            _variant_summary(f"ensemble of {k} + flip TTA", sums[True] / k, plain.labels)
        )
        chosen = Predictions(sums[uses_tta] / k, plain.labels, chosen.mistakes)
    headline = variants[int(uses_tta) + (2 if ensemble else 0)]["variant"]
    used = checkpoint_used(run, checkpoint)
    result = scores.classification_report(chosen.probs, chosen.labels, names)
    result.update(
        split=split,
        step=run.step,
        checkpoint=used.kind,
        checkpoint_text=used.text,
        headline=headline,
        flip_tta=uses_tta,
        ensemble=[run.workdir, *ensemble],
        variants=variants,
    )
    if jax.process_index() == 0:
        _write_results(workdir, split, result, chosen.mistakes, report)
    return result
