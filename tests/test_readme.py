"""The README's Python runs as printed."""

import os
import re
import subprocess
import sys

import pytest

from flaxcls.testing.launch import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python_blocks():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    return re.findall(r"```python\n(.*?)```", readme, re.S)


@pytest.mark.skipif(
    not os.path.isdir("/usr/share/datasets/fashion-mnist"),
    reason="the data API block reads Fashion-MNIST: apt-get install dataset-fashion-mnist",
)
def test_every_python_block_runs_in_order_as_pasted():
    """Every ```python block, in order and in one namespace (each continues the one before:
    the scan example reuses `batch`, the pmap one `batch` and the imports), in a fresh
    interpreter on 8 simulated CPU devices so the pmap example splits its batch over 8.
    Nothing is added to the blocks: they make their own data, or read the installed
    Fashion-MNIST as the README's first command sets it up."""
    blocks = _python_blocks()
    assert len(blocks) >= 3
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": xla_flags(8),
    }
    result = subprocess.run(
        [sys.executable, "-c", "\n".join(blocks)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,  # a hang guard, generous for a loaded machine
    )
    assert result.returncode == 0, result.stderr[-4000:]
    out = result.stdout
    assert "train loss" in out and "eval accuracy" in out and "steps 18" in out
    assert "pmap eval correct" in out and "test accuracy" in out
    assert "jit devices 8 kernel P(None, None, 'data', None)" in out
    assert "jit train count 64" in out
    assert "resumed at step 3 after epoch 2" in out and "learning rate 0.001" in out
    assert "same logits True" in out and "nnx loop {'loss'" in out
    assert "checkpoint 10 10" in out and "hooks [(4, " in out


def test_first_lines_give_the_two_commands():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        head = f.read(1500)
    assert "python run.py --config configs/fashion_mnist.py" in head
    assert "python -m pytest -q" in head
