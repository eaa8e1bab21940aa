"""Image classifiers by name: `get_model(name, num_classes=...)`; `MODELS` lists them."""

from flaxcls.models.registry import MODELS, get_model

__all__ = ["MODELS", "get_model"]
