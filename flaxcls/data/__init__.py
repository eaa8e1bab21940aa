"""Input: dataset facts, sources (tfds, IDX, npz, folders), augmentation, batching."""

from flaxcls.data.api import (
    batches,
    data_config,
    dataset_info,
    default_data_config,
    eval_batches,
    load_arrays,
    load_input,
)
from flaxcls.data.contract import (
    ArraySplit,
    Batch,
    DatasetInfo,
    Input,
    Layout,
    Normalizer,
    normalizing,
)
from flaxcls.data.datasets import DATASETS, get_dataset_info
from flaxcls.data.input import build_input
from flaxcls.data.sources import SOURCES, DatasetNotPreparedError

__all__ = [
    "DATASETS",
    "SOURCES",
    "ArraySplit",
    "Batch",
    "DatasetInfo",
    "DatasetNotPreparedError",
    "Input",
    "Layout",
    "Normalizer",
    "batches",
    "build_input",
    "data_config",
    "dataset_info",
    "default_data_config",
    "eval_batches",
    "get_dataset_info",
    "load_arrays",
    "load_input",
    "normalizing",
]
