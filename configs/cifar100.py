"""WideResNet-28-10 on CIFAR-100 (Zagoruyko & Komodakis 2016): SGD Nesterov 0.9, lr 0.1,
weight decay 5e-4, batch 128, crop + flip, 200 epochs, lr x0.2 at epochs 60, 120, 160.

  python run.py --config configs/cifar100.py --workdir runs/cifar100_wrn

The paper reports 81.15% test accuracy (18.85% error) with dropout 0.3 on the full training
set; this config holds out 10% for validation. A GPU is needed to train it in hours.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.model.name = "wide_resnet28_10"
    config.model.dropout_rate = 0.3
    config.data.dataset = "cifar100"
    config.data.augment = "crop_flip"
    config.data.validation_fraction = 0.1
    config.batch_size = 128
    config.num_epochs = 200.0
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.1
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = True
    config.optimizer.weight_decay = 5e-4
    config.schedule.name = "step"
    config.schedule.decay_epochs = (60, 120, 160)
    config.schedule.decay_factor = 0.2
    return config
