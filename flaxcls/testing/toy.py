"""What tests and benchmarks share to train a real run in seconds: a generated toy dataset, the
default config shrunk onto it, and a finished run's restored state. For the repository's tests
and benchmarks (it reads `configs/`), not part of the library's API."""

from __future__ import annotations

import os

import numpy as np

from configs import default
from flaxcls.core import sharding
from flaxcls.modes import build as runs
from flaxcls.rundir import files
from flaxcls.rundir.checkpoint import Checkpointer


def tiny_config(npz_path: str, **overrides):
    """The default config on a generated .npz dataset, small enough to train in seconds."""
    config = default.get_config()
    config.data.dataset = "custom"
    config.data.source = "npz"
    config.data.path = npz_path
    config.data.validation_fraction = 0.25
    config.batch_size = 16
    config.eval_batch_size = 24
    config.num_train_steps = 12
    config.eval_every_epochs = 1.0
    config.log_every_steps = 4
    config.progress_bar = False
    config.compilation_cache_dir = ""
    config.update_from_flattened_dict(overrides)
    return config


def write_npz(
    directory: str,
    n_train: int = 80,
    n_test: int = 30,
    shape=(28, 28, 1),
    num_classes: int = 3,
    seed: int = 0,
) -> str:
    """Learnable toy images: class k has a bright square in a class-specific place."""
    rng = np.random.default_rng(seed)

    def make(n):
        labels = rng.integers(0, num_classes, n)
        images = rng.integers(0, 60, (n, *shape)).astype(np.uint8)
        for i, k in enumerate(labels):
            # Noisy rather than flat: exact ties put ReLUs on their kink, where rounding
            # differences between device layouts would flip gradients.
            images[i, 6 * k : 6 * k + 8, 6 * k : 6 * k + 8] = rng.integers(200, 256, (8, 8, 1))
        return images, labels

    images, labels = make(n_train)
    test_images, test_labels = make(n_test)
    path = os.path.join(directory, "toy.npz")
    np.savez(path, images=images, labels=labels, test_images=test_images, test_labels=test_labels)
    return path


def restored_state(workdir, config, step=None):
    """The train state of the run in `workdir` at `step` (default: its latest checkpoint),
    restored onto this process's devices into the state `flaxcls.modes.build.build_run` makes."""
    _, state, _ = runs.build_run(config, sharding.make_mesh())
    checkpointer = Checkpointer(files.checkpoint_dir(workdir))
    try:
        if step is not None:
            assert step in checkpointer.manager.all_steps(), checkpointer.manager.all_steps()
        return checkpointer.restore(state, step).state
    finally:
        checkpointer.close()
