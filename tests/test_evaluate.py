"""Evaluate mode: exact metrics from a run's checkpoint, the report and its pictures,
ensembles, and best-checkpoint tracking with early stopping during training."""

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
from sklearn import metrics as skm

from flaxcls.modes import build as runs
from flaxcls.modes import evaluate as evaluate_lib
from flaxcls.modes import train as train_lib
from flaxcls.testing.launch import ROOT, env_for
from flaxcls.testing.toy import tiny_config, write_npz

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == PNG_SIGNATURE, path
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evaluate")
    npz = write_npz(str(tmp), n_train=96, n_test=45)
    config = tiny_config(npz, **{"data.augment": "flip", "num_train_steps": 10})
    train_lib.train_and_evaluate(config, str(tmp / "run"))
    return tmp, config


def test_report_metrics_equal_an_independent_computation(trained):
    tmp, config = trained
    workdir = str(tmp / "run")
    result = evaluate_lib.evaluate_run(workdir, split="test", checkpoint="latest")
    # independent: restore, predict with the plain eval path, count with scikit-learn
    run = runs.load_run(workdir, "latest")
    images = np.load(config.data.path)["test_images"]
    labels = np.load(config.data.path)["test_labels"]
    logits = run.state.apply_fn(
        {"params": run.state.params, "batch_stats": run.state.batch_stats},
        run.inputs.normalizer(images),
        train=False,
    )
    predicted = np.asarray(logits).argmax(1)
    assert result["num_examples"] == 45
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(labels, predicted))
    np.testing.assert_array_equal(
        result["confusion_matrix"], skm.confusion_matrix(labels, predicted, labels=[0, 1, 2])
    )
    _, _, f1, _ = skm.precision_recall_fscore_support(
        labels, predicted, labels=[0, 1, 2], zero_division=0
    )
    np.testing.assert_allclose([r["f1"] for r in result["per_class"]], f1)
    with open(os.path.join(workdir, "eval", "test.json")) as f:
        assert json.load(f)["accuracy"] == result["accuracy"]


def test_report_pictures_are_valid_pngs_of_sensible_size(trained):
    tmp, _ = trained
    workdir = str(tmp / "run")
    evaluate_lib.evaluate_run(workdir, split="validation", checkpoint="best")
    names = ("confusion_matrix", "per_class", "mistakes", "reliability", "curves")
    for name in names:
        width, height = _png_size(os.path.join(workdir, "eval", "validation", f"{name}.png"))
        assert 200 <= width <= 2500 and 200 <= height <= 2500, (name, width, height)
    with open(os.path.join(workdir, "report.html"), encoding="utf-8") as f:
        page = f.read()
    for name in names:
        assert f"eval/validation/{name}.png" in page
    assert "macro avg" in page and "flip TTA" in page


def test_ensemble_of_two_identical_checkpoints_equals_one(trained, tmp_path):
    tmp, _ = trained
    workdir = str(tmp / "run")
    single = evaluate_lib.evaluate_run(workdir, checkpoint="latest", report=False)
    double = evaluate_lib.evaluate_run(
        workdir, checkpoint="latest", ensemble=[workdir], report=False
    )
    by_name = {v["variant"]: v for v in double["variants"]}
    assert by_name["ensemble of 2"]["accuracy"] == single["variants"][0]["accuracy"]
    assert by_name["ensemble of 2"]["loss"] == pytest.approx(single["variants"][0]["loss"], 1e-6)
    assert double["confusion_matrix"] == single["confusion_matrix"]


def test_evaluation_on_eight_devices_equals_one(trained, tmp_path):
    """Padding (45 test examples, batches of 24) and sharding over 8 devices change nothing."""
    tmp, _ = trained
    workdir = str(tmp / "run")
    one = evaluate_lib.evaluate_run(workdir, checkpoint="latest", report=False)
    result = subprocess.run(
        [
            sys.executable,
            "run.py",
            "--mode=evaluate",
            f"--workdir={workdir}",
            "--checkpoint=latest",
        ],
        cwd=ROOT,
        env=env_for(8),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(workdir, "eval", "test.json")) as f:
        eight = json.load(f)
    assert eight["num_examples"] == one["num_examples"] == 45
    assert eight["confusion_matrix"] == one["confusion_matrix"]
    assert eight["loss"] == pytest.approx(one["loss"], rel=1e-5)
    assert "macro avg" in result.stdout


def test_early_stopping_keeps_the_best_checkpoint_and_stays_stopped(tmp_path):
    # noise images with random labels: memorising the training set makes validation worse
    rng = np.random.default_rng(0)
    npz = str(tmp_path / "noise.npz")
    np.savez(
        npz,
        images=rng.integers(0, 256, (80, 28, 28, 1), dtype=np.uint8),
        labels=rng.integers(0, 3, 80),
        test_images=rng.integers(0, 256, (30, 28, 28, 1), dtype=np.uint8),
        test_labels=rng.integers(0, 3, 30),
    )
    config = tiny_config(
        npz,
        **{
            "num_train_steps": 300,
            "optimizer.learning_rate": 0.003,
            "eval_every_epochs": 0.5,
            "best_metric": "val_loss",
            "early_stopping_patience": 3,
        },
    )
    workdir = str(tmp_path / "run")
    test = train_lib.train_and_evaluate(config, workdir)
    assert test["step"] < 300
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        vals = [json.loads(line) for line in f if "val_loss" in line]
    losses = [v["val_loss"] for v in vals]
    best = int(np.argmin(losses))
    assert len(losses) == best + 1 + 3  # three validations without a lower loss, then stop
    assert vals[-1]["step"] == test["step"]
    assert runs.load_run(workdir, "best").step == vals[best]["step"]
    again = train_lib.train_and_evaluate(config, workdir)  # a restart does not train on
    assert again["step"] == test["step"]
