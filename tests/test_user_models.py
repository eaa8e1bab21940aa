"""Your own model by name: `@register_model` checks its constructor, and a run of it stands on
its own (config.json records its module; evaluation and prediction import it again)."""

import json
import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import numpy as np
import pytest
from PIL import Image

from flaxcls.errors import ConfigError
from flaxcls.models import MODELS, get_model, register_model, registry
from flaxcls.modes import build as runs
from flaxcls.modes import train as train_lib
from flaxcls.modes.predict import predict_files
from flaxcls.testing.launch import ROOT, env_for
from flaxcls.testing.toy import tiny_config, write_npz

MODULE = "flaxcls_test_user_net"
NAME = "user_net_for_tests"
SOURCE = f"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from flaxcls.models import register_model


@register_model({NAME!r})
class UserNet(nn.Module):
    num_classes: int
    dtype: Any = jnp.float32
    dropout_rate: float = 0.0
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, *, train: bool):
        x = nn.Conv(4, (3, 3), strides=2, dtype=self.dtype)(x)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(nn.relu(x).mean(axis=(1, 2)))
        return nn.Dense(self.num_classes)(x)
"""


class NoLibraryArguments(nn.Module):
    num_classes: int

    def __call__(self, x, *, train: bool):
        return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))


def test_register_model_names_the_missing_constructor_arguments(monkeypatch):
    monkeypatch.setattr(registry, "MODELS", dict(MODELS))
    with pytest.raises(ConfigError) as caught:
        register_model("no_args")(NoLibraryArguments)
    message = str(caught.value)
    assert "does not take dtype, dropout_rate, axis_name" in message and "\n" not in message
    assert "no_args" not in registry.MODELS
    # Put in MODELS by hand, it is the same one line from get_model, not a TypeError.
    registry.MODELS["by_hand"] = NoLibraryArguments
    with pytest.raises(ConfigError, match="'by_hand' .* does not take dtype"):
        get_model("by_hand", num_classes=3)
    # **kwargs is enough; flaxcls's own names are refused.
    register_model("with_kwargs")(lambda num_classes, **kwargs: NoLibraryArguments(num_classes))
    assert get_model("with_kwargs", num_classes=3).num_classes == 3
    with pytest.raises(ConfigError, match="one of flaxcls's own"):
        register_model("resnet18")(NoLibraryArguments)


@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("user_model")
    package = root / "pkg"
    package.mkdir()
    (package / f"{MODULE}.py").write_text(textwrap.dedent(SOURCE))
    npz = write_npz(str(root))
    workdir = str(root / "run")
    sys.path.insert(0, str(package))
    try:
        __import__(MODULE)
        config = tiny_config(npz, num_train_steps=4)
        config.model.name = NAME
        train_lib.train_and_evaluate(config, workdir)
    finally:
        sys.path.remove(str(package))
        sys.modules.pop(MODULE, None)
        MODELS.pop(NAME, None)
    image = str(root / "one.png")
    Image.fromarray(np.load(npz)["test_images"][0, :, :, 0]).save(image)
    return package, workdir, image


def test_config_json_records_where_the_model_comes_from(user_run):
    package, workdir, _ = user_run
    with open(os.path.join(workdir, "config.json")) as f:
        model = json.load(f)["model"]
    assert model["name"] == NAME and model["module"] == MODULE
    assert model["module_file"] == str(package / f"{MODULE}.py")


def test_a_fresh_registry_imports_the_recorded_module(user_run, monkeypatch):
    package, workdir, image = user_run
    assert NAME not in MODELS  # as in a new process
    monkeypatch.syspath_prepend(str(package))
    try:
        run = runs.load_run(workdir)
        assert NAME in MODELS and run.step == 4
        [result] = predict_files(workdir, [image], top_k=2)
        assert "error" not in result and len(result["top"]) == 2
    finally:
        sys.modules.pop(MODULE, None)
        MODELS.pop(NAME, None)


def test_run_py_evaluates_and_predicts_it_in_a_fresh_process(user_run):
    """Off sys.path, the module's recorded file is loaded."""
    _, workdir, image = user_run
    for flags in (["--mode=evaluate"], ["--mode=predict", image]):
        result = subprocess.run(
            [sys.executable, "run.py", f"--workdir={workdir}", "--checkpoint=latest", *flags],
            cwd=ROOT,
            env=env_for(1),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert "unknown model" not in result.stdout + result.stderr


def test_a_module_that_is_gone_is_one_clear_error(user_run, tmp_path):
    _, workdir, _ = user_run
    moved = tmp_path / "run"
    os.makedirs(moved)
    with open(os.path.join(workdir, "config.json")) as f:
        config = json.load(f)
    config["model"]["module"] = "no_such_module_anywhere"
    config["model"]["module_file"] = str(tmp_path / "gone.py")
    with open(moved / "config.json", "w") as f:
        json.dump(config, f)
    with pytest.raises(ConfigError) as caught:
        runs.load_run(str(moved))
    message = str(caught.value)
    assert f"model {NAME!r} comes from module 'no_such_module_anywhere'" in message
    assert "ModuleNotFoundError" in message and "PYTHONPATH" in message
