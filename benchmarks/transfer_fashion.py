"""Transfer learning on real data: pretrain on Fashion-MNIST classes 0-4, then learn classes 5-9
from 500 labelled images written out as an image folder of PNG files.

  python benchmarks/transfer_fashion.py [--pretrain-epochs 3] [--epochs 5 40] [--out FILE.json]

Prints a table and writes benchmarks/results/transfer_fashion.json unless --out says otherwise.
Three runs on the same 500 images (100 per class, 10% of them held out for validation) for each
budget of epochs, tested on all 5,000 test images of classes 5-9: fine-tuning the pretrained network
(backbone at a tenth of the learning rate), the pretrained network as a frozen feature extractor
(only the head trains, BatchNorm in inference mode), and training from scratch. The folder and
the pretraining data live in a temporary directory.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from common import machine, versions, write_json  # noqa: E402

DATA_DIR = "/usr/share/datasets/fashion-mnist"
DEFAULT_OUT = os.path.join(ROOT, "benchmarks", "results", "transfer_fashion.json")
MODEL = "fast_cnn_small"
PER_CLASS = 100


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pretrain-epochs", type=float, default=3.0)
    parser.add_argument(
        "--epochs", type=float, nargs="+", default=[5.0, 40.0], help="budgets of the 500-image runs"
    )
    parser.add_argument("--out", default=DEFAULT_OUT)
    return parser.parse_args(argv)


def write_folder(root: str, images, labels, names, per_class: int | None, seed: int) -> int:
    """PNG files under root/<class name>/; `per_class` random images of each class (all if None)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    count = 0
    for label in np.unique(labels):
        index = np.nonzero(labels == label)[0]
        if per_class is not None:
            index = rng.choice(index, per_class, replace=False)
        directory = os.path.join(root, names[label].replace("/", "-"))
        os.makedirs(directory, exist_ok=True)
        for i in index:
            Image.fromarray(images[i].squeeze(-1)).save(os.path.join(directory, f"{i:05d}.png"))
            count += 1
    return count


def base_config(**overrides):
    """configs/folder.py's recipe (SGD 0.05, warmup-cosine, label smoothing 0.1) on the small
    model, batches of 50 and 2-pixel crops for 28x28 images, with `overrides` ("a.b": value)."""
    from configs import folder

    config = folder.get_config()
    config.model.name = MODEL
    config.batch_size = 50
    config.eval_batch_size = 500
    config.data.crop_padding = 2
    config.progress_bar = False
    config.compilation_cache_dir = ""
    config.log_every_steps = 50
    config.update_from_flattened_dict(overrides)
    return config


def main(argv=None) -> None:
    args = parse_args(argv)
    from flaxcls.data.datasets import FASHION_MNIST_CLASSES
    from flaxcls.data.idx import load_idx_split
    from flaxcls.modes.train import train_and_evaluate

    train_images, train_labels = load_idx_split(DATA_DIR, "train")
    test_images, test_labels = load_idx_split(DATA_DIR, "test")
    results = {}
    with tempfile.TemporaryDirectory(prefix="transfer_fashion_") as tmp:
        first = train_labels < 5
        npz = os.path.join(tmp, "classes_0_4.npz")
        np.savez(
            npz,
            images=train_images[first],
            labels=train_labels[first],
            test_images=test_images[test_labels < 5],
            test_labels=test_labels[test_labels < 5],
        )
        start = time.perf_counter()
        pretrain = base_config(
            **{
                "data.dataset": "custom",
                "data.source": "npz",
                "data.path": npz,
                "data.validation_fraction": 0.1,
                "batch_size": 128,
                "num_epochs": args.pretrain_epochs,
            }
        )
        pre = train_and_evaluate(pretrain, os.path.join(tmp, "pretrain"))
        results["pretrain_classes_0_4"] = {
            "test_accuracy": pre["accuracy"],
            "wall_s": time.perf_counter() - start,
            "train_images": int(first.sum()),
        }
        folder = os.path.join(tmp, "classes_5_9")
        names = FASHION_MNIST_CLASSES
        second = train_labels >= 5
        n_train = write_folder(
            os.path.join(folder, "train"),
            train_images[second],
            train_labels[second],
            names,
            PER_CLASS,
            seed=0,
        )
        n_test = write_folder(
            os.path.join(folder, "test"),
            test_images[test_labels >= 5],
            test_labels[test_labels >= 5],
            names,
            None,
            seed=0,
        )
        pretrained = os.path.join(tmp, "pretrain")
        variants = {
            "fine-tune (backbone lr x0.1)": {
                "init_from": pretrained,
                "optimizer.backbone_lr_factor": 0.1,
            },
            "frozen backbone (head only)": {
                "init_from": pretrained,
                "optimizer.freeze": "^(?!head/)",
                "frozen_batch_stats": True,
            },
            "from scratch": {},
        }
        for epochs in args.epochs:
            folder_overrides = {
                "data.dataset": "folder",
                "data.path": folder,
                "data.image_size": 28,
                "data.validation_fraction": 0.1,
                "num_epochs": epochs,
            }
            for name, extra in variants.items():
                start = time.perf_counter()
                config = base_config(**folder_overrides, **extra)
                workdir = os.path.join(tmp, f"{name.split()[0]}_{epochs:g}")
                test = train_and_evaluate(config, workdir)
                results[f"{name}, {epochs:g} epochs"] = {
                    "test_accuracy": test["accuracy"],
                    "test_examples": test["num_examples"],
                    "wall_s": time.perf_counter() - start,
                }
    print(f"\n{'run':<42} {'test acc (classes 5-9)':>22} {'wall s':>7}")
    for name, r in results.items():
        print(f"{name:<42} {r['test_accuracy']:>22.4f} {r['wall_s']:>7.0f}")
    write_json(
        args.out,
        {
            "benchmark": "transfer_fashion",
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": "python benchmarks/transfer_fashion.py " + " ".join(argv or sys.argv[1:]),
            "machine": machine(),
            "versions": versions(("jax", "flax", "optax", "numpy", "pillow")),
            "settings": {
                "model": MODEL,
                "pretrain_epochs": args.pretrain_epochs,
                "epochs": args.epochs,
                "train_images_per_class": PER_CLASS,
                "folder_train_images": n_train,
                "folder_test_images": n_test,
            },
            "results": results,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
