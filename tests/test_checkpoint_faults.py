"""Checkpoints that heal: damaged steps are moved aside and saved afresh, every mode falls back
to the newest intact step, a failed restore leaves nothing behind, and unwritable places or a
full disk stop in one line naming the checkpoint kept."""

import errno
import logging
import os
import re
import subprocess
import tempfile
import uuid

import pytest

from flaxcls.errors import ConfigError
from flaxcls.modes import build as runs
from flaxcls.modes import train as train_lib
from flaxcls.rundir import checkpoint as checkpoint_lib
from flaxcls.rundir.checkpoint import Checkpointer, CheckpointError
from flaxcls.testing.killing import finished_steps
from flaxcls.testing.launch import run_py_once, write_config
from flaxcls.testing.toy import restored_state, tiny_config, write_npz
from tests.helpers import LONG, assert_same_params, largest_file, trained_run


def _truncate(path):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


def test_damaged_newest_step_is_quarantined_and_saved_afresh(tmp_path, capsys):
    config, workdir = trained_run(tmp_path)
    original = restored_state(workdir, config, step=20)
    _truncate(largest_file(os.path.join(workdir, "checkpoints", "20")))
    capsys.readouterr()
    train_lib.train_and_evaluate(config, workdir)  # the same command again
    out = capsys.readouterr().out
    assert "Restored step 15 instead" in out and "resuming from step 15" in out
    quarantined = os.path.join(workdir, "checkpoints", "quarantine", "20")
    assert os.path.isdir(quarantined), "the damaged step is kept for inspection"
    assert "bytes" in open(quarantined + ".reason.txt").read()
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"))
    assert checkpointer.verify(20) is None and os.path.isfile(checkpointer._manifest_path(20))
    checkpointer.close()
    assert_same_params(restored_state(workdir, config, step=20), original)  # redone and saved again


@pytest.mark.parametrize("which", ["best", "latest"])
def test_every_mode_falls_back_to_the_newest_intact_step(tmp_path, capsys, which):
    config, workdir = trained_run(tmp_path, eval_every_epochs=1.0)  # validates: a best step exists
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"))
    damaged = checkpointer.best_step() if which == "best" else checkpointer.latest_step()
    intact = sorted(s for s in checkpointer.manager.all_steps() if s != damaged)[-1]
    checkpointer.close()
    _truncate(largest_file(os.path.join(workdir, "checkpoints", str(damaged))))
    capsys.readouterr()
    run = runs.load_run(workdir, which)  # evaluate, export, predict and init_from start here
    assert run.step == intact
    assert f"step {damaged} (" in capsys.readouterr().out
    assert runs.load_run(workdir, which).step == intact  # and again, now without a warning


def test_a_failed_restore_does_not_poison_the_next(tmp_path, capsys):
    config, workdir = trained_run(tmp_path)
    newest = os.path.join(workdir, "checkpoints", "20")
    for root, _, names in os.walk(newest):
        for name in names:
            os.remove(os.path.join(root, name))
    os.remove(os.path.join(workdir, "checkpoints", "checksums", "20.json"))
    assert int(restored_state(workdir, config).step) == 15
    assert "Restored step 15 instead" in capsys.readouterr().out


def test_a_corrupt_manifest_is_one_warning_and_a_fallback(tmp_path, capsys):
    config, workdir = trained_run(tmp_path)
    with open(os.path.join(workdir, "checkpoints", "checksums", "20.json"), "w") as f:
        f.write('{"ocdbt.process_0/manifest.ocdbt": [12, "ab')
    assert int(restored_state(workdir, config).step) == 15
    assert "checksums/20.json is unreadable" in capsys.readouterr().out


def _refuse_writes_under(directory, monkeypatch):
    real = tempfile.NamedTemporaryFile

    def refusing(*args, dir=None, **kwargs):
        if dir is not None and os.path.abspath(dir).startswith(os.path.abspath(directory)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), dir)
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refusing)


def test_unwritable_checkpoints_stop_before_training_naming_the_kept_step(tmp_path, monkeypatch):
    config, workdir = trained_run(tmp_path)
    config.num_train_steps = 40
    config.allow_config_change = True  # a longer run on the same workdir
    _refuse_writes_under(os.path.join(workdir, "checkpoints"), monkeypatch)
    with pytest.raises(CheckpointError, match="Read-only file system.*step 20 is kept as it is"):
        train_lib.train_and_evaluate(config, workdir)
    assert finished_steps(workdir)[-1] == 20


def test_unwritable_workdir_is_a_config_error(tmp_path, monkeypatch):
    _refuse_writes_under(str(tmp_path / "run"), monkeypatch)
    with pytest.raises(ConfigError, match="--workdir .* cannot be written"):
        train_lib.train_and_evaluate(tiny_config(write_npz(str(tmp_path))), str(tmp_path / "run"))


def test_orbax_writer_tracebacks_are_left_to_the_one_line_report():
    keep = checkpoint_lib._OrbaxFailuresReportedOnce()

    def record(level, path, message):
        return logging.LogRecord("absl", level, path, 1, message, None, None)

    orbax_file = os.path.join("site-packages", "orbax", "checkpoint", "future.py")
    assert not keep.filter(record(logging.ERROR, orbax_file, "_SignalingThread.run() raised"))
    assert keep.filter(record(logging.ERROR, os.path.join("jax", "x.py"), "another library's"))
    assert keep.filter(record(logging.WARNING, orbax_file, "a warning about something else"))


def _mount_tmpfs(path, options):
    os.makedirs(path, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, f"flaxcls-{uuid.uuid4().hex[:6]}", path],
        capture_output=True,
    )
    if result.returncode != 0:
        pytest.skip("mounting a small file system needs root and mount rights")
    return path


@pytest.fixture
def mounts():
    mounted = []
    yield lambda path, options: mounted.append(_mount_tmpfs(path, options)) or path
    for path in mounted:
        subprocess.run(["umount", path], capture_output=True)


@pytest.mark.parametrize("place", ["full disk", "read-only checkpoints", "read-only workdir"])
def test_real_unwritable_places_are_one_line(tmp_path, mounts, place):
    """A real 2 MB file system (one checkpoint fits, two do not) and real read-only mounts,
    through run.py as a user runs it."""
    config = write_config(
        str(tmp_path), write_npz(str(tmp_path)), **{**LONG, "num_train_steps": 20}
    )
    if place == "full disk":
        workdir = mounts(str(tmp_path / "small"), "size=2m") + "/run"
    elif place == "read-only checkpoints":
        workdir = str(tmp_path / "run")
        mounts(os.path.join(workdir, "checkpoints"), "ro")
    else:
        workdir = mounts(str(tmp_path / "ro"), "ro")
    result = run_py_once(config, workdir)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    expected = {
        "full disk": r"No space left on device\); step \d+ is intact",
        "read-only checkpoints": r"Read-only file system\); none is saved",
        "read-only workdir": r"--workdir .* cannot be written \(Read-only file system\)",
    }[place]
    assert re.search(expected, errors[0]), errors[0]
    assert len(result.stderr.splitlines()) < 10, result.stderr[-3000:]
