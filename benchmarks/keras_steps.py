"""Training-step throughput of flaxcls against Keras 3 on TensorFlow: the seed's CNN and the
CIFAR ResNet-20, on synthetic in-memory images of Fashion-MNIST and CIFAR-10 shapes.

  python benchmarks/keras_steps.py [--steps 60] [--repeats 3] [--out FILE.json]

Prints a table and writes benchmarks/results/keras_steps.json unless --out says otherwise.

The input is out of the picture on both sides: Keras runs `fit` on tensors already in memory
(a `tf.data` of one cached batch repeated), flaxcls runs `jax.jit(train_step)` on one batch
already on the device. Same architecture, batch and optimiser (Adam 1e-3 for the CNN, SGD
momentum 0.9 for ResNet-20 with BatchNorm), float32. Each framework runs in its own process,
one after the other, so their thread pools never compete; the figure is the best of
`--repeats` timed runs of `--steps` steps after a warm-up run (compilation and tracing left out).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import common  # noqa: E402
from common import machine, versions, write_json  # noqa: E402

DEFAULT_OUT = os.path.join(ROOT, "benchmarks", "results", "keras_steps.json")
PACKAGES = ("jax", "jaxlib", "flax", "optax", "tensorflow", "keras", "numpy")
# name -> (model, image shape, batch size)
CASES = {
    "seed_cnn_28x28x1": ("seed_cnn", (28, 28, 1), 64),
    "seed_cnn_32x32x3": ("seed_cnn", (32, 32, 3), 64),
    "cifar_resnet20_32x32x3": ("cifar_resnet20", (32, 32, 3), 128),
}
FRAMEWORKS = ("keras", "flaxcls")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--only", choices=FRAMEWORKS, help="run one framework (child process)")
    parser.add_argument("--json-out", help="with --only: where the child writes its figures")
    return parser.parse_args(argv)


def synthetic(shape: tuple[int, ...], batch: int, num_classes: int = 10):
    import numpy as np

    rng = np.random.default_rng(0)
    images = rng.normal(size=(batch, *shape)).astype(np.float32)
    labels = rng.integers(0, num_classes, batch).astype(np.int32)
    return images, labels


# ---------------------------------------------------------------- Keras


def keras_seed_cnn(keras: Any, shape: tuple[int, ...]) -> Any:
    from keras_seed import build_keras_cnn

    return build_keras_cnn(keras, shape, 10)


def keras_resnet20(keras: Any, shape: tuple[int, ...]) -> Any:
    """He et al.'s CIFAR ResNet-20 (option-A shortcuts), as flaxcls's `cifar_resnet20`."""
    layers = keras.layers
    ops = keras.ops

    def conv_bn(x, filters, strides=1, relu=True):
        x = layers.Conv2D(filters, 3, strides, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)
        return layers.ReLU()(x) if relu else x

    def shortcut(x, filters, strides):
        if strides == 1 and x.shape[-1] == filters:
            return x
        extra = filters - x.shape[-1]
        return layers.Lambda(
            lambda t: ops.pad(
                t[:, ::strides, ::strides, :],
                [[0, 0], [0, 0], [0, 0], [extra // 2, extra - extra // 2]],
            )
        )(x)

    inputs = keras.Input(shape=shape)
    x = conv_bn(inputs, 16)
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(3):
            strides = 2 if stage > 0 and block == 0 else 1
            y = conv_bn(x, filters, strides)
            y = conv_bn(y, filters, relu=False)
            x = layers.ReLU()(layers.Add()([y, shortcut(x, filters, strides)]))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(10)(x))


def keras_case(case: str, steps: int, repeats: int) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    model_name, shape, batch = CASES[case]
    keras.utils.set_random_seed(0)
    build = keras_seed_cnn if model_name == "seed_cnn" else keras_resnet20
    model = build(keras, shape)
    optimizer = (
        keras.optimizers.Adam(1e-3)
        if model_name == "seed_cnn"
        else keras.optimizers.SGD(0.1, momentum=0.9)
    )
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    images, labels = synthetic(shape, batch)
    data = tf.data.Dataset.from_tensors((images, labels)).cache().repeat()
    model.fit(data, steps_per_epoch=5, epochs=1, verbose=0)  # traces the graph
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
        seconds.append(time.perf_counter() - start)
    return {"images_per_sec": steps * batch / min(seconds), "seconds": seconds, "batch": batch}


def run_keras(cases: list[str], steps: int, repeats: int) -> dict[str, Any]:
    os.environ["KERAS_BACKEND"] = "tensorflow"
    return {case: keras_case(case, steps, repeats) for case in cases}


# ---------------------------------------------------------------- flaxcls


def flaxcls_case(case: str, steps: int, repeats: int) -> dict[str, Any]:
    import jax
    import optax

    from flaxcls import create_train_state, get_model, train_step

    model_name, shape, batch = CASES[case]
    model = get_model(model_name, num_classes=10)
    tx = optax.adam(1e-3) if model_name == "seed_cnn" else optax.sgd(0.1, momentum=0.9)
    state = create_train_state(model, tx, jax.random.PRNGKey(0), shape)
    images, labels = synthetic(shape, batch)
    batch_arrays = jax.device_put({"image": images, "label": labels})
    step = jax.jit(train_step, donate_argnums=0)
    for _ in range(5):
        state, sums = step(state, batch_arrays)
    jax.block_until_ready(sums)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            state, sums = step(state, batch_arrays)
        jax.block_until_ready((state, sums))
        seconds.append(time.perf_counter() - start)
    return {"images_per_sec": steps * batch / min(seconds), "seconds": seconds, "batch": batch}


def run_flaxcls(cases: list[str], steps: int, repeats: int) -> dict[str, Any]:
    return {case: flaxcls_case(case, steps, repeats) for case in cases}


# ---------------------------------------------------------------- parent


def run_child(framework: str, args: argparse.Namespace) -> dict[str, Any]:
    return common.run_child(
        __file__,
        framework,
        ["--steps", str(args.steps), "--repeats", str(args.repeats), "--cases", *args.cases],
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.only:
        run = run_keras if args.only == "keras" else run_flaxcls
        write_json(args.json_out, run(args.cases, args.steps, args.repeats))
        return
    results = {name: run_child(name, args) for name in FRAMEWORKS}
    ratios = {
        case: results["flaxcls"][case]["images_per_sec"] / results["keras"][case]["images_per_sec"]
        for case in args.cases
    }
    print(f"\n{'case':<24} {'batch':>5} {'Keras img/s':>12} {'flaxcls img/s':>14} {'ratio':>6}")
    for case in args.cases:
        k, f = results["keras"][case], results["flaxcls"][case]
        print(
            f"{case:<24} {k['batch']:>5} {k['images_per_sec']:>12.0f} "
            f"{f['images_per_sec']:>14.0f} {ratios[case]:>5.2f}x"
        )
    write_json(
        args.out,
        {
            "benchmark": "keras_steps",
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": "python benchmarks/keras_steps.py " + " ".join(argv or sys.argv[1:]),
            "machine": machine(),
            "versions": versions(PACKAGES),
            "settings": {"steps": args.steps, "repeats": args.repeats, "cases": CASES},
            "results": results,
            "ratios_flaxcls_over_keras": ratios,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
