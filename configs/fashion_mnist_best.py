"""Fashion-MNIST beyond the benchmark table's best entry (WRN40-4, 96.7%): WideResNet-28-10
with crop + flip, random erasing and cutmix, label smoothing, Nesterov SGD with warmup and
cosine over 200 epochs, bfloat16 compute, flip test-time augmentation.

  python run.py --config configs/fashion_mnist_best.py --workdir runs/fashion_mnist_best

Built for an accelerator (36M parameters, 200 epochs of 60,000 images); on a CPU it takes days.
Measured on one NVIDIA H200 at 12,500 training images/s (so 200 epochs take about 16 minutes):
95.42% test accuracy after --config.num_epochs=28 (2 min 53 s), 96.10% after 70 (6 min 13 s);
the full 200 epochs have not been run yet.
"""

import ml_collections

from configs import fashion_mnist


def get_config() -> ml_collections.ConfigDict:
    config = fashion_mnist.get_config()
    config.model.name = "wide_resnet28_10"
    config.model.dtype = "bfloat16"
    config.data.validation_fraction = 0.0
    config.data.augment = "crop_flip"
    config.data.crop_padding = 4
    config.data.on_device = True
    config.data.erasing_prob = 0.5
    config.data.cutmix_alpha = 1.0
    config.data.mix_prob = 0.5
    config.batch_size = 128
    config.eval_batch_size = 1000
    config.num_epochs = 200.0
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.1
    config.optimizer.nesterov = True
    config.optimizer.weight_decay = 5e-4
    config.schedule.name = "warmup_cosine"
    config.schedule.warmup_epochs = 2.0
    config.label_smoothing = 0.1
    config.flip_tta = True
    config.eval_every_epochs = 10.0
    return config
