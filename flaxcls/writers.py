"""Where metrics go: `metrics.jsonl` (for scripts) and TensorBoard (through clu, when present)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any


def _tensorboard_writer(logdir: str) -> Any:
    try:  # clu's writer needs TensorFlow; without it the jsonl file still has every figure.
        from clu import metric_writers
    except ImportError:
        return None
    return metric_writers.SummaryWriter(logdir)


class MetricsLog:
    """Scalar metrics by step, written by the main process only."""

    def __init__(self, workdir: str, *, is_main_process: bool = True):
        self._jsonl = None
        self._tensorboard = None
        if is_main_process:
            self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")  # noqa: SIM115
            self._tensorboard = _tensorboard_writer(os.path.join(workdir, "tensorboard"))

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        if self._jsonl is None:
            return
        record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        if self._tensorboard is not None:
            self._tensorboard.write_scalars(int(step), dict(scalars))

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tensorboard is not None:
            self._tensorboard.close()
