"""One training run per workdir: `WORKDIR/.lock`, held with `fcntl.flock` while a run trains.

The kernel releases a flock when its holder's file is closed, also when the process dies (a
kill, an OOM, a lost node), so a lock is never stale. The holder writes its pid, host, start
time and command into the file, for the message a second run gets. Evaluation, export and
prediction only read a run and take no lock.

A process that holds the lock of a workdir takes it again at once (a notebook or a test may
train one workdir twice); the lock belongs to the process, not to a thread.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
import warnings

from flaxcls.errors import ConfigError

LOCK_FILE = ".lock"

_held: dict[str, WorkdirLock] = {}  # real path of the workdir -> the lock this process holds


class WorkdirBusy(ConfigError):
    """Another process trains the workdir now."""


class WorkdirLock:
    def __init__(self, path: str, fd: int):
        self.path, self.fd = path, fd

    def release(self) -> None:
        if self.fd < 0:
            return
        _held.pop(os.path.dirname(self.path), None)
        try:
            os.ftruncate(self.fd, 0)
        except OSError:
            pass
        os.close(self.fd)  # closing the only descriptor releases the flock
        self.fd = -1


def holder(path: str) -> str:
    """Who holds the lock file at `path`, as the holder wrote it, in words."""
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(info["since"]))
        return f"pid {info['pid']} on {info['host']}, training since {since} ({info['command']})"
    except (OSError, ValueError, KeyError, TypeError):  # being written, or not ours
        return "another process"


def acquire(workdir: str) -> WorkdirLock | None:
    """The lock of `workdir`, or `WorkdirBusy` naming its holder. None where the file system
    has no locks (some network file systems): a warning, and training goes on unguarded."""
    key = os.path.realpath(workdir)
    if key in _held:
        return _held[key]
    path = os.path.join(key, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise WorkdirBusy(
                f"--workdir {workdir} is being trained by another run: {holder(path)}. Wait for "
                "it to finish or stop it (it saves a checkpoint on SIGTERM), then run this "
                "command again to resume; or use another --workdir."
            ) from None
        message = f"cannot lock {path} ({e}); a second run on this workdir is not stopped"
        warnings.warn(message, stacklevel=2)
        return None
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.time(),
        "command": " ".join(sys.argv) or sys.executable,
    }
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(info).encode())
    lock = _held[key] = WorkdirLock(path, fd)
    return lock


def remove_if_alone(workdir: str) -> None:
    """Releases this process's lock of `workdir` and removes the lock file when it is all the
    workdir holds: a run that failed before writing anything leaves no workdir behind."""
    key = os.path.realpath(workdir)
    try:
        if os.listdir(key) != [LOCK_FILE]:
            return
    except OSError:
        return
    if key in _held:
        _held[key].release()
    try:
        os.remove(os.path.join(key, LOCK_FILE))
    except OSError:
        pass
