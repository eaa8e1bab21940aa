"""The shipped configs, unchanged but for their length, on a host with 8 devices: the default
eval_batch_size=500 is padded to 504 rows with masked padding, so no config needs adjusting."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

import numpy as np

from flaxcls.testing.launch import ROOT, env_for

DEVICES = 8
SHORT = ["--config.num_train_steps=2", "--config.progress_bar=False"]
SHORT += ["--config.compilation_cache_dir="]
# run.py on tfds's mock data: 100 random examples per split (80 train, 20 validation).
MOCK_RUN = """
import runpy, sys
import tensorflow_datasets as tfds
sys.argv = ["run.py"] + sys.argv[1:]
with tfds.testing.mock_data(num_examples=100):
    runpy.run_path("run.py", run_name="__main__")
"""


def write_idx_dataset(directory: str, n_train: int = 160, n_test: int = 70) -> str:
    """Fashion-MNIST-shaped IDX files (28x28 uint8, labels 0-9), as the original release has."""
    rng = np.random.default_rng(0)
    files = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, array in files.items():
        header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
            struct.pack(">I", d) for d in array.shape
        )
        with open(os.path.join(directory, name), "wb") as f:
            f.write(header + array.tobytes())
    return directory


def start(args: list[str], workdir: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *args, f"--workdir={workdir}", *SHORT],
        cwd=ROOT,
        env=env_for(DEVICES),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_fashion_mnist_and_cifar10_configs_run_on_8_devices(tmp_path):
    idx_dir = tmp_path / "idx"
    idx_dir.mkdir()
    fashion, cifar = tmp_path / "fashion_mnist", tmp_path / "cifar10"
    runs = {
        fashion: start(
            ["run.py", "--config=configs/fashion_mnist.py"]
            + [f"--config.data.path={write_idx_dataset(str(idx_dir))}"],
            str(fashion),
        ),
        cifar: start(
            ["-c", MOCK_RUN, "--config=configs/cifar10.py", "--config.data.download=True"]
            + [f"--config.data.data_dir={tmp_path / 'tfds'}"],
            str(cifar),
        ),
    }
    try:
        results = {workdir: proc.communicate(timeout=240) for workdir, proc in runs.items()}
    finally:
        for proc in runs.values():
            proc.kill()
    for workdir, proc in runs.items():
        assert proc.returncode == 0, results[workdir][1][-4000:]
    expected_test_examples = {fashion: 70, cifar: 100}
    for workdir, examples in expected_test_examples.items():
        with open(workdir / "test_metrics.json") as f:
            metrics = json.load(f)
        # One evaluation batch of 504 rows, all but `examples` of them masked padding.
        assert metrics["num_examples"] == examples and metrics["step"] == 2
        assert 0.0 <= metrics["accuracy"] <= 1.0
