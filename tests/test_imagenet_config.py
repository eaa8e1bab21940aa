"""configs/imagenet_resnet50.py end to end: its real training path (tf.data streaming with
inception crops, ResNet-50 in bfloat16, Nesterov SGD with warmup + cosine, label smoothing,
validation on the held-out minival, the test split at the end) on tfds's mock imagenet2012,
shrunk only in image size, batch and length. No network: sockets refuse to connect."""

import json
import math
import socket

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from configs import imagenet_resnet50  # noqa: E402
from flaxcls.modes import train as train_lib  # noqa: E402
from tests.tfds_mock import mock_streamed_data  # noqa: E402

MOCK_EXAMPLES = 24  # the mock yields this many examples for every split
SMALL = {
    "data.image_size": 32,  # ResNet-50's five stride-2 stages leave 1x1
    "data.eval_resize": 36,
    "data.shuffle_buffer": 8,
    "batch_size": 8,
    "eval_batch_size": 16,  # 24 examples: a full batch and a padded, masked one
    "num_train_steps": 3,  # an epoch is 3 steps of 8, so validation runs once, at step 3
    "log_every_steps": 1,
    "progress_bar": False,
    "compilation_cache_dir": "",
    "data.download": True,  # the mock answers; the socket guard proves nothing is fetched
}


def refuse(*args, **kwargs):
    raise OSError(f"network access from a test: {args}")


@pytest.mark.slow
def test_imagenet_resnet50_config_trains_and_evaluates_on_mock_data(tmp_path, monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    config = imagenet_resnet50.get_config()
    data_dir = str(tmp_path / "tfds")
    config.update_from_flattened_dict({**SMALL, "data.data_dir": data_dir})
    workdir = tmp_path / "run"
    with mock_streamed_data(data_dir, MOCK_EXAMPLES):
        test = train_lib.train_and_evaluate(config, str(workdir))

    # The run used the config's recipe: every field the test did not shrink is the config's.
    recipe = imagenet_resnet50.get_config().to_dict()
    with open(workdir / "config.json") as f:
        resolved = json.load(f)
    recipe = json.loads(json.dumps(recipe))  # tuples as JSON lists, as config.json holds them
    for key, value in _flatten(recipe).items():
        if key not in SMALL and key != "data.data_dir":
            assert _flatten(resolved)[key] == value, key
    assert resolved["model"] == {**recipe["model"], "name": "resnet50", "dtype": "bfloat16"}

    with open(workdir / "dataset.json") as f:
        facts = json.load(f)
    assert facts["info"]["image_shape"] == [32, 32, 3] and facts["info"]["num_classes"] == 1000
    assert facts["steps_per_epoch"] == 3

    with open(workdir / "metrics.jsonl") as f:
        lines = [json.loads(line) for line in f]
    train_losses = [line["train_loss"] for line in lines if "train_loss" in line]
    assert len(train_losses) == 3 and all(math.isfinite(x) for x in train_losses)
    # The first step (learning rate 0 at the start of the warmup) scores the initial network,
    # which cannot beat a uniform guess over 1000 classes, log(1000) = 6.9, by much.
    assert train_losses[0] > np.log(1000) - 0.5, train_losses
    validations = [line for line in lines if "val_accuracy" in line]
    assert len(validations) == 1 and validations[0]["step"] == 3
    assert 0.0 <= validations[0]["val_accuracy"] <= 1.0

    # Every test example counted once (the second batch padded and masked).
    assert test["num_examples"] == MOCK_EXAMPLES and test["step"] == 3
    assert math.isfinite(test["loss"]) and 0.0 <= test["top5_accuracy"] <= 1.0
    with open(workdir / "test_metrics.json") as f:
        assert json.load(f)["num_examples"] == MOCK_EXAMPLES
    assert (workdir / "checkpoints").is_dir()


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
