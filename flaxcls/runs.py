"""A run, built or loaded: its model, optimiser and sharded initial state from a config, and a
finished run's config, data and restored checkpoint from its directory.

Training (`flaxcls.train`), evaluation, transfer, export and prediction all start here.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from flaxcls import sharding
from flaxcls.checkpoint import Checkpointer
from flaxcls.config_checks import check_model_input
from flaxcls.data import Input, build_input
from flaxcls.errors import ConfigError
from flaxcls.models import get_model
from flaxcls.optim import create_optimizer
from flaxcls.steps import TrainState, create_train_state, predict

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def total_train_steps(config: Any, steps_per_epoch: int) -> int:
    if config.num_train_steps > 0:
        return int(config.num_train_steps)
    return int(round(config.num_epochs * steps_per_epoch))


def create_model(config: Any, num_classes: int):
    if config.model.dtype not in DTYPES:
        raise ConfigError(f"model.dtype={config.model.dtype!r}; choose one of {', '.join(DTYPES)}.")
    return get_model(
        config.model.name,
        num_classes=num_classes,
        dtype=DTYPES[config.model.dtype],
        dropout_rate=config.model.dropout_rate,
    )


def init_state(
    model,
    tx,
    seed: int,
    image_shape,
    mesh,
    layout: str = "replicated",
    min_size: int = 2**16,
    ema_decay: float = 0.0,
) -> TrainState:
    """eval_shape -> shardings -> jitted init: nothing is ever built unsharded."""
    init = functools.partial(
        create_train_state, model, tx, image_shape=tuple(image_shape), ema_decay=ema_decay
    )
    rng = jax.random.PRNGKey(seed)
    abstract = jax.eval_shape(init, rng)
    shardings = sharding.state_shardings(abstract, mesh, layout, min_size)
    return jax.jit(init, out_shardings=shardings)(rng)


def build_run(config: Any, mesh) -> tuple[Input, TrainState, int]:
    """A run's input (this process's share), its freshly initialised state sharded over
    `mesh`, and its total number of training steps."""
    inputs = build_input(
        config.data,
        global_batch_size=config.batch_size,
        eval_batch_size=config.eval_batch_size,
        seed=config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    source = f"data.path={config.data.path!r}" if config.data.path else config.data.dataset
    check_model_input(config.model.name, inputs.info.image_shape, source)
    model = create_model(config, inputs.info.num_classes)
    steps_per_epoch = inputs.steps_per_epoch()
    total_steps = total_train_steps(config, steps_per_epoch)
    tx = create_optimizer(config, steps_per_epoch, total_steps)
    state = init_state(
        model,
        tx,
        config.seed,
        inputs.info.image_shape,
        mesh,
        config.mesh.params,
        config.mesh.fsdp_min_size,
        config.get("ema_decay", 0.0),  # runs saved before the option existed have none
    )
    return inputs, state, total_steps


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: is {workdir!r} a flaxcls run directory?")
    with open(path, encoding="utf-8") as f:
        return ml_collections.ConfigDict(json.load(f))


@dataclasses.dataclass
class LoadedRun:
    workdir: str
    config: ml_collections.ConfigDict
    inputs: Input
    state: TrainState
    step: int


def load_run(workdir: str, checkpoint: str = "best", mesh=None) -> LoadedRun:
    """A run's config, data and restored state: its best checkpoint by the tracked validation
    metric (the latest when it never validated), or its latest; where that one is damaged, the
    newest intact one (with a warning that names both)."""
    if checkpoint not in ("best", "latest"):
        raise ConfigError(f"--checkpoint={checkpoint!r}; choose best or latest.")
    config = load_run_config(workdir)
    mesh = mesh or sharding.make_mesh()
    inputs, state, _ = build_run(config, mesh)
    checkpointer = Checkpointer(
        os.path.join(workdir, "checkpoints"), best_metric=config.get("best_metric", "val_accuracy")
    )
    try:
        if checkpointer.latest_step() is None:
            raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints to evaluate.")
        restored = checkpointer.restore(state, prefer=checkpoint)
    finally:
        checkpointer.close()
    state, step = restored.state, restored.step
    return LoadedRun(workdir, config, inputs, state, step)


def serving_function(run: LoadedRun) -> Callable[[jax.Array], jax.Array]:
    """uint8 images -> probabilities, with the run's normalisation and BatchNorm statistics
    folded in as constants (flip TTA too, when the run evaluates with it)."""
    state = run.state
    scale = np.asarray(run.inputs.normalizer.scale, np.float32)
    shift = np.asarray(run.inputs.normalizer.shift, np.float32)
    flip_tta = bool(run.config.get("flip_tta", False))
    host_state = jax.device_get(state)

    def serve(images: jax.Array) -> jax.Array:
        x = images.astype(jnp.float32) * scale + shift
        return jax.nn.softmax(predict(host_state, x, flip_tta=flip_tta), axis=-1)

    return serve
