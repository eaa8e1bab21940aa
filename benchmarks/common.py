"""What every benchmark records besides its figures: the machine, the versions, a JSON file."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
from typing import Any


def cpu_model() -> str:
    """platform.processor() is often empty on Linux; /proc/cpuinfo names the CPU there."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
    }


def versions(packages: tuple[str, ...]) -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in packages:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            # tensorflow-cpu installs the `tensorflow` module under another distribution name.
            try:
                found[package] = importlib.metadata.version(f"{package}-cpu")
            except importlib.metadata.PackageNotFoundError:
                found[package] = "not installed"
    return found


def write_json(path: str, obj: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def run_child(script: str, framework: str, args: list[str]) -> dict[str, Any]:
    """Runs `script --only FRAMEWORK ARGS --json-out FILE` in a fresh interpreter (each
    framework gets a process of its own: no shared threads or allocators) and returns the
    figures it wrote."""
    with tempfile.TemporaryDirectory(prefix=f"{framework}_") as tmp:
        out = os.path.join(tmp, f"{framework}.json")
        command = [sys.executable, os.path.abspath(script), "--only", framework, *args]
        command += ["--json-out", out]
        print(f"== {framework}: {' '.join(command)}", flush=True)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        subprocess.run(command, check=True, env=env)
        with open(out, encoding="utf-8") as f:
            return json.load(f)
