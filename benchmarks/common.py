"""What every benchmark records besides its figures: the machine, the versions, a JSON file."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
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
