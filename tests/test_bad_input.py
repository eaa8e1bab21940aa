"""Bad configuration and bad paths: one readable line each, before anything compiles."""

import json
import os
import pickle
import subprocess
import sys

import pytest

from flaxcls.errors import ConfigError
from flaxcls.models import foreign
from flaxcls.testing.launch import ROOT, write_config, xla_flags
from flaxcls.testing.toy import write_npz

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "JAX_PLATFORMS": "cpu"}

CASES = {
    "wrong type": (["--config.num_epochs=ten"], "num_epochs"),
    "negative learning rate": (
        ["--config.optimizer.learning_rate=-0.1"],
        "optimizer.learning_rate=-0.1 must be > 0",
    ),
    "negative epochs": (["--config.num_epochs=-1"], "num_epochs=-1.0 must be > 0"),
    "images too small for the model": (
        ["--config.data.dataset=folder", "--config.data.image_size=4"],
        "model.name='seed_cnn' needs images of at least 18x18 pixels, not 4x4",
    ),
    "unknown model": (["--config.model.name=resnet9000"], "valid names: cifar_resnet18"),
    "unknown dataset": (["--config.data.dataset=imagenet21k"], "fashion_mnist"),
    "unknown optimizer": (["--config.optimizer.name=lion"], "choose one of sgd, adam, adamw"),
    "unknown augmentation": (["--config.data.augment=mixup"], "choose one of none, flip"),
    "batch size over the devices": (["--config.batch_size=17"], "batch_size=17 does not divide"),
    "missing data file": (["--config.data.path=/nonexistent/data.npz"], "/nonexistent/data.npz"),
    "missing init_from run": (["--config.init_from=/nonexistent/run"], "/nonexistent/run"),
    "unknown best metric": (["--config.best_metric=val_f1"], "val_accuracy, val_top5_accuracy"),
    "negative steps per call": (
        ["--config.steps_per_dispatch=-1"],
        "steps_per_dispatch=-1 must be",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_before_compiling(tmp_path, case):
    flags, expected = CASES[case]
    config = write_config(str(tmp_path), write_npz(str(tmp_path)))
    env = {**ENV, "XLA_FLAGS": xla_flags(2)}
    result = subprocess.run(
        [sys.executable, "run.py", f"--config={config}", f"--workdir={tmp_path / 'run'}", *flags],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and expected in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not os.path.isdir(tmp_path / "run" / "checkpoints"), "it got as far as training"


def _run(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "run.py", *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    """The single `error:` line of a failed run.py, which printed no traceback."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr[-2000:]
    return lines[0]


CONFIG_FILES = {
    "syntax error": ("def get_config(:\n    pass\n", "line 1: SyntaxError: invalid syntax"),
    "raises": (
        "def get_config():\n    raise RuntimeError('no data here')\n",
        "line 2: RuntimeError: no data here",
    ),
    "no get_config": ("CONFIG = 1\n", "it defines no get_config() function"),
    "not a ConfigDict": (
        "def get_config():\n    return {'batch_size': 8}\n",
        "get_config() returned a dict, not an ml_collections.ConfigDict",
    ),
    "import error": (
        "import flaxcls_no_such_module\n",
        "line 1: ModuleNotFoundError: No module named 'flaxcls_no_such_module'",
    ),
}


@pytest.mark.parametrize("case", list(CONFIG_FILES))
def test_a_config_file_that_gives_no_config_is_one_line(tmp_path, case):
    text, reason = CONFIG_FILES[case]
    path = tmp_path / "broken.py"
    path.write_text(text)
    line = _one_error_line(_run(f"--config={path}", f"--workdir={tmp_path / 'run'}"))
    assert line.startswith(f"error: config file {path}: {reason}"), line


@pytest.mark.parametrize("mode", ["train", "evaluate"])
def test_a_workdir_that_is_a_file_is_one_line(tmp_path, mode):
    workdir = tmp_path / "notes.txt"
    workdir.write_text("not a run")
    args = ["--config=configs/fashion_mnist.py"] if mode == "train" else []
    line = _one_error_line(_run(*args, f"--mode={mode}", f"--workdir={workdir}"))
    assert line == f"error: --workdir {workdir} is a file, not a directory."


def _fake_run(directory) -> str:
    """A directory that looks like a finished run to run.py's own checks."""
    os.makedirs(directory / "checkpoints" / "12")
    (directory / "config.json").write_text(json.dumps({}))
    return str(directory)


@pytest.mark.parametrize(
    "mode, workdir, expected",
    [
        ("evaluate", "empty", "is not a flaxcls run (it has no config.json)"),
        ("export", "other", "is not a flaxcls run (it has no config.json)"),
        ("evaluate", "missing", "does not exist; --mode=evaluate needs"),
        ("export", "untrained", "has no checkpoint yet"),
    ],
)
def test_a_mode_without_a_run_to_work_on_is_one_line(tmp_path, mode, workdir, expected):
    os.makedirs(tmp_path / "empty")
    os.makedirs(tmp_path / "other")
    (tmp_path / "other" / "notes.txt").write_text("not a run")
    os.makedirs(tmp_path / "untrained")
    (tmp_path / "untrained" / "config.json").write_text("{}")
    line = _one_error_line(_run(f"--mode={mode}", f"--workdir={tmp_path / workdir}"))
    assert line.startswith(f"error: --workdir {tmp_path / workdir} {expected}"), line


@pytest.mark.parametrize("contents", [[], ["notes.txt", "labels.csv"]], ids=["empty", "no images"])
def test_predict_with_no_image_files_is_one_line(tmp_path, contents):
    run = _fake_run(tmp_path / "run")
    folder = tmp_path / "photos"
    os.makedirs(folder)
    for name in contents:
        (folder / name).write_text("not an image")
    line = _one_error_line(_run("--mode=predict", f"--workdir={run}", str(folder)))
    assert line.startswith(f"error: no image files in {folder} (looked for .jpg"), line


class _NotATensor:
    pass


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_a_torch_file_with_pickled_objects_says_how_to_save_a_state_dict(tmp_path, writer):
    torch = pytest.importorskip("torch")
    path = str(tmp_path / "model.pt")
    weights = {"conv1.weight": torch.zeros(2, 2), "extra": _NotATensor()}
    if writer == "torch.save":
        torch.save(weights, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(weights, f)
    with pytest.raises(ConfigError) as raised:
        foreign.load_state_dict(path)
    message = str(raised.value)
    assert message.startswith(f"{path} holds more than tensors"), message
    assert "torch.save(model.state_dict(), path)" in message
    assert "weights_only=False" not in message and "\n" not in message
    if writer == "torch.save":
        assert "_NotATensor" in message
