"""The README's library example runs as printed."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_library_example_runs(capsys):
    """The first example, then the `scan_steps` one that continues it."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    section = readme.split("## Library use", 1)[1]
    code = "".join(re.findall(r"```python\n(.*?)```", section, re.S)[:2])
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "train loss" in out and "eval accuracy" in out and "steps 18" in out


def test_first_lines_give_the_two_commands():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        head = f.read(1500)
    assert "python run.py --config configs/fashion_mnist.py" in head
    assert "python -m pytest -q" in head
