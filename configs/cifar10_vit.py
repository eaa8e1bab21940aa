"""A small Vision Transformer on CIFAR-10: `vit_cifar` (8x8 patches of 4 pixels, 7 blocks of
width 256, stochastic depth 0.1), AdamW 5e-4 with weight decay 0.05, batch 128, 10 warmup
epochs then cosine, label smoothing 0.1, crop + flip, RandAugment rand-m9-n2, mixup / CutMix and
random erasing, 300 epochs.

  python run.py --config configs/cifar10_vit.py --workdir runs/cifar10_vit

Transformers trained from scratch on 50k images lean on augmentation and long schedules;
Hassani et al. (2021) report 91.4% test accuracy for a model of this size (their ViT-Lite-7/4,
which differs only in having no q/k/v biases) after 300 epochs of a similar recipe. This config's
accuracy has not been measured: no full run of it has been made.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.model.name = "vit_cifar"
    config.data.dataset = "cifar10"
    config.data.validation_fraction = 0.1
    config.data.augment = "crop_flip"
    config.data.randaugment_ops = 2
    config.data.randaugment_magnitude = 9.0
    config.data.mixup_alpha = 0.8
    config.data.cutmix_alpha = 1.0
    config.data.erasing_prob = 0.25
    config.batch_size = 128
    config.num_epochs = 300.0
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 5e-4
    # on leaves of more than one dimension: kernels, and the class token and position
    # embeddings too (timm exempts those two); not biases or LayerNorm scales
    config.optimizer.weight_decay = 0.05
    config.schedule.name = "warmup_cosine"
    config.schedule.warmup_epochs = 10.0
    config.label_smoothing = 0.1
    return config
