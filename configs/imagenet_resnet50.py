"""ResNet-50 v1.5 on ImageNet (the standard recipe of Goyal et al. 2017): SGD Nesterov 0.9,
lr 0.1 x batch/256, 5 warmup epochs then cosine, weight decay 1e-4, label smoothing 0.1,
inception crop + flip, 100 epochs, bfloat16 compute.

  python run.py --config configs/imagenet_resnet50.py --workdir runs/imagenet_r50

Needs tfds's `imagenet2012` prepared from the manually downloaded archives (BUILD.md).
Expect ~76.5-77% top-1 on the validation set (reported for this recipe; flax's ImageNet
example reaches 76.3% in 90 epochs). The learning rate below is for the global batch 1024.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.model.name = "resnet50"
    config.model.dtype = "bfloat16"
    config.data.dataset = "imagenet2012"
    config.data.augment = "inception_crop_flip"
    config.data.validation_fraction = 0.01  # a minival of 12,811 training images
    config.data.image_size = 224
    config.data.eval_resize = 256
    config.batch_size = 1024
    config.eval_batch_size = 1000
    config.num_epochs = 100.0
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.4  # 0.1 x 1024 / 256
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = True
    config.optimizer.weight_decay = 1e-4
    config.schedule.name = "warmup_cosine"
    config.schedule.warmup_epochs = 5.0
    config.label_smoothing = 0.1
    config.log_every_steps = 500
    return config
