"""CIFAR-10 towards 94% test accuracy in the fewest seconds, after airbench94: a frozen
patch-whitened 2x2 stem, conv-pool-BatchNorm-GELU blocks of 64/256/256 filters, fast BatchNorm
averages, a scaled linear head, label smoothing 0.2, Nesterov SGD with a short warmup and
cosine decay, flip + 2-pixel crop augmentation on the device, flip test-time augmentation.

  python run.py --config configs/cifar10_fast.py --workdir runs/cifar10_fast
  python benchmarks/recipe_seeds.py --config configs/cifar10_fast.py --seeds 0 1 2 3 4

Needs tfds's `cifar10` prepared (see configs/cifar10.py). Built for an accelerator: on two CPU
cores one epoch takes minutes. Trains on all 50,000 training images and reports the test set.
"""

import ml_collections

from configs import cifar10


def get_config() -> ml_collections.ConfigDict:
    config = cifar10.get_config()
    config.model.name = "fast_cnn"
    config.model.whiten_stem = True
    config.model.dtype = "bfloat16"
    config.data.validation_fraction = 0.0
    config.data.augment = "crop_flip"
    config.data.crop_padding = 2
    config.data.on_device = True
    config.batch_size = 1024
    config.eval_batch_size = 2000
    config.num_epochs = 10.0
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.8  # 0.1 per 128 examples
    config.optimizer.nesterov = True
    config.optimizer.weight_decay = 5e-4
    config.optimizer.freeze = "^stem/"
    config.schedule.name = "warmup_cosine"
    config.schedule.warmup_epochs = 0.5
    config.label_smoothing = 0.2
    config.flip_tta = True
    config.eval_every_epochs = 5.0
    config.log_every_steps = 50
    return config
