"""The loop's own state travels in the checkpoint: a run resumed after a crash stops early at
the same step, keeps the same best checkpoint and counts the same skipped steps as one that
was never interrupted."""

import json
import os

import pytest

from flaxcls.modes import train as train_lib
from flaxcls.rundir.checkpoint import Checkpointer
from flaxcls.testing.toy import restored_state, tiny_config, write_npz
from tests.helpers import assert_same_params, crash_after, poison_when_first_label_is_zero

SETTINGS = {
    "nonfinite": "skip",  # some steps are poisoned: the skip count must carry over
    "num_train_steps": 80,
    "early_stopping_patience": 3,
    "best_metric": "val_loss",
    "optimizer.learning_rate": 3e-3,
    "keep_checkpoints": 2,
}


def _summary(workdir):
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), best_metric="val_loss")
    try:
        latest = checkpointer.latest_step()
        loop = checkpointer.restore(restored_state(workdir, _summary.config), latest).loop
        kept = sorted(checkpointer.manager.all_steps())
        best = checkpointer.best_step()
    finally:
        checkpointer.close()
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        skips = [json.loads(line)["skipped_steps"] for line in f if "skipped_steps" in line]
    return {"latest": latest, "kept": kept, "best": best, "loop": loop, "skips": skips[-1]}


def test_resume_stops_early_keeps_the_best_and_counts_skips_as_uninterrupted(tmp_path, monkeypatch):
    poison_when_first_label_is_zero(monkeypatch)
    config = tiny_config(write_npz(str(tmp_path)), **SETTINGS)
    _summary.config = config
    straight = str(tmp_path / "straight")
    train_lib.train_and_evaluate(config, straight)
    expected = _summary(straight)
    assert expected["loop"]["stopped_early"] and expected["latest"] < 80
    assert expected["loop"]["validations_without_gain"] == 3 and expected["skips"] > 0

    interrupted = str(tmp_path / "interrupted")
    with monkeypatch.context() as m:
        crash_after(expected["latest"] - 5, m)  # after a validation without gain
        with pytest.raises(KeyboardInterrupt):
            train_lib.train_and_evaluate(config, interrupted)
    checkpointer = Checkpointer(os.path.join(interrupted, "checkpoints"))
    crashed_at = checkpointer.latest_step()
    checkpointer.close()
    assert 0 < crashed_at < expected["latest"]
    train_lib.train_and_evaluate(config, interrupted)  # resumes
    assert _summary(interrupted) == expected
    assert_same_params(restored_state(interrupted, config), restored_state(straight, config))

    train_lib.train_and_evaluate(config, interrupted)  # a stopped run stays stopped
    assert _summary(interrupted) == expected
    assert not os.path.exists(os.path.join(interrupted, "early_stopped.json"))
