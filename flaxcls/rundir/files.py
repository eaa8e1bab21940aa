"""The files of a run directory, by name, and how they are written and read: JSON written
atomically (a crash leaves the old file or the new one, never half of one), the dataset facts
a finished run needs to stand on its own, and the run's config.

Training writes the run's dataset facts (`dataset.json`: image shape, normalisation, class
names, split sizes) beside `config.json`, so prediction, export, `init_from` and ensemble
members build the state from those files and the checkpoint, and never read or decode the
training data.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import ml_collections

from flaxcls.data import DatasetInfo, Input

CONFIG_FILE = "config.json"
FACTS_FILE = "dataset.json"
CLASSES_FILE = "classes.json"
TEST_METRICS_FILE = "test_metrics.json"
CHECKPOINTS_DIR = "checkpoints"


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(workdir, CHECKPOINTS_DIR)


def save_json(path: str, obj: Any) -> None:
    """`obj` as indented JSON at `path`, replaced in one step."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def write_dataset_facts(workdir: str, inputs: Input) -> None:
    """What a finished run needs to know of its data without reading it again."""
    facts = {
        "info": dataclasses.asdict(inputs.info),
        "split_sizes": dict(inputs.split_sizes),
        "steps_per_epoch": inputs.steps_per_epoch(),
    }
    save_json(os.path.join(workdir, FACTS_FILE), facts)


def read_dataset_facts(workdir: str) -> tuple[DatasetInfo, int] | None:
    """The run's DatasetInfo and steps per epoch; None for a run trained before they were
    written."""
    path = os.path.join(workdir, FACTS_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        facts = json.load(f)
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in facts["info"].items()}
    return DatasetInfo(**fields), int(facts["steps_per_epoch"])


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: is {workdir!r} a flaxcls run directory?")
    with open(path, encoding="utf-8") as f:
        return ml_collections.ConfigDict(json.load(f))
