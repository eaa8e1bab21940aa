"""flaxcls: image classifiers in JAX/Flax.

The pure pieces are importable on their own:

    from flaxcls import create_train_state, train_step, eval_step, get_model
    from flaxcls import scan_steps  # several train steps in one compiled call
    from flaxcls import make_optimizer  # optax optimisers and schedules from plain arguments
    from flaxcls.data import batches, eval_batches, load_arrays  # data without a config
"""

from flaxcls.core.metrics import classification_sums, cross_entropy, summarize
from flaxcls.core.optim import (
    create_learning_rate_schedule,
    create_optimizer,
    make_optimizer,
    make_schedule,
)
from flaxcls.core.steps import TrainState, create_train_state, eval_step, scan_steps, train_step
from flaxcls.models import MODELS, get_model

__version__ = "0.1.0"

__all__ = [
    "MODELS",
    "TrainState",
    "classification_sums",
    "create_learning_rate_schedule",
    "create_optimizer",
    "create_train_state",
    "cross_entropy",
    "eval_step",
    "get_model",
    "make_optimizer",
    "make_schedule",
    "scan_steps",
    "summarize",
    "train_step",
]
