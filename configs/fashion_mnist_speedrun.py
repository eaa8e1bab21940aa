"""airbench94's speedrun recipe (configs/cifar10_speedrun.py, unchanged) on Fashion-MNIST's
28x28 grayscale images: an 8-filter whitened stem (2 x 2x2 patch directions of 1 channel),
then the same network and training.

  python run.py --config configs/fashion_mnist_speedrun.py --workdir runs/fashion_mnist_speedrun
  python benchmarks/airbench_fashion.py   # side by side with airbench94 on one GPU

Trains on all 60,000 training images (no validation hold-out) and reports the 10,000 test
images, with test-time augmentation level 2 (mirror, and mirror of the 1-pixel shifts).
"""

import ml_collections

from configs import cifar10_speedrun, fashion_mnist


def get_config() -> ml_collections.ConfigDict:
    config = cifar10_speedrun.speedrun(fashion_mnist.get_config())
    config.steps_per_dispatch = 0  # by platform (fashion_mnist.py asks for 8)
    return config
