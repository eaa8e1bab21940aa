"""Image classifiers by name: `get_model(name, num_classes=...)`; `MODELS` lists them, and
`@register_model("name")` adds your own.
`from_nnx(MyNNXModule, ...)` makes a Flax NNX module a flaxcls model; `to_nnx(state, module)` puts
its trained weights back into an NNX module."""

from typing import Any

from flaxcls.models.registry import MODELS, get_model, register_model

__all__ = ["MODELS", "from_nnx", "get_model", "register_model", "to_nnx"]


def __getattr__(name: str) -> Any:
    if name in ("from_nnx", "to_nnx"):  # flax.nnx is imported only where it is used
        from flaxcls.models import nnx

        return getattr(nnx, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
