"""Image classifiers by name: `get_model(name, num_classes=...)`; `MODELS` lists them, and
`@register_model("name")` adds your own.
`from_nnx(MyNNXModule, ...)` makes a Flax NNX module a flaxcls model."""

from typing import Any

from flaxcls.models.registry import MODELS, get_model, register_model

__all__ = ["MODELS", "from_nnx", "get_model", "register_model"]


def __getattr__(name: str) -> Any:
    if name == "from_nnx":  # flax.nnx is imported only where it is used
        from flaxcls.models.nnx import from_nnx

        return from_nnx
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
