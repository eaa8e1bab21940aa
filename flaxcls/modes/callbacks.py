"""Hooks into `train_and_evaluate`, as Keras and Lightning users expect.

`train_and_evaluate(config, workdir, callbacks=[...])` calls each callback's methods on the main
process, outside jit, at the loop's log, validation and checkpoint points, with host values:

- `on_log(step, metrics)`: the train metrics written to metrics.jsonl at `step` (floats);
- `on_eval(step, metrics)`: the validation metrics (`val_loss`, `val_accuracy`, ...) at `step`;
- `on_checkpoint(step, path)`: a checkpoint of `step` was saved (asynchronously: it is complete
  once the run ends) at `path`.

A callback is any object with some of these methods; `Callback` has them all as no-ops. One that
raises stops the run with its error; checkpoints already saved are kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

HOOKS = ("on_log", "on_eval", "on_checkpoint")


class Callback:
    """A base class whose hooks do nothing: override the ones you need."""

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def on_checkpoint(self, step: int, path: str) -> None:
        pass


def call(callbacks: Iterable[Any], hook: str, step: int, value: Any) -> None:
    """Calls `hook(step, value)` on every callback that has it (a fresh copy of a dict each)."""
    for callback in callbacks:
        method = getattr(callback, hook, None)
        if method is not None:
            method(step, dict(value) if isinstance(value, dict) else value)
