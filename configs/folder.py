"""Your own images: a folder with one sub-folder per class (or train/ val/ test/ folders of
them), any common format and size. Flips and crops, warmup and cosine, label smoothing.

  python run.py --config configs/folder.py --config.data.path=/data/my_images --workdir runs/mine

The model and image size suit the machine, judged before JAX starts (jax.distributed must
start first on several hosts): `JAX_PLATFORMS` when it is set, else whether a GPU or TPU plugin
for JAX is installed (jax[cuda12], jax[tpu]). Name one with `configs/folder.py:cpu` or
`configs/folder.py:accelerator`.

- cpu: the seed CNN (122k parameters) at 32x32, batch 32, Adam 2e-3, 30 epochs. Measured on
  600 Fashion-MNIST PNGs (train/ 540, val/ 60, 10 classes) plus 1,000 test PNGs: 77.2% test
  accuracy for 68 s of CPU time, compilation and data included, so about 35-40 s on 2 idle
  cores (the 2 shared cores measured gave 700 s of wall time under a load of 15). The
  `fast_cnn_small` at 32 px reached 81.0% in 30 epochs for 200 s of CPU time; the
  accelerator setting below took over 9 minutes for 3 epochs.
- accelerator: `cifar_resnet18` (11M parameters) at 64x64, batch 64, SGD, 30 epochs. Not
  measured on a GPU; such a folder is seconds of training there after compilation.

Without split folders, 10% of each class is held out for validation and 10% for test (seeded,
the same on every run). Fine-tune from another run with --config.init_from=runs/other.
"""

import importlib.metadata
import importlib.util
import os

import ml_collections

from configs import default

# What differs between the two settings: a model, an image side and a schedule a 2-core laptop
# runs in about a minute, and the bigger model an accelerator makes short work of.
SETTINGS = {
    "cpu": {
        "model.name": "seed_cnn",
        "data.image_size": 32,
        "batch_size": 32,
        "num_epochs": 30.0,
        "optimizer.name": "adam",
        "optimizer.learning_rate": 2e-3,
        "optimizer.weight_decay": 0.0,
        "eval_every_epochs": 3.0,  # a validation and a checkpoint: costly next to a tiny epoch
    },
    "accelerator": {
        "model.name": "cifar_resnet18",
        "data.image_size": 64,
        "batch_size": 64,
        "num_epochs": 30.0,
        "optimizer.name": "sgd",
        "optimizer.learning_rate": 0.05,
        "optimizer.weight_decay": 5e-4,
        "eval_every_epochs": 1.0,
    },
}


def accelerator_installed() -> bool:
    """Whether JAX will find a GPU or TPU, without starting JAX: `JAX_PLATFORMS` when set, else
    an installed PJRT plugin (jax[cuda12] and jax[rocm] install `jax_plugins`) or libtpu."""
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if platforms:
        return platforms.split(",")[0].strip() != "cpu"
    plugins = importlib.metadata.entry_points(group="jax_plugins")
    return bool(plugins) or any(importlib.util.find_spec(m) for m in ("jax_plugins", "libtpu"))


def get_config(setting: str = "") -> ml_collections.ConfigDict:
    setting = setting or ("accelerator" if accelerator_installed() else "cpu")
    if setting not in SETTINGS:
        raise ValueError(f"configs/folder.py:{setting}; choose one of {', '.join(SETTINGS)}.")
    config = default.get_config()
    config.data.dataset = "folder"
    config.data.validation_fraction = 0.1
    config.data.test_fraction = 0.1
    config.data.augment = "crop_flip"
    config.data.crop_padding = 4
    config.eval_batch_size = 256
    config.optimizer.nesterov = True  # sgd
    config.schedule.name = "warmup_cosine"
    config.schedule.warmup_epochs = 1.0
    config.label_smoothing = 0.1
    config.update_from_flattened_dict(SETTINGS[setting])
    return config
