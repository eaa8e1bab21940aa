"""A run, built or loaded: its model, optimiser and sharded initial state from a config, and a
finished run's config, dataset facts and restored checkpoint from its directory.

A finished run stands on its own (`flaxcls.rundir.files`): prediction, export, `init_from` and
ensemble members build the state from its config, dataset facts and checkpoint, and never read
or decode the training data. Evaluation reads the split it evaluates.

Training (`flaxcls.modes.train`), evaluation, transfer, export and prediction all start here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from flaxcls.config import check_model_input
from flaxcls.core import sharding
from flaxcls.core.lookahead import Lookahead
from flaxcls.core.optim import create_optimizer
from flaxcls.core.steps import TrainState, create_train_state, predict
from flaxcls.data import DatasetInfo, Input, Normalizer, build_input
from flaxcls.errors import ConfigError
from flaxcls.models import get_model
from flaxcls.models.registry import import_model
from flaxcls.rundir import files
from flaxcls.rundir.checkpoint import Checkpointer

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
# model.dtype="auto": bfloat16 where it is fast (tensor cores, the MXU), float32 on CPUs, where
# XLA emulates bfloat16 arithmetic and it is slower.
AUTO_DTYPE = {"cpu": "float32"}
AUTO_DTYPE_ACCELERATOR = "bfloat16"


def compute_dtype(name: str) -> Any:
    """The compute dtype `model.dtype` names; "auto" picks by the default backend."""
    if name == "auto":
        name = AUTO_DTYPE.get(jax.default_backend(), AUTO_DTYPE_ACCELERATOR)
    if name not in DTYPES:
        raise ConfigError(f"model.dtype={name!r}; choose auto or one of {', '.join(DTYPES)}.")
    return DTYPES[name]


def total_train_steps(config: Any, steps_per_epoch: int) -> int:
    if config.num_train_steps > 0:
        return int(config.num_train_steps)
    return int(round(config.num_epochs * steps_per_epoch))


def create_model(config: Any, num_classes: int):
    return get_model(
        config.model.name,
        num_classes=num_classes,
        dtype=compute_dtype(config.model.dtype),
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
    abstract_only: bool = False,
    lookahead: Lookahead | None = None,
) -> TrainState:
    """eval_shape -> shardings -> jitted init: nothing is ever built unsharded. With
    `abstract_only`, the state's shapes, dtypes and shardings alone: a target to restore a
    checkpoint into, with nothing computed or compiled."""
    init = functools.partial(
        create_train_state,
        model,
        tx,
        image_shape=tuple(image_shape),
        ema_decay=ema_decay,
        lookahead=lookahead,
    )
    rng = jax.random.PRNGKey(seed)
    abstract = jax.eval_shape(init, rng)
    shardings = sharding.state_shardings(abstract, mesh, layout, min_size)
    if abstract_only:
        return jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
        )
    return jax.jit(init, out_shardings=shardings)(rng)


def build_state(
    config: Any, info: DatasetInfo, steps_per_epoch: int, mesh, abstract_only: bool = False
) -> tuple[TrainState, int]:
    """The freshly initialised state for `config` on data described by `info`, sharded over
    `mesh` (or only its shapes, with `abstract_only`), and the run's total training steps."""
    model = create_model(config, info.num_classes)
    total_steps = total_train_steps(config, steps_per_epoch)
    tx = create_optimizer(config, steps_per_epoch, total_steps)
    state = init_state(
        model,
        tx,
        config.seed,
        info.image_shape,
        mesh,
        config.mesh.params,
        config.mesh.fsdp_min_size,
        config.get("ema_decay", 0.0),  # runs saved before the option existed have none
        abstract_only,
        lookahead_of(config, total_steps),
    )
    return state, total_steps


