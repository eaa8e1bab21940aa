"""train_and_evaluate(config, workdir, callbacks=[...]): hooks at log, validation and checkpoint."""

from __future__ import annotations

import os

import pytest

from flaxcls.modes import train as train_lib
from flaxcls.modes.callbacks import Callback
from flaxcls.rundir import files
from flaxcls.rundir.checkpoint import Checkpointer
from flaxcls.rundir.report import read_metrics_log
from flaxcls.testing.killing import finished_steps
from flaxcls.testing.toy import tiny_config, write_npz


class Recorder(Callback):
    def __init__(self):
        self.logs, self.evals, self.checkpoints = [], [], []

    def on_log(self, step, metrics):
        self.logs.append((step, metrics))

    def on_eval(self, step, metrics):
        self.evals.append((step, metrics))

    def on_checkpoint(self, step, path):
        self.checkpoints.append((step, path))


def test_callbacks_see_the_metrics_of_metrics_jsonl_and_the_checkpoints(tmp_path):
    config = tiny_config(write_npz(str(tmp_path)))
    workdir = str(tmp_path / "run")
    recorder = Recorder()
    partial = type("OnlyLog", (), {"on_log": lambda self, step, m: None})()  # any object will do
    train_lib.train_and_evaluate(config, workdir, callbacks=[recorder, partial])
    records = read_metrics_log(workdir)
    train = [r for r in records if "train_loss" in r]
    val = [r for r in records if "val_loss" in r]
    assert [step for step, _ in recorder.logs] == [r["step"] for r in train] != []
    assert [step for step, _ in recorder.evals] == [r["step"] for r in val] != []
    for (_, got), record in zip(recorder.logs + recorder.evals, train + val, strict=True):
        assert all(type(v) is float for v in got.values())
        assert got == pytest.approx({k: record[k] for k in got})
    saved = [step for step, _ in recorder.checkpoints]
    assert saved == [step for step, _ in recorder.evals]  # tiny_config saves at validations
    kept = finished_steps(workdir)  # keep_checkpoints removes the oldest
    assert kept and saved[-len(kept) :] == kept
    assert all(os.path.isdir(path) for step, path in recorder.checkpoints if step in kept)


def test_a_callback_that_raises_stops_the_run_and_keeps_the_last_checkpoint(tmp_path):
    class Fails(Callback):
        def on_eval(self, step, metrics):
            if step > 4:
                raise RuntimeError(f"my hook failed at {step}")

    config = tiny_config(write_npz(str(tmp_path)))
    workdir = str(tmp_path / "run")
    with pytest.raises(RuntimeError, match="my hook failed at"):
        train_lib.train_and_evaluate(config, workdir, callbacks=[Fails()])
    assert finished_steps(workdir) and max(finished_steps(workdir)) <= 4
    assert not os.path.exists(os.path.join(workdir, files.TEST_METRICS_FILE))
    checkpointer = Checkpointer(files.checkpoint_dir(workdir))
    step = checkpointer.latest_step()
    assert step is not None and checkpointer.verify(step) is None
    checkpointer.close()
