"""Transfer learning: start a run from another run's checkpoint, or from PyTorch ResNet or ViT
weights (`.safetensors`, or a `torch.save`d state_dict read with `weights_only=True`).

Every parameter and BatchNorm statistic whose path and shape match is copied; the classifier
(`head`) stays freshly initialised unless `init_head` asks for it (and its shape matches), so a
backbone trained on one label set starts a model for another, with any number of classes.
"""

from __future__ import annotations

from typing import Any

import jax
from flax import traverse_util

from flaxcls.core.steps import TrainState, evaluation_variables
from flaxcls.errors import ConfigError
from flaxcls.models import foreign
from flaxcls.modes.build import load_run

HEAD = "head"


def _copy_matching(
    target: dict, source: dict, init_head: bool
) -> tuple[dict, list[str], list[str]]:
    flat_target = traverse_util.flatten_dict(target, sep="/")
    flat_source = traverse_util.flatten_dict(source, sep="/")
    copied, kept = [], []
    for path, value in flat_target.items():
        other = flat_source.get(path)
        is_head = path.split("/")[0] == HEAD
        if other is None or other.shape != value.shape or (is_head and not init_head):
            kept.append(path)
            continue
        flat_target[path] = jax.device_put(other, value.sharding).astype(value.dtype)
        copied.append(path)
    return traverse_util.unflatten_dict(flat_target, sep="/"), copied, kept


def init_from_run(
    state: TrainState, run_dir: str, *, init_head: bool = False, checkpoint: str = "best"
) -> tuple[TrainState, dict[str, Any]]:
    """`state` with the backbone of the run in `run_dir` (its best checkpoint by default).

    Returns the new state and a summary: which parameter paths were copied and which kept
    their fresh initialisation.
    """
    if foreign.is_weight_file(run_dir):
        return _init_from_weights(state, run_dir, init_head)
    try:
        source = load_run(run_dir, checkpoint)
    except FileNotFoundError as e:
        raise ConfigError(f"init_from={run_dir!r}: {e}") from None
    weights = evaluation_variables(source.state)  # the weights the source run was judged by
    params, copied, kept = _copy_matching(state.params, weights["params"], init_head)
    if not copied:
        raise ConfigError(
            f"init_from={run_dir!r}: no parameter matches this model "
            f"({source.config.model.name} there, another architecture here?)."
        )
    batch_stats, _, _ = _copy_matching(state.batch_stats, weights["batch_stats"], init_head)
    summary = {"from": run_dir, "step": source.step, "copied": copied, "fresh": kept}
    return state.replace(params=params, batch_stats=batch_stats), summary


def _init_from_weights(
    state: TrainState, path: str, init_head: bool
) -> tuple[TrainState, dict[str, Any]]:
    state_dict = foreign.load_state_dict(path)
    if not init_head:
        state_dict = foreign.without_head(state_dict)
    template = state.weights()
    variables, fresh = foreign.variables_from_torch(state_dict, jax.device_get(template))
    placed = jax.tree.map(
        lambda new, old: jax.device_put(new, old.sharding).astype(old.dtype), variables, template
    )
    summary = {"from": path, "step": 0, "copied": sorted(state_dict), "fresh": fresh}
    return state.replace(params=placed["params"], batch_stats=placed["batch_stats"]), summary
