"""What flaxcls knows about each named dataset: shapes, classes, statistics, where to find it."""

from __future__ import annotations

from flaxcls.data.contract import DatasetInfo
from flaxcls.errors import ConfigError

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

DATASETS: dict[str, DatasetInfo] = {
    "fashion_mnist": DatasetInfo(
        name="fashion_mnist",
        num_classes=10,
        image_shape=(28, 28, 1),
        mean=(0.2860,),
        std=(0.3530,),
        tfds_name="fashion_mnist",
        class_names=FASHION_MNIST_CLASSES,
        local_idx_dirs=("/usr/share/datasets/fashion-mnist",),
    ),
    "mnist": DatasetInfo(
        name="mnist",
        num_classes=10,
        image_shape=(28, 28, 1),
        mean=(0.1307,),
        std=(0.3081,),
        tfds_name="mnist",
        class_names=tuple(str(i) for i in range(10)),
        local_idx_dirs=("/usr/share/datasets/mnist",),
    ),
    "cifar10": DatasetInfo(
        name="cifar10",
        num_classes=10,
        image_shape=(32, 32, 3),
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        tfds_name="cifar10",
        class_names=CIFAR10_CLASSES,
    ),
    "cifar100": DatasetInfo(
        name="cifar100",
        num_classes=100,
        image_shape=(32, 32, 3),
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        tfds_name="cifar100",
    ),
    "imagenet2012": DatasetInfo(
        name="imagenet2012",
        num_classes=1000,
        image_shape=(224, 224, 3),
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        tfds_name="imagenet2012",
        test_split="validation",
        streaming=True,
    ),
}


def get_dataset_info(name: str) -> DatasetInfo:
    """Looks a dataset up by name; an unknown name lists the known ones."""
    if name not in DATASETS:
        raise ConfigError(
            f"Unknown dataset {name!r}. Known datasets: {', '.join(sorted(DATASETS))}. "
            "For your own images use --config.data.dataset=folder --config.data.path=DIR, for "
            "arrays --config.data.dataset=custom --config.data.path=FILE.npz."
        )
    return DATASETS[name]
