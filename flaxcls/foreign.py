"""Weights from PyTorch: a torchvision-layout ResNet `state_dict` into a flaxcls ResNet.

Files are read without unpickling arbitrary objects: `.safetensors` through safetensors, and
`torch.save` files (`.pt`, `.pth`, `.bin`) through `torch.load(weights_only=True)`, which
accepts tensors and plain containers only.
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Any

import numpy as np
from flax import traverse_util

from flaxcls.errors import ConfigError

TORCH_EXTENSIONS = (".pt", ".pth", ".bin")
WEIGHT_EXTENSIONS = (".safetensors", *TORCH_EXTENSIONS)

# torchvision name -> flaxcls module path (see flaxcls/models/resnet.py)
_MODULES = [
    (r"^conv1$", "stem_conv"),
    (r"^bn1$", "stem_bn"),
    (r"^layer(\d+)\.(\d+)\.downsample\.0$", r"stage\1_block\2/proj_conv"),
    (r"^layer(\d+)\.(\d+)\.downsample\.1$", r"stage\1_block\2/proj_bn"),
    (r"^layer(\d+)\.(\d+)\.(conv|bn)(\d+)$", r"stage\1_block\2/\3\4"),
    (r"^fc$", "head"),
]
# torch parameter -> (flax collection, flax name)
_LEAVES = {
    "weight": None,  # kernel or scale, by the module kind
    "bias": ("params", "bias"),
    "running_mean": ("batch_stats", "mean"),
    "running_var": ("batch_stats", "var"),
}


# How torch's weights-only unpickler names the first object it refused.
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def is_weight_file(path: str) -> bool:
    return os.path.isfile(path) and path.endswith(WEIGHT_EXTENSIONS)


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """name -> float32 array from a .safetensors file or a `torch.save`d state_dict."""
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file

        return {k: np.asarray(v, np.float32) for k, v in load_file(path).items()}
    try:
        import torch
    except ImportError:
        raise ConfigError(
            f"{path} is a torch.save file: `pip install torch` to read it, or convert it to "
            ".safetensors."
        ) from None
    try:
        with warnings.catch_warnings():  # a plain pickle's protocol warning precedes our error
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch's unpickler errors come in many types
        raise ConfigError(torch_load_refusal(path, e)) from None
    if isinstance(loaded, dict) and "state_dict" in loaded:
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path} holds a {type(loaded).__name__}, not a state_dict.")
    return {
        k.removeprefix("module."): v.detach().float().numpy()
        for k, v in loaded.items()
        if hasattr(v, "numpy")
    }


def torch_load_refusal(path: str, error: Exception) -> str:
    """One line for a failed `torch.load(weights_only=True)`. PyTorch's own message advises
    loading again with weights_only=False, which runs whatever code the file pickled: never
    repeat that advice, say what a loadable file is instead."""
    text = str(error)
    if text.startswith("Weights only load failed"):
        found = _REFUSED_GLOBAL.search(text)
        objects = (
            f"pickled Python objects, such as {found.group(1)}" if found else "pickled objects"
        )
        return (
            f"{path} holds more than tensors ({objects}), and torch.load with "
            "weights_only=True refused to unpickle them. Save a plain state_dict instead: "
            "torch.save(model.state_dict(), path)."
        )
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{path} is not a torch.save file of tensors ({type(error).__name__}: {first})."


def _flax_path(torch_name: str) -> tuple[str, str] | None:
    module, _, leaf = torch_name.rpartition(".")
    for pattern, replacement in _MODULES:
        if re.match(pattern, module):
            return re.sub(pattern, replacement, module), leaf
    return None


def _convert(module_path: str, leaf: str, value: np.ndarray) -> tuple[str, str, np.ndarray]:
    if leaf == "weight":
        if value.ndim == 4:  # conv OIHW -> HWIO
            return "params", "kernel", value.transpose(2, 3, 1, 0)
        if value.ndim == 2:  # linear (out, in) -> (in, out)
            return "params", "kernel", value.T
        return "params", "scale", value  # BatchNorm
    collection, name = _LEAVES[leaf]
    return collection, name, value


def resnet_variables_from_torch(
    state_dict: dict[str, np.ndarray], template: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """`template` ({'params', 'batch_stats'} of a flaxcls ResNet) filled from a torchvision
    ResNet state_dict. Returns the variables and the flax paths that had no counterpart (left
    as in `template`, e.g. a head of another size). Unknown torch names or shape mismatches
    outside the head are errors."""
    flat = {
        collection: traverse_util.flatten_dict(template.get(collection, {}), sep="/")
        for collection in ("params", "batch_stats")
    }
    unknown, mismatched, filled = [], [], set()
    for name, value in state_dict.items():
        if name.endswith("num_batches_tracked"):
            continue
        found = _flax_path(name)
        if found is None or found[1] not in _LEAVES:
            unknown.append(name)
            continue
        collection, leaf, converted = _convert(found[0], found[1], value)
        path = f"{found[0]}/{leaf}"
        if path not in flat[collection]:
            unknown.append(name)
            continue
        target = flat[collection][path]
        if tuple(target.shape) != converted.shape:
            mismatched.append(f"{name} {value.shape} -> {path} {tuple(target.shape)}")
            continue
        flat[collection][path] = converted.astype(np.float32)
        filled.add((collection, path))
    problems = [m for m in mismatched if not m.startswith("fc.")]
    if unknown or problems:
        raise ConfigError(
            "these weights do not fit this ResNet: "
            + "; ".join(
                ([f"unknown names {unknown[:10]}"] if unknown else [])
                + ([f"shape mismatches {problems[:10]}"] if problems else [])
            )
        )
    missing = [
        f"{collection}/{path}"
        for collection, leaves in flat.items()
        for path in leaves
        if (collection, path) not in filled
    ]
    variables = {c: traverse_util.unflatten_dict(leaves, sep="/") for c, leaves in flat.items()}
    return variables, missing
