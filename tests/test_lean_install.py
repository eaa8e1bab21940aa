"""The core install (`pip install -e .`, no extras) trains, evaluates and writes the report;
what needs an extra says which one. The extras' modules are hidden from Python here, as they
are absent from a core install."""

import os
import subprocess
import sys

import pytest

from flaxcls.data import sources
from flaxcls.errors import ConfigError
from flaxcls.modes.export import export_run
from flaxcls.testing.launch import ROOT, env_for, write_config
from flaxcls.testing.toy import tiny_config, write_npz

# Top-level modules of the `tfds`, `export`, `dev` and `bench` extras.
EXTRAS = (
    "tensorflow",
    "tensorflow_datasets",
    "tensorboard",
    "jax2onnx",
    "onnx",
    "onnxruntime",
    "ai_edge_litert",
    "sklearn",
    "torch",
    "keras",
)

CORE_ONLY = """
import runpy, sys
for name in {extras!r}:
    sys.modules[name] = None  # `import name` now raises ImportError, as in a core install
sys.argv = ["run.py"] + sys.argv[1:]
runpy.run_path("run.py", run_name="__main__")
"""


def _core_run(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CORE_ONLY.format(extras=EXTRAS), *flags],
        cwd=ROOT,
        env=env_for(1),
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_the_core_trains_evaluates_and_reports_and_export_names_its_extra(tmp_path):
    config = write_config(str(tmp_path), write_npz(str(tmp_path)))
    workdir = str(tmp_path / "run")
    trained = _core_run(f"--config={config}", f"--workdir={workdir}")
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert os.path.isfile(os.path.join(workdir, "test_metrics.json"))
    assert not os.path.exists(os.path.join(workdir, "tensorboard"))  # no TensorFlow to write it

    evaluated = _core_run("--mode=evaluate", f"--workdir={workdir}")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert os.path.isfile(os.path.join(workdir, "report.html"))

    exported = _core_run("--mode=export", f"--workdir={workdir}")
    assert exported.returncode != 0
    assert "pip install 'flaxcls[export]'" in exported.stderr
    assert "Traceback" not in exported.stderr
    assert not os.path.exists(os.path.join(workdir, "export"))  # refused before any work


@pytest.mark.parametrize("missing", ["jax2onnx", "onnxruntime", "ai_edge_litert", "tensorflow"])
def test_export_without_a_module_of_its_extra_names_the_extra(tmp_path, monkeypatch, missing):
    monkeypatch.setitem(sys.modules, missing, None)
    with pytest.raises(ConfigError, match=rf"needs {missing}\b.*pip install 'flaxcls\[export\]'"):
        export_run(str(tmp_path))
    assert not os.path.exists(tmp_path / "export")


def test_a_tfds_dataset_without_tensorflow_datasets_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    data = tiny_config("x", **{"data.dataset": "cifar10", "data.source": "tfds"}).data
    with pytest.raises(ConfigError, match=r"pip install 'flaxcls\[tfds\]'.*local files"):
        sources.load_splits(data)