def lookahead_of(config: Any, total_steps: int) -> Lookahead | None:
    """`config.lookahead` for a run of `total_steps`; None when off (or the run predates it)."""
    cfg = config.get("lookahead")
    if cfg is None or cfg.every <= 0:
        return None
    return Lookahead(cfg.every, cfg.decay, cfg.power, total_steps)


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
        device_count=mesh.devices.size,
    )
    source = f"data.path={config.data.path!r}" if config.data.path else config.data.dataset
    check_model_input(config.model.name, inputs.info.image_shape, source)
    state, total_steps = build_state(config, inputs.info, inputs.steps_per_epoch(), mesh)
    return inputs, state, total_steps


class LoadedRun:
    """A finished run: its config, dataset facts and restored state. `inputs` (the data, this
    process's share) is built the first time something asks for it."""

    def __init__(
        self,
        workdir: str,
        config: ml_collections.ConfigDict,
        info: DatasetInfo,
        state: TrainState,
        step: int,
        inputs: Input | None = None,
    ):
        self.workdir, self.config, self.info = workdir, config, info
        self.state, self.step = state, step
        self._inputs = inputs

    @property
    def inputs(self) -> Input:
        if self._inputs is None:
            self._inputs = build_input(
                self.config.data,
                global_batch_size=self.config.batch_size,
                eval_batch_size=self.config.eval_batch_size,
                seed=self.config.seed,
                process_index=jax.process_index(),
                process_count=jax.process_count(),
                device_count=jax.device_count(),  # the mesh evaluation runs on: all devices
            )
        return self._inputs

    def share_inputs(self, other: LoadedRun) -> None:
        """Evaluates on `other`'s data, already read, when both runs were trained on the same."""
        same = self.config.data.to_dict() == other.config.data.to_dict()
        if same and self.info == other.info and other._inputs is not None:
            self._inputs = other._inputs

    @property
    def normalizer(self) -> Normalizer:
        return Normalizer(self.info.mean, self.info.std)

    @property
    def class_names(self) -> list[str]:
        return list(self.info.class_names) or [str(i) for i in range(self.info.num_classes)]


def load_run(workdir: str, checkpoint: str = "best", mesh=None) -> LoadedRun:
    """A run's config, dataset facts and restored state: its best checkpoint by the tracked
    validation metric (the latest when it never validated), or its latest; where that one is
    damaged, the newest intact one (with a warning that names both). The data is not read
    unless the run predates `dataset.json` or something asks for `run.inputs`."""
    if checkpoint not in ("best", "latest"):
        raise ConfigError(f"--checkpoint={checkpoint!r}; choose best or latest.")
    config = files.load_run_config(workdir)
    import_model(
        config.model.name, config.model.get("module", ""), config.model.get("module_file", "")
    )
    mesh = mesh or sharding.make_mesh()
    facts = files.read_dataset_facts(workdir)
    inputs = None
    if facts is None:
        inputs, state, _ = build_run(config, mesh)
        info = inputs.info
    else:
        info, steps_per_epoch = facts
        # Shapes only: the checkpoint supplies every value, so nothing is initialised.
        state, _ = build_state(config, info, steps_per_epoch, mesh, abstract_only=True)
    checkpointer = Checkpointer(
        files.checkpoint_dir(workdir), best_metric=config.get("best_metric", "val_accuracy")
    )
    try:
        if checkpointer.latest_step() is None:
            raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints to evaluate.")
        restored = checkpointer.restore(state, prefer=checkpoint)
    finally:
        checkpointer.close()
    return LoadedRun(workdir, config, info, restored.state, restored.step, inputs)


def serving_function(run: LoadedRun) -> Callable[[jax.Array], jax.Array]:
    """uint8 images -> probabilities, with the run's normalisation and BatchNorm statistics
    folded in as constants (flip TTA too, when the run evaluates with it)."""
    state = run.state
    normalizer = run.normalizer
    flip_tta = bool(run.config.get("flip_tta", False))
    host_state = jax.device_get(state)

    def serve(images: jax.Array) -> jax.Array:
        x = normalizer(images)
        return jax.nn.softmax(predict(host_state, x, flip_tta=flip_tta), axis=-1)

    return serve
