"""The input pipeline alone against the training step alone: can the host keep the step fed?

  python benchmarks/input_vs_step.py [--config configs/fashion_mnist.py] [--augment none crop_flip]

For each augmentation, images/s of the host pipeline (batches built, nothing trained) and of the
compiled training step on one fixed, device-resident batch (no input at all), and their ratio.
A ratio of 3 or more leaves the step never waiting on input. Writes
benchmarks/results/input_vs_step.json unless --out says otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from common import machine, versions, write_json  # noqa: E402

DEFAULT_OUT = os.path.join(ROOT, "benchmarks", "results", "input_vs_step.json")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=os.path.join(ROOT, "configs", "fashion_mnist.py"))
    parser.add_argument("--augment", nargs="+", default=["none", "crop_flip"])
    parser.add_argument("--batches", type=int, default=200, help="pipeline batches timed")
    parser.add_argument("--steps", type=int, default=100, help="training steps timed")
    parser.add_argument("--out", default=DEFAULT_OUT)
    return parser.parse_args(argv)


def load_config(path: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def build_inputs(config):
    from flaxcls.data import build_input

    return build_input(
        config.data,
        global_batch_size=config.batch_size,
        eval_batch_size=config.eval_batch_size,
        seed=config.seed,
    )


def pipeline_rate(config, batches: int) -> float:
    inputs = build_inputs(config)
    it = inputs.train(0)
    next(it)  # first-use costs (permutation, caches) left out
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * config.batch_size / (time.perf_counter() - start)


def step_rate(config, steps: int) -> float:
    import jax

    from flaxcls.core import sharding
    from flaxcls.core.optim import create_optimizer
    from flaxcls.modes.build import create_model, init_state
    from flaxcls.modes.train import compile_steps, next_block

    inputs = build_inputs(config)
    mesh = sharding.make_mesh()
    model = create_model(config, inputs.info.num_classes)
    tx = create_optimizer(config, inputs.steps_per_epoch(), 10_000)
    state = init_state(model, tx, config.seed, inputs.info.image_shape, mesh)
    p_train = compile_steps(config, mesh, state, inputs).train
    batch = jax.device_put(next_block(inputs.train(0), 1), sharding.block_sharding(mesh))
    for _ in range(3):
        state, sums = p_train(state, batch)
    jax.block_until_ready(sums)
    start = time.perf_counter()
    for _ in range(steps):
        state, sums = p_train(state, batch)
    jax.block_until_ready(sums)
    return steps * config.batch_size / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    config = load_config(args.config)
    step = step_rate(config, args.steps)
    rows = []
    for augment in args.augment:
        config.data.augment = augment
        rate = pipeline_rate(config, args.batches)
        rows.append({"augment": augment, "pipeline_images_per_sec": rate, "ratio": rate / step})
    print(f"\n{os.path.basename(args.config)}: batch {config.batch_size}, {config.model.name}")
    print(f"training step alone: {step:,.0f} images/s")
    print(f"{'augment':<12} {'pipeline img/s':>15} {'pipeline / step':>16}")
    for r in rows:
        print(f"{r['augment']:<12} {r['pipeline_images_per_sec']:>15,.0f} {r['ratio']:>15.1f}x")
    write_json(
        args.out,
        {
            "benchmark": "input_vs_step",
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": machine(),
            "versions": versions(("jax", "jaxlib", "flax", "numpy")),
            "settings": {**vars(args), "config": os.path.relpath(args.config, ROOT)},
            "step_images_per_sec": step,
            "results": rows,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
