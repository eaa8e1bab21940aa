"""Your own images: a folder with one sub-folder per class (or train/ val/ test/ folders of
them), any common format and size, resized to 64x64. A ResNet-18 for 32-64 px inputs, flips
and crops, SGD with warmup and cosine.

  python run.py --config configs/folder.py --config.data.path=/data/my_images --workdir runs/mine

Without split folders, 10% of each class is held out for validation and 10% for test (seeded,
the same on every run). Fine-tune from another run with --config.init_from=runs/other.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.data.dataset = "folder"
    config.data.image_size = 64
    config.data.validation_fraction = 0.1
    config.data.test_fraction = 0.1
    config.data.augment = "crop_flip"
    config.data.crop_padding = 4
    config.model.name = "cifar_resnet18"
    config.batch_size = 64
    config.eval_batch_size = 256
    config.num_epochs = 30.0
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.05
    config.optimizer.nesterov = True
    config.optimizer.weight_decay = 5e-4
    config.schedule.name = "warmup_cosine"
    config.schedule.warmup_epochs = 1.0
    config.label_smoothing = 0.1
    return config
