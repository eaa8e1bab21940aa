"""airbench94's CIFAR-10 speedrun recipe, every element, from flaxcls parts any config can use.

  python run.py --config configs/cifar10_speedrun.py --workdir runs/cifar10_speedrun

The recipe (airbench 0.1.8, `lib_airbench94.hyp`; 94.01% mean test accuracy over 1,000 runs
there, in 3.83 s on one A100):
- `speedrun_cnn`: airbench94's network layer for layer; the 2x2 stem whitened from the first
  5,000 training images (the patches' second moment), its kernel never trained and its bias
  trained for the first 3 epochs;
- batch 1,024, 9.9 epochs; `sgd_decoupled`: Nesterov momentum 0.85, learning rate 11.5 and
  weight decay 0.0153 per 1,024 examples, BatchNorm biases at 64x the rate; the triangular
  schedule 0.2 -> 1 (at 23%) -> 0.07; lookahead every 5 steps with decay 0.95**5 * (t/T)**3;
  label smoothing 0.2;
- 2-pixel translation with reflect padding and the alternating flip, on the device;
- test-time augmentation level 2: mirror, and mirror of the 1-pixel shifts (half weight).
Compute in bfloat16 on accelerators (float32 parameters); float32 on CPUs.

Needs tfds's `cifar10` prepared (see configs/cifar10.py), or `--config.data.source=npz`
with `--config.data.path`. Trains on all 50,000 training images and reports the test set.
"""

import ml_collections

from configs import cifar10


def speedrun(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` with the speedrun recipe on top (its dataset and normalisation kept)."""
    config.model.name = "speedrun_cnn"
    config.model.whiten_stem = True
    config.model.whiten_centered = False
    config.model.dtype = "auto"
    config.data.validation_fraction = 0.0
    config.data.augment = "crop_flip"
    config.data.crop_padding = 2
    config.data.crop_padding_mode = "reflect"
    config.data.alternating_flip = True
    config.data.on_device = True
    config.batch_size = 1024
    config.eval_batch_size = 2000
    config.num_epochs = 9.9
    config.optimizer.name = "sgd_decoupled"
    config.optimizer.learning_rate = 11.5  # per 1,024 examples
    config.optimizer.momentum = 0.85
    config.optimizer.nesterov = True
    config.optimizer.weight_decay = 0.0153  # per 1,024 examples
    config.optimizer.norm_bias_lr_factor = 64.0
    config.optimizer.freeze = "^stem/kernel$"
    config.optimizer.freeze_after = "^stem/bias$"
    config.optimizer.freeze_after_epochs = 3.0
    config.schedule.name = "triangle"
    config.schedule.start_factor = 0.2
    config.schedule.peak_fraction = 0.23
    config.schedule.end_factor = 0.07
    config.lookahead.every = 5
    config.lookahead.decay = 0.95
    config.lookahead.power = 3.0
    config.label_smoothing = 0.2
    config.flip_tta = True
    config.translate_tta = 1
    config.eval_every_epochs = config.num_epochs  # the recipe looks at the test set once
    config.log_every_steps = 100
    return config


def get_config() -> ml_collections.ConfigDict:
    return speedrun(cifar10.get_config())
