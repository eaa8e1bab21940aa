"""Bad configuration and bad paths: one readable line each, before anything compiles."""

import os
import subprocess
import sys

import pytest

from tests.helpers import write_npz
from tests.launch import ROOT, write_config

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "JAX_PLATFORMS": "cpu"}

CASES = {
    "wrong type": (["--config.num_epochs=ten"], "num_epochs"),
    "negative learning rate": (["--config.optimizer.learning_rate=-0.1"], "must be positive"),
    "unknown model": (["--config.model.name=resnet9000"], "valid names: cifar_resnet18"),
    "unknown dataset": (["--config.data.dataset=imagenet21k"], "fashion_mnist"),
    "unknown optimizer": (["--config.optimizer.name=lion"], "choose one of sgd, adam, adamw"),
    "unknown augmentation": (["--config.data.augment=mixup"], "choose one of none, flip"),
    "batch size over the devices": (["--config.batch_size=17"], "batch_size=17 does not divide"),
    "missing data file": (["--config.data.path=/nonexistent/data.npz"], "/nonexistent/data.npz"),
    "missing init_from run": (["--config.init_from=/nonexistent/run"], "/nonexistent/run"),
    "unknown best metric": (["--config.best_metric=val_f1"], "val_accuracy, val_top5_accuracy"),
    "no steps per call": (["--config.steps_per_dispatch=0"], "steps_per_dispatch=0 must be"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_before_compiling(tmp_path, case):
    flags, expected = CASES[case]
    config = write_config(str(tmp_path), write_npz(str(tmp_path)))
    env = {**ENV, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
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
