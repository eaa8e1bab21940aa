"""Every shipped config loads and names things that exist."""

import glob
import importlib.util
import os

import pytest

from flaxcls.core.optim import OPTIMIZERS, SCHEDULES
from flaxcls.data.augment import get_augmentation
from flaxcls.data.datasets import DATASETS
from flaxcls.models import MODELS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))


@pytest.mark.parametrize("path", [p for p in CONFIGS if not p.endswith("__init__.py")])
def test_config_names_registered_parts(path):
    spec = importlib.util.spec_from_file_location("config_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    assert config.model.name in MODELS
    assert config.data.dataset in DATASETS or config.data.dataset in ("custom", "folder")
    assert config.optimizer.name in OPTIMIZERS and config.schedule.name in SCHEDULES
    streaming = config.data.dataset in DATASETS and DATASETS[config.data.dataset].streaming
    if not streaming:  # streaming datasets augment in tf.data, with their own names
        get_augmentation(config.data.augment)
    assert config.batch_size > 0 and config.optimizer.learning_rate > 0
    assert module.__doc__ and "python run.py" in module.__doc__
