"""What a run writes and says: `metrics.jsonl` (for scripts) and TensorBoard event files (when
the `tensorboard` package is installed), the progress display, and the lines that say where
the files are and which weights the final figures come from."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

import tqdm

from flaxcls.rundir import event_file

# Where stderr is not a terminal (a file, a CI log), one progress line this often at most:
# tqdm's redraws, ten a second, would fill a log with thousands of carriage-return lines.
LOG_PROGRESS_SECONDS = 30.0


class MetricsLog:
    """Scalar metrics by step, written by the main process only."""

    def __init__(self, workdir: str, *, is_main_process: bool = True):
        self._jsonl = None
        self._tensorboard = None
        if is_main_process:
            self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")  # noqa: SIM115
            if event_file.available():  # else the jsonl file still has every figure
                self._tensorboard = event_file.EventFile(os.path.join(workdir, "tensorboard"))

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


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class LogProgress:
    """The progress bar's stand-in for a stream that is not a terminal: a plain line (step,
    share done, the bar's figures, elapsed time and ETA) at most every `interval` seconds and
    one at the end. The same methods as the `tqdm` bar the training loop drives."""

    def __init__(
        self,
        total: int,
        initial: int = 0,
        *,
        interval: float = LOG_PROGRESS_SECONDS,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.total, self.n, self.initial = total, initial, initial
        self.interval, self.clock = interval, clock
        self.stream = stream
        self.postfix: dict[str, Any] = {}
        self.start = self.last = clock()
        self.printed_at: int | None = None

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.clock() - self.last >= self.interval:
            self._print()

    def set_postfix(self, **figures: Any) -> None:
        self.postfix = figures

    @staticmethod
    def write(text: str) -> None:
        print(text, flush=True)  # as tqdm.write: on stdout, with the run's other lines

    def _print(self) -> None:
        now = self.clock()
        elapsed = now - self.start
        done = self.n - self.initial
        eta = elapsed / done * (self.total - self.n) if done else 0.0
        figures = "".join(f" {k}={v}" for k, v in self.postfix.items())
        share = self.n / self.total if self.total else 1.0
        print(
            f"step {self.n}/{self.total} ({share:.0%}){figures}  {_clock(elapsed)} elapsed, "
            f"eta {_clock(eta)}",
            file=self.stream or sys.stderr,
            flush=True,
        )
        self.last, self.printed_at = now, self.n

    def close(self) -> None:
        if self.printed_at != self.n and self.n > self.initial:
            self._print()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(total: int, initial: int, enabled: bool) -> tqdm.tqdm | LogProgress:
    """A tqdm bar on a terminal; elsewhere (stderr redirected to a file or a CI log) a plain
    line every `LOG_PROGRESS_SECONDS`. Disabled, a bar that shows nothing."""
    if enabled and not sys.stderr.isatty():
        return LogProgress(total, initial)
    return tqdm.tqdm(
        total=total, initial=initial, unit="step", disable=not enabled, dynamic_ncols=True
    )


def run_files(workdir: str) -> str:
    """Where a training run's files go, said once at its start."""
    return (
        f"workdir {workdir}: checkpoints/ (resumed from), metrics.jsonl, tensorboard/, "
        f"config.json; test_metrics.json at the end; report.html from "
        f"`python run.py --mode=evaluate --workdir {workdir}`"
    )


def final_line(test: Mapping[str, Any], best: int | None, best_metric: str, workdir: str) -> str:
    """The run's last line: the test figures, the weights they come from (the final ones, the
    latest checkpoint) and, when validation picked another step as best, how to test that."""
    line = (
        f"test: accuracy {test['accuracy']:.4f}  top5 {test['top5_accuracy']:.4f}  "
        f"loss {test['loss']:.4f}  ({test['num_examples']} examples; "
        f"{test['checkpoint']} checkpoint, step {test['step']})"
    )
    if best is not None and best != test["step"]:
        line += (
            f"\nthe best checkpoint by {best_metric} is step {best}; its test figures: "
            f"python run.py --mode=evaluate --workdir {workdir}"
        )
    return line
