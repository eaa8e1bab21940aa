"""Model names -> constructors; `get_model` builds one with the library-wide arguments;
`register_model` adds your own, and `model_source` / `import_model` let a finished run find it
again in a fresh process."""

import functools
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from flaxcls.errors import ConfigError
from flaxcls.models import cnn, fast_cnn, inception, mlp, resnet, speedrun, vit, wide_resnet

# Every constructor takes num_classes, dtype (compute dtype; parameters stay float32) and
# dropout_rate, and its module is called as `model(images, train=...)` on float32 NHWC images.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp.MLP,  # one hidden layer of 128
    "seed_cnn": cnn.SeedCNN,
    "fast_cnn": fast_cnn.FastCNN,  # airbench94 widths, for 32x32 inputs
    "fast_cnn_small": functools.partial(  # narrower, for 28x28 images on CPUs
        fast_cnn.FastCNN, widths=(32, 64, 128), stem_width=16, stem_kernel=3
    ),
    "speedrun_cnn": speedrun.SpeedrunCNN,  # airbench94's network, layer for layer
    "resnet18": resnet.ResNet18,
    "resnet34": resnet.ResNet34,
    "resnet50": resnet.ResNet50,
    "resnet101": resnet.ResNet101,
    "resnet152": resnet.ResNet152,
    "cifar_resnet20": resnet.CifarResNet20,
    "cifar_resnet56": resnet.CifarResNet56,
    "cifar_resnet18": resnet.CifarResNet18,
    "wide_resnet28_10": wide_resnet.WideResNet28_10,
    "wide_resnet16_8": wide_resnet.WideResNet16_8,
    "inception_v3": inception.InceptionV3,
    "inception_small": inception.InceptionSmall,
    "vit_ti16": vit.ViT_Ti16,  # DeiT-Ti, 224 px
    "vit_s16": vit.ViT_S16,  # DeiT-S
    "vit_b16": vit.ViT_B16,  # DeiT-B / ViT-B/16
    "vit_cifar": vit.ViT_Cifar,  # patch 4, for 32x32 images
}
BUILT_IN = dict(MODELS)  # flaxcls's own, which a run needs not record the source of


# What `get_model` passes every constructor.
LIBRARY_ARGUMENTS = ("num_classes", "dtype", "dropout_rate", "axis_name")


