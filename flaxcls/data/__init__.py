"""Input: dataset facts, sources (tfds, IDX, npz), augmentation, batching."""

from flaxcls.data.datasets import DATASETS, DatasetInfo, get_dataset_info
from flaxcls.data.input import Input, build_input
from flaxcls.data.sources import ArraySplit, DatasetNotPreparedError

__all__ = [
    "DATASETS",
    "ArraySplit",
    "DatasetInfo",
    "DatasetNotPreparedError",
    "Input",
    "build_input",
    "get_dataset_info",
]
