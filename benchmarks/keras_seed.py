"""The seed's Keras CNN against flaxcls on Fashion-MNIST: same model, recipe and data, side by side.

  python benchmarks/keras_seed.py [--epochs 10] [--batch-size 64] [--out FILE.json]

Prints a table and writes benchmarks/results/keras_seed.json unless --out says otherwise.

Each framework trains in its own subprocess, one after the other, so TensorFlow's and XLA's thread
pools never compete. Keras runs the TensorFlow CIFAR-10 tutorial CNN on pixels / 255 with
`fit(validation_split=0.2)`; flaxcls runs `configs/fashion_mnist.py` (the same CNN, Adam 1e-3 with
Keras's epsilon, batch 64, the last 20% of train held out) through `train_and_evaluate`.

Training images/s leaves out compilation and validation on both sides: Keras's is 48,000 images
over the median training part of epochs 2..E; flaxcls's the median of its logged windows after the
first. With `--epochs 1` the Keras figure has to include graph tracing (flagged in the JSON).
Fit wall time is Keras's `fit` and flaxcls's training loop, both validating every epoch (flaxcls
also saves a checkpoint then); total wall time runs from loading the data to the test accuracy.
Imports are left out of both and reported apart.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # `configs` and `flaxcls` import from the repository root

import common  # noqa: E402
from common import machine, versions, write_json  # noqa: E402

DATA_DIR = "/usr/share/datasets/fashion-mnist"
VALIDATION_SPLIT = 0.2
DEFAULT_OUT = os.path.join(ROOT, "benchmarks", "results", "keras_seed.json")
FRAMEWORKS = ("keras", "flaxcls")
PACKAGES = ("jax", "jaxlib", "flax", "optax", "tensorflow", "keras", "numpy")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", default=DEFAULT_OUT, help="where the JSON results go")
    parser.add_argument("--only", choices=FRAMEWORKS, help="run one framework (child process)")
    parser.add_argument("--json-out", help="with --only: where the child writes its figures")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    if args.only and not args.json_out:
        parser.error("--only needs --json-out")
    return args


def num_train_images(num_examples: int) -> int:
    """Images per epoch once the validation split is held out (48,000 of Fashion-MNIST's 60,000)."""
    return num_examples - int(round(num_examples * VALIDATION_SPLIT))


# ---------------------------------------------------------------- Keras (the seed's code)


class EpochClock:
    """Times each epoch and its training part (up to the start of validation) in fit."""

    def __init__(self) -> None:
        self.epoch_s: list[float] = []
        self.train_s: list[float] = []
        self._begin = self._test_begin = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._begin = self._test_begin = time.perf_counter()

    def on_test_begin(self, logs: dict | None = None) -> None:
        self._test_begin = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        end = time.perf_counter()
        self.epoch_s.append(end - self._begin)
        # Without validation on_test_begin never fires and the whole epoch is training.
        test_begin = self._test_begin if self._test_begin > self._begin else end
        self.train_s.append(test_begin - self._begin)


def build_keras_cnn(keras: Any, input_shape: tuple[int, ...], num_classes: int) -> Any:
    """The TensorFlow CIFAR-10 tutorial CNN, layer for layer."""
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(shape=input_shape),
            layers.Conv2D(32, (3, 3), activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu"),
            layers.Flatten(),
            layers.Dense(64, activation="relu"),
            layers.Dense(num_classes),
        ]
    )


def steady_median(seconds: list[float]) -> tuple[float, bool]:
    """Median over epochs 2..E (epoch 1 traces the graphs); epoch 1 alone when that is all."""
    if len(seconds) > 1:
        return statistics.median(seconds[1:]), False
    return seconds[0], True


def run_keras(epochs: int, batch_size: int) -> dict[str, Any]:
    os.environ["KERAS_BACKEND"] = "tensorflow"  # must precede the first keras import
    import_start = time.perf_counter()
    import keras

    from flaxcls.data.idx import load_idx_split

    # Total wall time runs from loading the data to the test accuracy, as train_and_evaluate's.
    start = time.perf_counter()
    keras.utils.set_random_seed(0)
    train_images, train_labels = load_idx_split(DATA_DIR, "train")
    test_images, test_labels = load_idx_split(DATA_DIR, "test")
    x_train, x_test = train_images / 255.0, test_images / 255.0  # as the tutorial scales
    model = build_keras_cnn(keras, x_train.shape[1:], 10)
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    clock = EpochClock()
    callback = keras.callbacks.LambdaCallback(
        on_epoch_begin=clock.on_epoch_begin,
        on_epoch_end=clock.on_epoch_end,
        on_test_begin=clock.on_test_begin,
    )
    fit_start = time.perf_counter()
    history = model.fit(
        x_train,
        train_labels,
        epochs=epochs,
        batch_size=batch_size,
        validation_split=VALIDATION_SPLIT,
        callbacks=[callback],
        verbose=2,
    )
    fit_wall = time.perf_counter() - fit_start
    test = model.evaluate(x_test, test_labels, batch_size=batch_size, return_dict=True, verbose=0)
    total_wall = time.perf_counter() - start
    images = num_train_images(len(train_labels))
    train_median, with_tracing = steady_median(clock.train_s)
    epoch_median, _ = steady_median(clock.epoch_s)
    return {
        "test_accuracy": float(test["accuracy"]),
        "test_loss": float(test["loss"]),
        "final_val_accuracy": float(history.history["val_accuracy"][-1]),
        "images_per_sec": images / train_median,
        "images_per_sec_incl_validation": images / epoch_median,
        "images_per_sec_includes_compile": with_tracing,
        "epoch_seconds": clock.epoch_s,
        "epoch_train_seconds": clock.train_s,
        "fit_wall_s": fit_wall,
        "total_wall_s": total_wall,
        "import_s": start - import_start,
    }