def missing_arguments(constructor: Callable[..., Any]) -> list[str]:
    """The library-wide keyword arguments `constructor` does not accept ([] with **kwargs, or
    when its signature cannot be read)."""
    try:
        parameters = inspect.signature(constructor).parameters
    except (TypeError, ValueError):
        return []
    kinds = {p.kind for p in parameters.values()}
    if inspect.Parameter.VAR_KEYWORD in kinds:
        return []
    keyword = {
        name
        for name, p in parameters.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    return [a for a in LIBRARY_ARGUMENTS if a not in keyword]


def _check_constructor(name: str, constructor: Callable[..., Any]) -> None:
    missing = missing_arguments(constructor)
    if missing:
        what = getattr(constructor, "__name__", type(constructor).__name__)
        raise ConfigError(
            f"model {name!r} ({what}) does not take {', '.join(missing)}: a model's constructor "
            f"gets the keyword arguments {', '.join(LIBRARY_ARGUMENTS)} (add them as fields, "
            "e.g. `dtype: Any = jnp.float32`, `dropout_rate: float = 0.0`, `axis_name: str | "
            "None = None`, or take **kwargs)."
        )


def register_model(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator that registers a model constructor (a Linen module class, or a function
    returning one) as `name` in `MODELS`, so `get_model(name, ...)` and config files
    (`config.model.name = name`) build it:

        @register_model("my_net")
        class MyNet(nn.Module):
            num_classes: int
            dtype: Any = jnp.float32
            dropout_rate: float = 0.0
            axis_name: str | None = None

    The constructor must take `num_classes`, `dtype`, `dropout_rate` and `axis_name` (or
    **kwargs): one missing is a ConfigError naming it. A run records the module the model comes
    from (`config.model.module` in its config.json), so evaluation and prediction in another
    process import it again; define models in an importable module or in the config file."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"register_model takes the model's name, a string, not {name!r}.")

    def register(constructor: Callable[..., Any]) -> Callable[..., Any]:
        if name in BUILT_IN and MODELS.get(name) is not constructor:
            raise ConfigError(
                f"model {name!r} is one of flaxcls's own; register yours under another name."
            )
        _check_constructor(name, constructor)
        MODELS[name] = constructor
        return constructor

    return register


def _defined_by(constructor: Any) -> Any:
    """The user's class or function inside `constructor` (through functools.partial, e.g.
    `partial(from_nnx, MyNNXNet)`), else the constructor itself."""
    seen = [constructor]
    while isinstance(seen[-1], functools.partial):
        partial = seen[-1]
        seen.extend([*partial.args, *partial.keywords.values(), partial.func])
    for candidate in seen:
        module = getattr(candidate, "__module__", None)
        if callable(candidate) and module and not module.startswith(("flaxcls.", "functools")):
            return candidate
    return constructor


def model_source(name: str) -> dict[str, str]:
    """Where the model registered as `name` is defined, for a run's config.json:
    {'module': dotted name, 'module_file': its source file}; {} for flaxcls's own models."""
    if name in BUILT_IN and MODELS.get(name) is BUILT_IN[name]:
        return {}
    module = getattr(_defined_by(MODELS.get(name)), "__module__", None)
    if not module or module.startswith("flaxcls."):
        return {}
    path = getattr(sys.modules.get(module), "__file__", None) or ""
    return {"module": module, "module_file": os.path.abspath(path) if path else ""}


def import_model(name: str, module: str = "", module_file: str = "") -> None:
    """Makes `name` registered, importing the `module` (else loading `module_file`) a run
    recorded for it; a ConfigError saying what to do when that fails or registers nothing."""
    if name in MODELS or not (module or module_file):
        return
    where = f"module {module!r}" + (f" ({module_file})" if module_file else "")
    if module == "__main__":
        raise ConfigError(
            f"model {name!r} was registered by a script ({module_file or '__main__'}), which "
            "another process cannot import; register it before loading the run (import or "
            "define it in this process), or move it into an importable module."
        )
    problem = None
    try:
        importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - any error in the user's module
        problem = f"{type(e).__name__}: {e}"
        if module_file and os.path.isfile(module_file) and isinstance(e, ImportError):
            problem = _load_file(module, module_file)
    if problem is not None:
        raise ConfigError(
            f"model {name!r} comes from {where}, which cannot be imported ({problem}); put it "
            "on PYTHONPATH (or sys.path), or register the model before loading the run."
        )
    if name not in MODELS:
        raise ConfigError(
            f"model {name!r}: importing {where} did not register it; register it there "
            f"(`@register_model({name!r})` or `MODELS[{name!r}] = ...`)."
        )


def _load_file(module: str, path: str) -> str | None:
    """Executes the source file `path` as a module (a config file, a module moved off the
    path); None when it loaded, else the problem."""
    try:
        spec = importlib.util.spec_from_file_location(f"flaxcls_user_model.{module}", path)
        loaded = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(loaded)
    except Exception as e:  # noqa: BLE001 - any error in the user's file
        return f"{type(e).__name__}: {e}"
    return None


def get_model(
    name: str,
    *,
    num_classes: int,
    dtype: Any = jnp.float32,
    dropout_rate: float = 0.0,
    axis_name: str | None = None,
) -> nn.Module:
    """The model registered as `name`; an unknown name is a ValueError listing the valid names.

    `axis_name` is only for `jax.pmap` / `shard_map` users: BatchNorm then averages its batch
    statistics over that mapped axis. Under `jax.jit` the statistics are global without it.
    """
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}")
    _check_constructor(name, MODELS[name])
    return MODELS[name](
        num_classes=num_classes, dtype=dtype, dropout_rate=dropout_rate, axis_name=axis_name
    )
