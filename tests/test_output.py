"""What a user sees from run.py: where a run's files go, which checkpoint every test figure comes
from (the final line, test_metrics.json, --mode=evaluate), the progress display when stderr is
not a terminal, --help and --print_config, and an offline run that fails cleanly."""

import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from configs import fashion_mnist
from flaxcls.modes import evaluate as evaluate_lib
from flaxcls.rundir.writers import LogProgress
from flaxcls.testing.launch import ROOT, env_for, run_py, run_py_once, write_config

STEPS = 60


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run.py run whose best checkpoint by validation loss is not its last: noise images with
    random labels, which the model memorises, so validation loss rises after a few steps."""
    tmp = tmp_path_factory.mktemp("output")
    rng = np.random.default_rng(0)
    npz = str(tmp / "noise.npz")
    np.savez(
        npz,
        images=rng.integers(0, 256, (80, 28, 28, 1), dtype=np.uint8),
        labels=rng.integers(0, 3, 80),
        test_images=rng.integers(0, 256, (30, 28, 28, 1), dtype=np.uint8),
        test_labels=rng.integers(0, 3, 30),
    )
    overrides = {
        "num_train_steps": STEPS,
        "optimizer.learning_rate": 0.003,
        "eval_every_epochs": 2.0,
        "best_metric": "val_loss",
        "progress_bar": True,  # stderr is a pipe here, as in a CI log
    }
    config = write_config(str(tmp), npz, **overrides)
    workdir = str(tmp / "run")
    (result,) = run_py(config, workdir, timeout=900)  # generous: a shared, busy CPU
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        validations = [json.loads(line) for line in f if "val_loss" in line]
    with open(os.path.join(workdir, "test_metrics.json"), encoding="utf-8") as f:
        test = json.load(f)
    best = validations[int(np.argmin([v["val_loss"] for v in validations]))]
    return workdir, result, test, best


@pytest.mark.slow  # shares one run.py training run (~20 s on 2 idle cores)
def test_final_line_and_test_metrics_name_the_latest_checkpoint(trained):
    workdir, result, test, best = trained
    assert best["step"] < STEPS  # the fixture's premise: best and last differ
    assert test["checkpoint"] == "latest" and test["step"] == STEPS
    lines = result.stdout.strip().splitlines()
    assert lines[-2] == (
        f"test: accuracy {test['accuracy']:.4f}  top5 {test['top5_accuracy']:.4f}  "
        f"loss {test['loss']:.4f}  ({test['num_examples']} examples; latest checkpoint, "
        f"step {STEPS})"
    )
    assert lines[-1].startswith(f"the best checkpoint by val_loss is step {best['step']};")
    assert f"--mode=evaluate --workdir {workdir}" in lines[-1]


@pytest.mark.slow  # shares one run.py training run (~20 s on 2 idle cores)
def test_evaluate_says_which_checkpoint_it_restored(trained, capsys):
    workdir, _, test, best = trained
    latest = evaluate_lib.evaluate_run(workdir, checkpoint="latest", report=False)
    out = capsys.readouterr().out
    assert latest["checkpoint"] == "latest" and latest["step"] == STEPS
    assert f"checkpoint latest, step {STEPS} (the best by val_loss is step {best['step']})" in out
    # the same weights as the training run's final line: the same test accuracy (an argmax tie
    # between its logits and these probabilities could move one example)
    assert abs(latest["accuracy"] - test["accuracy"]) <= 1 / test["num_examples"]

    chosen = evaluate_lib.evaluate_run(workdir, checkpoint="best", report=False)
    out = capsys.readouterr().out
    assert chosen["checkpoint"] == "best" and chosen["step"] == best["step"]
    text = f"best by val_loss ({best['val_loss']:.4f}), step {best['step']}; the latest is step 60"
    assert chosen["checkpoint_text"] == text and text in out
    with open(os.path.join(workdir, "eval", "test.json"), encoding="utf-8") as f:
        written = json.load(f)
    assert (written["checkpoint"], written["step"]) == ("best", best["step"])
    # this run trained without flips: the flip TTA row says so
    flip_row = next(v for v in chosen["variants"] if v["variant"] == "this run + flip TTA")
    assert "did not train with flips" in flip_row["note"] and flip_row["note"] in out


@pytest.mark.slow  # shares one run.py training run (~20 s on 2 idle cores)
def test_start_line_names_where_the_files_go(trained):
    workdir, result, _, _ = trained
    line = next(x for x in result.stdout.splitlines() if x.startswith(f"workdir {workdir}:"))
    for name in ("checkpoints/", "metrics.jsonl", "tensorboard/", "config.json"):
        assert name in line and os.path.exists(os.path.join(workdir, name)), name
    assert "test_metrics.json" in line and "report.html" in line and "--mode=evaluate" in line


@pytest.mark.slow  # shares one run.py training run (~20 s on 2 idle cores)
def test_progress_on_a_pipe_is_a_few_plain_lines(trained):
    _, result, _, _ = trained
    assert "\r" not in result.stderr  # no terminal redraws
    progress = re.findall(rf"^step (\d+)/{STEPS} \(\d+%\)", result.stderr, re.MULTILINE)
    assert 1 <= len(progress) <= 3 and int(progress[-1]) == STEPS


def test_log_progress_prints_at_most_once_an_interval():
    now = [0.0]
    stream = io.StringIO()
    bar = LogProgress(1000, interval=30.0, stream=stream, clock=lambda: now[0])
    with bar:
        for _ in range(1000):  # 1000 steps of 0.125 s (exact in binary): 125 s
            now[0] += 0.125
            bar.update(1)
            bar.set_postfix(loss="0.5")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 5  # at 30, 60, 90 and 120 s, and the end
    assert lines[0].startswith("step 240/1000 (24%) loss=0.5  0:30 elapsed, eta 1:35")
    assert lines[-1].startswith("step 1000/1000 (100%) loss=0.5  2:05 elapsed, eta 0:00")


def _run_py(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "run.py", *args],
        cwd=ROOT,
        env=env_for(1),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_help_exits_zero_and_says_where_config_fields_are():
    result = _run_py("--help")
    assert result.returncode == 0, result.stderr
    assert "configs/default.py" in result.stdout and "--print_config" in result.stdout
    assert "--workdir" in result.stdout and "--mode" in result.stdout
    assert len(result.stdout.splitlines()) < 100  # run.py's flags, not every absl flag


def test_print_config_lists_every_field_with_its_comment(tmp_path):
    workdir = tmp_path / "never_created"
    result = _run_py(
        "--config=configs/fashion_mnist.py",
        "--config.num_epochs=3",
        f"--workdir={workdir}",
        "--print_config",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert not workdir.exists()
    shown = dict(line.split(" = ", 1) for line in result.stdout.splitlines())

    def leaves(tree, prefix=""):
        for key, value in tree.items():
            if isinstance(value, dict):
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield prefix + key

    assert set(shown) == set(leaves(fashion_mnist.get_config().to_dict()))
    assert shown["num_epochs"] == "3.0  # (default 10.0)"
    assert shown["batch_size"].startswith("64  # global")  # the comment in configs/default.py
    assert shown["data.path"].startswith("''  # IDX folder")  # in flaxcls/data/api.py


def test_offline_cifar10_leaves_no_workdir_and_prints_one_line(tmp_path):
    workdir = tmp_path / "runs" / "cifar10"
    result = run_py_once("configs/cifar10.py", str(workdir), f"--config.data.data_dir={tmp_path}")
    assert result.returncode != 0
    assert not (tmp_path / "runs").exists()  # neither the workdir nor the runs/ made for it
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: tfds dataset 'cifar10' is not prepared")
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("platforms", "model", "size"),
    [("cpu", "seed_cnn", 32), ("cuda", "cifar_resnet18", 64), ("tpu,cpu", "cifar_resnet18", 64)],
)
def test_folder_config_sizes_itself_to_the_platform(monkeypatch, platforms, model, size):
    from configs import folder

    monkeypatch.setenv("JAX_PLATFORMS", platforms)
    config = folder.get_config()
    assert (config.model.name, config.data.image_size) == (model, size)
    named = folder.get_config("cpu" if model == "seed_cnn" else "accelerator")
    assert named.to_dict() == config.to_dict()
