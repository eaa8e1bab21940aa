"""ResNet-20 (He et al. 2016) on CIFAR-10: SGD momentum 0.9, lr 0.1, weight decay 1e-4,
batch 128, crop + flip, 182 epochs with the learning rate divided by 10 at epochs 91 and 136.

  python run.py --config configs/cifar10_resnet.py --workdir runs/cifar10_resnet20

He et al. report 91.25% test accuracy (8.75% error) for ResNet-20 with the full 50k training
set; this config holds out 10% for validation. Use --config.model.name=cifar_resnet56 for
ResNet-56 (93.03% published).
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.model.name = "cifar_resnet20"
    config.data.dataset = "cifar10"
    config.data.augment = "crop_flip"
    config.data.validation_fraction = 0.1
    config.batch_size = 128
    config.num_epochs = 182.0
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.1
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 1e-4
    config.schedule.name = "step"
    config.schedule.decay_epochs = (91, 136)
    config.schedule.decay_factor = 0.1
    return config
