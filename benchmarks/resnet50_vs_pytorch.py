"""ResNet-50 training throughput on one accelerator: flaxcls vs PyTorch, side by side.

  python benchmarks/resnet50_vs_pytorch.py [--batch 256] [--steps 50] [--out FILE.json]

flaxcls: `resnet50` in bfloat16 (float32 parameters), `flaxcls.train_step` under `jax.jit` with
the state donated, Nesterov SGD and label smoothing as configs/imagenet_resnet50.py.
PyTorch: torchvision's `resnet50`, channels_last, bfloat16 autocast, `torch.compile`, the same
optimiser and loss. Both train on the same synthetic 224x224 batch held on the device, so the
figure is the step alone. MFU counts the training FLOPs of the step's HLO (`cost_analysis`
of the lowered step: 23.8 GFLOP per 224px image, 3x the forward pass), used for both sides,
against the chip's dense bf16 peak (`--peak_tflops`; known chips are looked up by name).
Prints a table and writes benchmarks/results/resnet50_vs_pytorch.json.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from common import machine, versions, write_json  # noqa: E402

PACKAGES = ("jax", "jaxlib", "flax", "optax", "torch", "torchvision", "numpy")

# Dense bf16 tensor-core peaks (vendor datasheets, SXM parts), TFLOP/s.
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L4": 121.0, "V100": 125.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=50, help="timed steps per framework")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps after compiling")
    parser.add_argument("--peak_tflops", type=float, default=0.0, help="0: look up by name")
    parser.add_argument("--no_torch_compile", action="store_true", help="eager PyTorch")
    parser.add_argument("--skip_torch", action="store_true")
    parser.add_argument(
        "--out", default=os.path.join(ROOT, "benchmarks", "results", "resnet50_vs_pytorch.json")
    )
    return parser.parse_args(argv)


def xla_flops(lowered) -> float:
    """FLOPs of the step's HLO before optimisation: the compiled GPU module's cost analysis
    leaves out convolutions that run as cuDNN calls, so it would undercount."""
    analysis = lowered.cost_analysis()
    if isinstance(analysis, list | tuple):  # older jax: one dict per computation
        analysis = analysis[0]
    return float(analysis.get("flops", 0.0))


def time_steps(step, state, batch, steps: int, warmup: int, sync) -> tuple[float, object]:
    for _ in range(warmup):
        state = step(state, batch)
    sync(state)
    start = time.perf_counter()
    for _ in range(steps):
        state = step(state, batch)
    sync(state)
    return time.perf_counter() - start, state


def bench_flaxcls(args: argparse.Namespace) -> dict:
    import jax
    import jax.numpy as jnp

    from configs import imagenet_resnet50
    from flaxcls import sharding
    from flaxcls.optim import create_optimizer
    from flaxcls.runs import create_model, init_state
    from flaxcls.steps import train_step

    config = imagenet_resnet50.get_config()
    config.batch_size = args.batch
    config.optimizer.learning_rate = 0.1 * args.batch / 256
    model = create_model(config, num_classes=1000)
    tx = create_optimizer(config, steps_per_epoch=1000, total_steps=100_000)
    mesh = sharding.make_mesh(jax.devices()[:1])
    shape = (args.image_size, args.image_size, 3)
    state = init_state(model, tx, 0, shape, mesh)
    rng = jax.random.PRNGKey(1)
    batch = {
        "image": jax.random.normal(rng, (args.batch, *shape), jnp.float32),
        "label": jax.random.randint(rng, (args.batch,), 0, 1000),
    }

    def step(state, batch):
        return train_step(state, batch, label_smoothing=config.label_smoothing)

    jitted = jax.jit(step, donate_argnums=0)
    start = time.perf_counter()
    lowered = jitted.lower(state, batch)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    flops = xla_flops(lowered)

    def run(state, batch):
        state, _ = compiled(state, batch)
        return state

    def sync(state):
        jax.block_until_ready(state.params)

    seconds, _ = time_steps(run, state, batch, args.steps, args.warmup, sync)
    return {
        "framework": "flaxcls (JAX)",
        "device": jax.devices()[0].device_kind,
        "compile_s": compile_s,
        "step_ms": 1000 * seconds / args.steps,
        "images_per_sec": args.batch * args.steps / seconds,
        "flops_per_step": flops,
    }


def bench_pytorch(args: argparse.Namespace) -> dict:
    import torch
    import torchvision

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    model = torchvision.models.resnet50(weights=None).to(device)
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=0.1 * args.batch / 256,
        momentum=0.9,
        nesterov=True,
        weight_decay=1e-4,
    )
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    compiled = model if args.no_torch_compile else torch.compile(model)
    generator = torch.Generator(device=device).manual_seed(1)
    size = args.image_size
    images = torch.randn(args.batch, 3, size, size, device=device, generator=generator)
    images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 1000, (args.batch,), device=device, generator=generator)
    autocast = functools.partial(torch.autocast, device_type=device, dtype=torch.bfloat16)

    def run(state, batch):
        with autocast():
            loss = criterion(compiled(batch[0]), batch[1])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    def sync(_):
        if device == "cuda":
            torch.cuda.synchronize()

    model.train()
    start = time.perf_counter()
    run(None, (images, labels))  # torch.compile compiles on the first call
    sync(None)
    compile_s = time.perf_counter() - start
    seconds, _ = time_steps(run, None, (images, labels), args.steps, args.warmup, sync)
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    return {
        "framework": "PyTorch (torchvision, AMP bf16, channels_last"
        + ("" if args.no_torch_compile else ", torch.compile")
        + ")",
        "device": name,
        "compile_s": compile_s,
        "step_ms": 1000 * seconds / args.steps,
        "images_per_sec": args.batch * args.steps / seconds,
    }


def peak_tflops(args: argparse.Namespace, device: str) -> float:
    if args.peak_tflops:
        return args.peak_tflops
    for name, peak in PEAK_BF16_TFLOPS.items():
        if name in device:
            return peak
    return 0.0


def with_mfu(rows: list[dict], args: argparse.Namespace) -> float:
    """Adds achieved model TFLOP/s and MFU to every row; returns the peak used."""
    flops = rows[0]["flops_per_step"]
    peak = peak_tflops(args, rows[0]["device"])
    for row in rows:
        achieved = flops * row["images_per_sec"] / args.batch
        row["model_tflops_per_sec"] = achieved / 1e12
        row["mfu"] = achieved / (peak * 1e12) if peak else None
    return peak


def write_results(args: argparse.Namespace, argv: list[str] | None, rows: list[dict]) -> None:
    peak = with_mfu(rows, args)
    ratio = rows[0]["images_per_sec"] / rows[1]["images_per_sec"] if len(rows) > 1 else None
    write_json(
        args.out,
        {
            "benchmark": "resnet50_vs_pytorch",
            "command": "python benchmarks/resnet50_vs_pytorch.py " + " ".join(argv or sys.argv[1:]),
            "batch": args.batch,
            "image_size": args.image_size,
            "timed_steps": args.steps,
            "peak_bf16_tflops": peak,
            "training_flops_per_image": rows[0]["flops_per_step"] / args.batch,
            "machine": machine(),
            "versions": versions(PACKAGES),
            "rows": rows,
            "ratio_flaxcls_over_pytorch": ratio,
        },
    )


def print_table(args: argparse.Namespace, rows: list[dict]) -> None:
    print()
    print(f"ResNet-50 training, batch {args.batch}, {args.image_size}px, {rows[0]['device']}")
    print("| framework | images/s | step ms | MFU | compile s |")
    print("|---|---|---|---|---|")
    for row in rows:
        mfu = f"{100 * row['mfu']:.1f}%" if row["mfu"] is not None else "n/a"
        print(
            f"| {row['framework']} | {row['images_per_sec']:.0f} | {row['step_ms']:.1f} | "
            f"{mfu} | {row['compile_s']:.0f} |"
        )
    if len(rows) > 1:
        print(f"flaxcls / PyTorch: {rows[0]['images_per_sec'] / rows[1]['images_per_sec']:.2f}x")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rows = [bench_flaxcls(args)]
    print(f"flaxcls: {rows[0]['images_per_sec']:.0f} images/s", flush=True)
    write_results(args, argv, rows)  # kept if the PyTorch side fails or is stopped
    if not args.skip_torch:
        rows.append(bench_pytorch(args))
        print(f"PyTorch: {rows[1]['images_per_sec']:.0f} images/s", flush=True)
        write_results(args, argv, rows)
    print_table(args, rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