# ---------------------------------------------------------------- flaxcls


def flaxcls_config(epochs: int, batch_size: int) -> Any:
    from configs import fashion_mnist

    config = fashion_mnist.get_config()
    config.num_epochs = float(epochs)
    config.batch_size = batch_size
    config.data.source = "idx"  # the very files the Keras side reads
    config.data.path = DATA_DIR
    config.progress_bar = False
    config.compilation_cache_dir = ""  # no disk cache: compilation counts in the wall time
    return config


def read_metrics(workdir: str) -> list[dict[str, float]]:
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def run_flaxcls(epochs: int, batch_size: int) -> dict[str, Any]:
    import_start = time.perf_counter()
    from unittest import mock

    from absl import logging

    from flaxcls.modes import train as train_lib

    logging.set_verbosity(logging.WARNING)  # orbax logs every file operation at INFO
    config = flaxcls_config(epochs, batch_size)
    loop_seconds: list[float] = []
    run_loop = train_lib.TrainLoop.run

    def timed_run(loop: Any, state: Any) -> Any:
        # The training loop alone (with its validation), the counterpart of Keras's fit.
        loop_start = time.perf_counter()
        state = run_loop(loop, state)
        loop_seconds.append(time.perf_counter() - loop_start)
        return state

    with tempfile.TemporaryDirectory(prefix="keras_seed_flaxcls_") as workdir:
        start = time.perf_counter()
        with mock.patch.object(train_lib.TrainLoop, "run", timed_run):
            test = train_lib.train_and_evaluate(config, workdir)
        total_wall = time.perf_counter() - start
        records = read_metrics(workdir)
    rates = [r["images_per_sec"] for r in records if "images_per_sec" in r]
    val = [r["val_accuracy"] for r in records if "val_accuracy" in r]
    return {
        "test_accuracy": float(test["accuracy"]),
        "test_loss": float(test["loss"]),
        "test_top5_accuracy": float(test["top5_accuracy"]),
        "final_val_accuracy": val[-1] if val else None,
        # The first window holds compilation; with a single window it is all there is.
        "images_per_sec": statistics.median(rates[1:] if len(rates) > 1 else rates),
        "images_per_sec_includes_compile": len(rates) <= 1,
        "window_images_per_sec": rates,
        "fit_wall_s": loop_seconds[0],
        "total_wall_s": total_wall,
        "import_s": start - import_start,
    }


# ---------------------------------------------------------------- parent: run both, report


def run_child(framework: str, args: argparse.Namespace) -> dict[str, Any]:
    """Runs one framework in a fresh interpreter and returns the figures it wrote."""
    return common.run_child(
        __file__, framework, ["--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]
    )


def ratios(keras: dict[str, Any], flax: dict[str, Any]) -> dict[str, float]:
    """flaxcls / Keras: above 1 means more images/s, or more seconds, for flaxcls."""
    return {key: flax[key] / keras[key] for key in ("images_per_sec", "fit_wall_s", "total_wall_s")}


def print_table(results: dict[str, dict[str, Any]], ratio: dict[str, float]) -> None:
    header = f"{'framework':<10} {'test acc':>9} {'train img/s':>12} {'fit wall s':>11} "
    print("\n" + header + f"{'total wall s':>13}")
    for name, r in results.items():
        compile_note = "*" if r["images_per_sec_includes_compile"] else " "
        print(
            f"{name:<10} {r['test_accuracy']:>9.4f} {r['images_per_sec']:>11.0f}{compile_note} "
            f"{r['fit_wall_s']:>11.1f} {r['total_wall_s']:>13.1f}"
        )
    keras_incl = results["keras"]["images_per_sec_incl_validation"]
    print(f"(Keras with validation inside the epoch: {keras_incl:.0f} img/s)")
    if any(r["images_per_sec_includes_compile"] for r in results.values()):
        print("* includes compilation or graph tracing (too few epochs or windows to leave it out)")
    print(
        f"flaxcls / Keras: images/s x{ratio['images_per_sec']:.2f}, "
        f"fit wall x{ratio['fit_wall_s']:.2f}, total wall x{ratio['total_wall_s']:.2f}"
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.only:
        run = run_keras if args.only == "keras" else run_flaxcls
        write_json(args.json_out, run(args.epochs, args.batch_size))
        return
    results = {name: run_child(name, args) for name in FRAMEWORKS}
    ratio = ratios(results["keras"], results["flaxcls"])
    print_table(results, ratio)
    write_json(
        args.out,
        {
            "benchmark": "keras_seed",
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": machine(),
            "versions": versions(PACKAGES),
            "settings": {
                "dataset": "fashion_mnist",
                "data_dir": DATA_DIR,
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "validation_split": VALIDATION_SPLIT,
            },
            "results": results,
            "ratios_flaxcls_over_keras": ratio,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
