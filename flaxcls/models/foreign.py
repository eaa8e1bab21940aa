"""Weights from PyTorch: torchvision ResNet, timm ViT and torchvision ViT `state_dict`s into
the flaxcls ResNet and ViT.

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

# torch module name -> flaxcls module path, for every layout read here; the model's own
# variables decide which apply (the layouts share no names).
_MODULES = [
    # torchvision ResNet (flaxcls/models/resnet.py)
    (r"^conv1$", "stem_conv"),
    (r"^bn1$", "stem_bn"),
    (r"^layer(\d+)\.(\d+)\.downsample\.0$", r"stage\1_block\2/proj_conv"),
    (r"^layer(\d+)\.(\d+)\.downsample\.1$", r"stage\1_block\2/proj_bn"),
    (r"^layer(\d+)\.(\d+)\.(conv|bn)(\d+)$", r"stage\1_block\2/\3\4"),
    (r"^fc$", "head"),
    # timm VisionTransformer (flaxcls/models/vit.py keeps its names)
    (r"^patch_embed\.proj$", "patch_embed"),
    (r"^blocks\.(\d+)\.(norm1|norm2)$", r"blocks_\1/\2"),
    (r"^blocks\.(\d+)\.attn\.(qkv|proj)$", r"blocks_\1/attn/\2"),
    (r"^blocks\.(\d+)\.mlp\.(fc1|fc2)$", r"blocks_\1/mlp/\2"),
    (r"^norm$", "norm"),
    (r"^head$", "head"),
    # torchvision VisionTransformer; its MLP is `mlp.0`/`mlp.3` (`linear_1`/`linear_2` before
    # torchvision 0.13) and its attention torch's nn.MultiheadAttention
    (r"^conv_proj$", "patch_embed"),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.ln_1$", r"blocks_\1/norm1"),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.ln_2$", r"blocks_\1/norm2"),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.self_attention\.in_proj$", r"blocks_\1/attn/qkv"),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.self_attention\.out_proj$", r"blocks_\1/attn/proj"),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.mlp\.(?:0|linear_1)$", r"blocks_\1/mlp/fc1"),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.mlp\.(?:3|linear_2)$", r"blocks_\1/mlp/fc2"),
    (r"^encoder\.ln$", "norm"),
    (r"^heads\.head$", "head"),
]
# torch parameters that belong to no submodule -> flaxcls parameter path (same layout)
_PARAMETERS = {
    "cls_token": "cls_token",  # timm
    "pos_embed": "pos_embed",
    "class_token": "cls_token",  # torchvision
    "encoder.pos_embedding": "pos_embed",
}
# torch parameter -> (flax collection, flax name)
_LEAVES = {
    "weight": None,  # kernel or scale, by the module kind
    "bias": ("params", "bias"),
    "running_mean": ("batch_stats", "mean"),
    "running_var": ("batch_stats", "var"),
}
# nn.MultiheadAttention's fused q/k/v projection: `in_proj_weight` and `in_proj_bias`
_FUSED_LEAF = re.compile(r"^(.*\.in_proj)_(weight|bias)$")
HEAD = "head"


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


def _flax_path(torch_name: str) -> tuple[str, str | None] | None:
    """(flax module path, torch leaf) for a torch name; the leaf is None for a parameter
    outside any module (e.g. a class token), whose path is then the whole flax path."""
    if torch_name in _PARAMETERS:
        return _PARAMETERS[torch_name], None
    fused = _FUSED_LEAF.match(torch_name)
    module, leaf = fused.groups() if fused else torch_name.rpartition(".")[::2]
    for pattern, replacement in _MODULES:
        if re.match(pattern, module):
            return re.sub(pattern, replacement, module), leaf
    return None


def is_head(torch_name: str) -> bool:
    """Whether a torch name is a classifier weight (fc, head, heads.head) of a layout read here."""
    found = _flax_path(torch_name)
    return found is not None and found[0].split("/")[0] == HEAD


def without_head(state_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for k, v in state_dict.items() if not is_head(k)}


def _convert(leaf: str, value: np.ndarray) -> tuple[str, str, np.ndarray]:
    if leaf == "weight":
        if value.ndim == 4:  # conv OIHW -> HWIO
            return "params", "kernel", value.transpose(2, 3, 1, 0)
        if value.ndim == 2:  # linear (out, in) -> (in, out)
            return "params", "kernel", value.T
        return "params", "scale", value  # BatchNorm, LayerNorm
    collection, name = _LEAVES[leaf]
    return collection, name, value


def variables_from_torch(
    state_dict: dict[str, np.ndarray], template: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """`template` ({'params', 'batch_stats'} of a flaxcls ResNet or ViT) filled from a
    torchvision ResNet, timm ViT or torchvision ViT state_dict. Returns the variables and the
    flax paths that had no counterpart (left as in `template`, e.g. a head of another size).
    Unknown torch names or shape mismatches outside the head are errors."""
    flat = {
        collection: traverse_util.flatten_dict(template.get(collection, {}), sep="/")
        for collection in ("params", "batch_stats")
    }
    unknown, mismatched, filled = [], [], set()
    for name, value in state_dict.items():
        if name.endswith("num_batches_tracked"):
            continue
        found = _flax_path(name)
        if found is None or (found[1] is not None and found[1] not in _LEAVES):
            unknown.append(name)
            continue
        if found[1] is None:  # a bare parameter, stored in the same layout
            collection, path, converted = "params", found[0], value
        else:
            collection, leaf, converted = _convert(found[1], value)
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
    problems = [m for m in mismatched if not is_head(m.split()[0])]
    if unknown or problems:
        raise ConfigError(
            "these weights do not fit this model: "
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
