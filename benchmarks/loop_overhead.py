"""What the training loop costs: `train_and_evaluate` at several `steps_per_dispatch` against a
bare `for` loop over the same jitted step, on a model small enough that the loop shows.

  python benchmarks/loop_overhead.py [--model mlp] [--batch-size 32] [--steps 3584]
      [--ks 1 8 32] [--data-path DIR] [--out FILE.json]

Prints a table and writes benchmarks/results/loop_overhead.json unless --out says otherwise
(on a GPU: loop_overhead_gpu_<model>.json). Real Fashion-MNIST, held on the device
(`data.on_device`), no augmentation, no validation until the end. In one process, one after
the other:

- device floor: the compiled block of the largest K over pre-placed batches, called again and
  again: the device's time per step with (almost) no host work;
- bare loop: `for` over the same jitted one-step call on one pre-placed batch: a Python
  dispatch per step and nothing else;
- `train_and_evaluate` at each K: the product's loop (host index draws, metric reads, logging),
  its images/s the median of its logged windows after the first (which holds compilation).

Host cost per step is a row's microseconds per step less the device floor's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # `configs` and `flaxcls` import from the repository root

from common import machine, versions, write_json  # noqa: E402

DATA_DIR = "/usr/share/datasets/fashion-mnist"
PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3584, help="training steps per loop")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeats", type=int, default=2, help="best of this many per row")
    parser.add_argument("--data-path", default=DATA_DIR, help="the Fashion-MNIST IDX folder")
    parser.add_argument("--out", help="where the JSON results go")
    return parser.parse_args(argv)


def base_config(args: argparse.Namespace, k: int) -> Any:
    from configs import fashion_mnist

    config = fashion_mnist.get_config()
    config.model.name = args.model
    config.data.source = "idx"
    config.data.path = args.data_path
    config.data.validation_fraction = 0.0
    config.data.on_device = True
    config.batch_size = args.batch_size
    config.eval_batch_size = 1000
    config.num_train_steps = args.steps
    config.steps_per_dispatch = k
    config.log_every_steps = max(1, args.steps // 7)
    config.eval_every_epochs = 1e6  # validation only at the end (and there is no split)
    config.progress_bar = False
    config.compilation_cache_dir = ""
    return config


def device_rows(args: argparse.Namespace) -> dict[str, float]:
    """Seconds per step of the device floor and of the bare loop."""
    import jax

    from flaxcls.core import sharding
    from flaxcls.modes.build import build_run
    from flaxcls.modes.train import compile_steps, next_block

    config = base_config(args, 1)
    mesh = sharding.make_mesh()
    inputs, state, _ = build_run(config, mesh)
    steps = compile_steps(config, mesh, state, inputs)
    p_train, batches = steps.train, steps.batches
    placed = sharding.block_sharding(mesh)
    one = jax.device_put(next_block(batches(0), 1), placed)
    floor_block = max(args.ks)
    many = jax.device_put(next_block(batches(0), floor_block), placed)

    def time_calls(block, calls: int) -> float:
        nonlocal state
        state, sums = p_train(state, block)  # compiles
        jax.block_until_ready(sums)
        best = float("inf")
        for _ in range(max(5, args.repeats)):  # a few seconds each: the best of several
            start = time.perf_counter()
            for _ in range(calls):
                state, sums = p_train(state, block)
            jax.block_until_ready((state, sums))
            best = min(best, time.perf_counter() - start)
        return best

    calls = max(1, args.steps // floor_block)
    floor = time_calls(many, calls) / (calls * floor_block)
    bare = time_calls(one, args.steps) / args.steps
    return {"device_floor": floor, "bare_loop": bare}


def loop_row(args: argparse.Namespace, k: int) -> dict[str, Any]:
    """The product's loop at steps_per_dispatch=k: seconds per step and what else it took."""
    import json

    from flaxcls.modes.train import train_and_evaluate

    best = None
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix=f"loop_k{k}_") as workdir:
            start = time.perf_counter()
            test = train_and_evaluate(base_config(args, k), workdir)
            wall = time.perf_counter() - start
            with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
                rates = [json.loads(line).get("images_per_sec") for line in f]
        rates = [r for r in rates if r]
        rate = statistics.median(rates[1:] if len(rates) > 1 else rates)
        row = {
            "seconds_per_step": args.batch_size / rate,
            "window_images_per_sec": rates,
            "wall_s": wall,
            "test_accuracy": test["accuracy"],
        }
        if best is None or row["seconds_per_step"] < best["seconds_per_step"]:
            best = row
    return best


def host_draw_seconds(args: argparse.Namespace, k: int, calls: int = 50) -> float:
    """Seconds per step the host spends drawing and stacking a block's example indices."""
    from flaxcls.data import build_input
    from flaxcls.modes.train import next_block

    config = base_config(args, k)
    inputs = build_input(
        config.data,
        global_batch_size=config.batch_size,
        eval_batch_size=config.eval_batch_size,
        seed=0,
    )
    batches = inputs.train_indices(0, with_uniforms=False)
    next_block(batches, k)
    start = time.perf_counter()
    for _ in range(calls):
        next_block(batches, k)
    return (time.perf_counter() - start) / (calls * k)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import jax

    platform = jax.devices()[0].platform
    seconds = device_rows(args)
    rows = {
        f"device floor (blocks of {max(args.ks)} pre-placed)": {
            "seconds_per_step": seconds["device_floor"]
        },
        "bare for loop over jax.jit(step)": {"seconds_per_step": seconds["bare_loop"]},
    }
    for k in args.ks:
        row = loop_row(args, k)
        row["host_draw_us_per_step"] = 1e6 * host_draw_seconds(args, k)
        rows[f"train_and_evaluate, steps_per_dispatch={k}"] = row
    floor, bare = seconds["device_floor"], seconds["bare_loop"]
    for row in rows.values():
        s = row["seconds_per_step"]
        row["images_per_sec"] = args.batch_size / s
        row["us_per_step"] = 1e6 * s
        row["host_us_per_step"] = 1e6 * (s - floor)
        row["speed_vs_bare_loop"] = bare / s

    print(f"\n{args.model}, batch {args.batch_size}, {args.steps} steps, {platform}")
    print(f"{'loop':<45} {'images/s':>10} {'us/step':>9} {'host us/step':>13} {'vs bare':>8}")
    for name, r in rows.items():
        print(
            f"{name:<45} {r['images_per_sec']:>10,.0f} {r['us_per_step']:>9.1f} "
            f"{r['host_us_per_step']:>13.1f} {r['speed_vs_bare_loop']:>7.2f}x"
        )
    suffix = "" if platform == "cpu" else f"_{platform}_{args.model}"
    out = args.out or os.path.join(ROOT, "benchmarks", "results", f"loop_overhead{suffix}.json")
    write_json(
        out,
        {
            "benchmark": "loop_overhead",
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": machine(),
            "device": str(jax.devices()[0].device_kind),
            "versions": versions(PACKAGES),
            "settings": {
                "model": args.model,
                "batch_size": args.batch_size,
                "steps": args.steps,
                "ks": args.ks,
                "repeats": args.repeats,
                "data": "fashion_mnist, held on the device, no augmentation",
            },
            "results": rows,
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
