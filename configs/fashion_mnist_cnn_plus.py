"""The seed's CNN with a better recipe on Fashion-MNIST: horizontal flips, AdamW with warmup and
cosine decay, label smoothing 0.1, 15 epochs.

  python run.py --config configs/fashion_mnist_cnn_plus.py --workdir runs/fashion_mnist_cnn_plus

The same 93k-parameter model and 20% validation hold-out as configs/fashion_mnist.py. Measured
on 2 CPU cores: 91.9% test accuracy in about 4 minutes, above the 91.6% of the 2-conv
TensorFlow baseline in the Fashion-MNIST benchmark table. (Random crops as well, or dropout,
left this small model under-fitting: 91.3%.)
"""

import ml_collections

from configs import fashion_mnist


def get_config() -> ml_collections.ConfigDict:
    config = fashion_mnist.get_config()
    config.data.augment = "flip"
    config.num_epochs = 15.0
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 2e-3
    config.optimizer.weight_decay = 1e-4
    config.schedule.name = "warmup_cosine"
    config.schedule.warmup_epochs = 1.0
    config.label_smoothing = 0.1
    return config
