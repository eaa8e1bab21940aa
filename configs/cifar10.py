"""The seed's recipe: its Keras CNN on CIFAR-10, Adam 1e-3, batch 64, 10 epochs, 20% validation.

  python run.py --config configs/cifar10.py --workdir runs/cifar10

Needs tfds's `cifar10` prepared (once, with network: add --config.data.download=True, or
`tfds build cifar10`). The Keras tutorial reports ~70% test accuracy for this model and recipe.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.model.name = "seed_cnn"
    config.data.dataset = "cifar10"
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-3
    config.optimizer.eps = 1e-7  # Keras's default
    config.batch_size = 64
    config.num_epochs = 10.0
    return config
