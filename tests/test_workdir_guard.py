"""Nothing lost between runs of one workdir: one training run at a time, a resume with another
config refused unless asked for (and then recorded), and Ctrl-C stopping with a checkpoint."""

import fcntl
import json
import os
import signal

import pytest

from flaxcls.errors import ConfigError
from flaxcls.modes import train as train_lib
from flaxcls.rundir import config_change, lock
from flaxcls.rundir.preemption import Preempted, PreemptionWatcher
from flaxcls.testing.toy import tiny_config, write_npz


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    return write_npz(str(tmp_path_factory.mktemp("data")))


def test_a_workdir_being_trained_refuses_a_second_run(tmp_path, npz):
    workdir = tmp_path / "run"
    workdir.mkdir()
    holder = {"pid": 4242, "host": "node7", "since": 0.0, "command": "run.py --workdir=run"}
    # Another process's lock: a descriptor of its own (flock locks are per open file).
    with open(workdir / lock.LOCK_FILE, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        f.write(json.dumps(holder))
        f.flush()
        with pytest.raises(ConfigError) as e:
            train_lib.train_and_evaluate(tiny_config(npz, num_train_steps=2), str(workdir))
        message = str(e.value)
        assert "\n" not in message
        assert "being trained by another run: pid 4242 on node7" in message
        assert "1970-01-01 00:00:00 UTC" in message and "use another --workdir" in message
        assert not (workdir / "checkpoints").exists()  # nothing of the second run written
    # released (its holder ended): training goes on, and leaves the lock free behind it
    train_lib.train_and_evaluate(tiny_config(npz, num_train_steps=2), str(workdir))
    with open(workdir / lock.LOCK_FILE) as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_the_lock_names_its_holder_and_is_reentrant_in_one_process(tmp_path):
    held = lock.acquire(str(tmp_path))
    try:
        assert lock.acquire(str(tmp_path)) is held
        assert f"pid {os.getpid()} on " in lock.holder(held.path)
    finally:
        held.release()
    assert lock.holder(held.path) == "another process"  # emptied on release


def test_resuming_with_another_config_is_refused_unless_allowed(tmp_path, npz):
    workdir = str(tmp_path / "run")
    train_lib.train_and_evaluate(tiny_config(npz, num_train_steps=4), workdir)
    # fields that cannot change the result may change freely
    train_lib.train_and_evaluate(tiny_config(npz, num_train_steps=4, log_every_steps=1), workdir)
    changed = {"num_train_steps": 6, "optimizer.learning_rate": 0.05}
    with pytest.raises(ConfigError) as e:
        train_lib.train_and_evaluate(tiny_config(npz, **changed), workdir)
    message = str(e.value)
    assert "num_train_steps: 4 -> 6" in message and "optimizer.learning_rate: " in message
    assert "--config.allow_config_change=True" in message and "new --workdir" in message
    assert "\n" not in message
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["num_train_steps"] == 4  # the run's config is kept

    test = train_lib.train_and_evaluate(
        tiny_config(npz, allow_config_change=True, **changed), workdir
    )
    assert test["step"] == 6
    with open(os.path.join(workdir, config_change.HISTORY_FILE)) as f:
        (record,) = [json.loads(line) for line in f]
    assert record["changes"]["num_train_steps"] == [4, 6]
    assert set(record["changes"]) == {"num_train_steps", "optimizer.learning_rate"}
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["num_train_steps"] == 6


def test_fields_an_older_run_lacks_are_no_change():
    old = {"a": 1, "m": {"x": 1}, "progress_bar": True}
    new = {"a": 1, "m": {"x": 2, "y": 3}, "progress_bar": False, "allow_config_change": True}
    assert config_change.config_changes(old, new) == {"m.x": (1, 2)}


def test_ctrl_c_saves_a_checkpoint_and_stops(tmp_path, npz, monkeypatch):
    workdir = str(tmp_path / "run")
    next_block = train_lib.next_block
    calls = []

    def ctrl_c_at_the_third_call(batches, n):
        calls.append(n)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)  # the handler runs before this returns
        return next_block(batches, n)

    monkeypatch.setattr(train_lib, "next_block", ctrl_c_at_the_third_call)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(Preempted) as e:
        train_lib.train_and_evaluate(tiny_config(npz, num_train_steps=12), workdir)
    assert e.value.signal_name == "SIGINT" and e.value.step == 3
    assert str(e.value).startswith("stopped by SIGINT (Ctrl-C) at step 3;")
    assert "3" in os.listdir(os.path.join(workdir, "checkpoints"))
    assert signal.getsignal(signal.SIGINT) is before  # Ctrl-C is the caller's again

    monkeypatch.setattr(train_lib, "next_block", next_block)
    assert train_lib.train_and_evaluate(tiny_config(npz, num_train_steps=12), workdir)["step"] == 12


def test_a_second_ctrl_c_stops_at_once():
    watcher = PreemptionWatcher()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert watcher.reached(1) and watcher.signal_name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        watcher.close()
