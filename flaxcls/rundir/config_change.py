"""Resuming a run with another config: refused with the fields that differ, or, with
`allow_config_change=True`, recorded in WORKDIR/config_history.jsonl.

Fields that cannot change the parameters a run ends with may change freely (`FREE_FIELDS`), and
so may fields that the run's config.json lacks (written before they existed) or the new config
lacks.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from flaxcls.errors import ConfigError
from flaxcls.rundir import files

HISTORY_FILE = "config_history.jsonl"

# How a run is watched and kept, not what it learns.
FREE_FIELDS = frozenset(
    {
        "allow_config_change",
        "progress_bar",
        "log_every_steps",
        "profile_steps",
        "compilation_cache_dir",
        "keep_checkpoints",
        "checkpoint_every_steps",
        "on_save_error",
        "steps_per_dispatch",  # the same parameters bit for bit (tests/test_distributed.py)
    }
)


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}." if isinstance(value, dict) else prefix + key))
    return out


def config_changes(old: dict, new: dict) -> dict[str, tuple[Any, Any]]:
    """Dotted field -> (old, new) for the fields both configs hold that differ."""
    a, b = _flat(old), _flat(new)
    return {
        k: (a[k], b[k])
        for k in sorted(a.keys() & b.keys())
        if k not in FREE_FIELDS and a[k] != b[k]
    }


def check_config_change(workdir: str, new: dict, allow: bool, record: bool = True) -> None:
    """Refuses (ConfigError) to resume the checkpointed run in `workdir` with a config whose
    JSON form `new` differs from its config.json, unless `allow`: then the change is appended
    to config_history.jsonl where `record` (by the main process only; every process checks,
    so that all of them stop together where they share the workdir)."""
    path = os.path.join(workdir, files.CONFIG_FILE)
    ckpt = files.checkpoint_dir(workdir)
    if not os.path.isfile(path) or not os.path.isdir(ckpt):
        return
    if not any(name.isdigit() for name in os.listdir(ckpt)):
        return  # no checkpoint: the run starts afresh
    with open(path, encoding="utf-8") as f:
        old = json.load(f)
    changes = config_changes(old, new)
    if not changes:
        return
    listed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items())
    if not allow:
        raise ConfigError(
            f"--workdir {workdir} holds a run trained with another config ({listed}). Use a new "
            "--workdir for the new config, or resume with the change and record it in "
            f"{HISTORY_FILE}: --config.allow_config_change=True."
        )
    if not record:
        return
    entry = {"time": time.time(), "changes": {k: [a, b] for k, (a, b) in changes.items()}}
    with open(os.path.join(workdir, HISTORY_FILE), "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")
    print(f"config changed on resuming ({listed}); recorded in {HISTORY_FILE}", flush=True)
