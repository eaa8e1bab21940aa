"""Training-step throughput of one compiled step on 1 and on 8 devices, and the sharded step
against a plain `jax.jit(train_step)`.

  python benchmarks/devices.py [--model cifar_resnet20] [--batch-size 128] [--steps 10]

On a CPU the 8 devices are simulated (`--xla_force_host_platform_device_count=8`) on the same
cores, so the 8-device figure shows the cost of partitioning and collectives, not a speed-up.
On a machine with an accelerator the rows run on its devices as they are (set --cpu-devices 0
to skip the simulated rows). Each row runs in its own process; writes
benchmarks/results/devices.json unless --out says otherwise.

Rows: `plain` is `jax.jit(train_step, donate_argnums=0)` with the state and batch on the
default device; `sharded` is the step run.py compiles (NamedSharding in and out, donation)
with the state replicated, `fsdp` the same with large state leaves sharded over the devices.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from common import machine, versions, write_json  # noqa: E402

DEFAULT_OUT = os.path.join(ROOT, "benchmarks", "results", "devices.json")
PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy")
WARMUP_STEPS = 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="cifar_resnet20")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per row")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per row; best kept")
    parser.add_argument("--cpu-devices", type=int, default=8, help="simulated CPU devices")
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--child", help=argparse.SUPPRESS)  # "step:layout" in a child process
    parser.add_argument("--json-out", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def measure(args: argparse.Namespace, step_kind: str, layout: str) -> dict[str, Any]:
    """Images/s of `args.steps` training steps (best of `args.repeats`), after warm-up."""
    import functools

    import jax
    import numpy as np
    import optax

    from flaxcls import train_step
    from flaxcls.core import sharding
    from flaxcls.models import get_model
    from flaxcls.modes.build import init_state

    model = get_model(args.model, num_classes=10)
    shape = (args.image_size, args.image_size, 3)
    tx = optax.sgd(0.01, momentum=0.9)
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.normal(size=(args.batch_size, *shape)).astype(np.float32),
        "label": rng.integers(0, 10, args.batch_size).astype(np.int32),
    }
    if step_kind == "plain":
        state = init_state(model, tx, 0, shape, sharding.make_mesh(jax.devices()[:1]))
        step = jax.jit(train_step, donate_argnums=0)
        batch = jax.device_put(batch)
    else:
        mesh = sharding.make_mesh()
        state = init_state(model, tx, 0, shape, mesh, layout, 2**16)
        state_sharding = jax.tree.map(lambda x: x.sharding, state)
        step = jax.jit(
            functools.partial(train_step),
            in_shardings=(state_sharding, sharding.batch_sharding(mesh)),
            out_shardings=(state_sharding, sharding.replicated(mesh)),
            donate_argnums=0,
        )
        batch = jax.device_put(batch, sharding.batch_sharding(mesh))  # placed once
    for _ in range(WARMUP_STEPS):
        state, sums = step(state, batch)
    jax.block_until_ready(sums)
    best = float("inf")
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(args.steps):
            state, sums = step(state, batch)
        jax.block_until_ready(sums)
        best = min(best, time.perf_counter() - start)
    return {
        "step": step_kind,
        "layout": layout if step_kind == "sharded" else "-",
        "devices": jax.device_count(),
        "platform": jax.devices()[0].platform,
        "device_kind": jax.devices()[0].device_kind,
        "ms_per_step": 1000 * best / args.steps,
        "images_per_sec": args.steps * args.batch_size / best,
    }


def run_child(args: argparse.Namespace, step_kind: str, layout: str, cpu_devices: int) -> dict:
    env = dict(os.environ)
    if cpu_devices:
        env["JAX_PLATFORMS"] = "cpu"
        env["XLA_FLAGS"] = (
            env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={cpu_devices}"
        )
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "row.json")
        command = [sys.executable, os.path.abspath(__file__), "--child", f"{step_kind}:{layout}"]
        command += ["--json-out", out, "--model", args.model, "--batch-size", str(args.batch_size)]
        command += ["--image-size", str(args.image_size), "--steps", str(args.steps)]
        command += ["--repeats", str(args.repeats)]
        subprocess.run(command, check=True, env=env)
        with open(out, encoding="utf-8") as f:
            return json.load(f)


def rows_to_run(args: argparse.Namespace) -> list[tuple[str, str, int]]:
    """(step, layout, simulated CPU devices; 0 = the machine's own devices)."""
    rows = [("plain", "-", 1), ("sharded", "replicated", 1)]
    if args.cpu_devices > 1:
        rows += [("sharded", "replicated", args.cpu_devices), ("sharded", "fsdp", args.cpu_devices)]
    if accelerator_present():
        rows += [("plain", "-", 0), ("sharded", "replicated", 0), ("sharded", "fsdp", 0)]
    return rows


def accelerator_present() -> bool:
    probe = "import jax; print(jax.default_backend())"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    return result.returncode == 0 and result.stdout.strip() not in ("", "cpu")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        step_kind, layout = args.child.split(":")
        write_json(args.json_out, measure(args, step_kind, layout))
        return
    results = []
    for step_kind, layout, cpu_devices in rows_to_run(args):
        results.append(run_child(args, step_kind, layout, cpu_devices))
        print(json.dumps(results[-1]), flush=True)
    baseline = {}
    for r in results:  # each platform's sharded 1-device row is its baseline
        if r["step"] == "sharded" and r["layout"] == "replicated" and r["devices"] == 1:
            baseline[r["platform"]] = r["images_per_sec"]
    print(f"\n{args.model}, global batch {args.batch_size}, {args.image_size}px")
    print(
        f"{'platform':<9} {'devices':>7} {'step':<8} {'layout':<11} {'ms/step':>8} "
        f"{'img/s':>8} {'vs 1-dev sharded':>17}"
    )
    for r in results:
        r["ratio_vs_one_device_sharded"] = r["images_per_sec"] / baseline.get(
            r["platform"], r["images_per_sec"]
        )
        print(
            f"{r['platform']:<9} {r['devices']:>7} {r['step']:<8} {r['layout']:<11} "
            f"{r['ms_per_step']:>8.1f} {r['images_per_sec']:>8.0f} "
            f"{r['ratio_vs_one_device_sharded']:>16.2f}x"
        )
    write_json(
        args.out,
        {
            "benchmark": "devices",
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": machine(),
            "versions": versions(PACKAGES),
            "settings": {k: v for k, v in vars(args).items() if k not in ("child", "json_out")},
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
