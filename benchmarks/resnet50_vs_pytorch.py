"""ResNet-50 training throughput on one accelerator: flaxcls vs PyTorch, side by side.

  python benchmarks/resnet50_vs_pytorch.py [--batch 256 512] [--xla_flags default pdl ...|all]
      [--variant today pool_slices ...|all] [--profile] [--steps 50] [--skip_torch]
      [--out FILE.json]
  python benchmarks/resnet50_vs_pytorch.py --tiny    # every path at 32px, in minutes on a CPU

flaxcls: `resnet50` in bfloat16 (float32 parameters), `flaxcls.train_step` under `jax.jit` with
the state donated, Nesterov SGD and label smoothing as configs/imagenet_resnet50.py.
PyTorch: torchvision's `resnet50`, channels_last, bfloat16 autocast, `torch.compile`, the same
optimiser and loss. Both train on the same synthetic batch held on the device, so the figure
is the step alone; `--batch` lists the per-device batch sizes to measure.

Each XLA flag set named by `--xla_flags` (defined in flaxcls/testing/xla_flags.py; `all` for every
one) and the PyTorch side run in processes of their own: XLA reads its flags once per
process, and the frameworks share no allocator. A flag set whose process fails (a flag this
jaxlib does not know, an out-of-memory batch) is recorded with its error; the others go on.

`--variant` names ResNet-50 variants of `flaxcls.models.resnet.RESNET50_VARIANTS` (`all` for
every one): constructor options that change how the network is computed, not what (a max pool
without select-and-scatter, a stem conv over channel-padded images, one-pass BatchNorm
statistics, and `best`, their combination). Every flag set x variant pair is a process of its
own; each row records its `xla_flags` and `variant`, and a setting's name is the flag set,
followed by `+variant` for any variant but `today`.

MFU counts model FLOPs: 2 x the multiply-adds of today's ResNet-50's convolutions and dense
layer at `--image_size` (read from its jaxpr at batch 1: 4.1 G multiply-adds at 224px), 3x
for the forward and backward passes (24.6 GFLOP per image), for every row, PyTorch's and the
variants' included (a padded stem's extra zeros are not model FLOPs), against the chip's
dense bf16 peak (`--peak_tflops`; known chips are looked up by name). XLA's own count
(`cost_analysis` of the step, when this jax gives one) is kept beside it.

`--profile` traces `--profile_steps` steps of flaxcls's step (the first batch, in every
variant's process of the first flag set) with `jax.profiler` into `--profile_dir`
(TensorBoard's profile tab, Perfetto) and prints the ten kernels that take the most device
time per step, per variant.

Prints a table and writes benchmarks/results/resnet50_vs_pytorch.json (with `--tiny`:
runs/resnet50_vs_pytorch_tiny.json).
"""

from __future__ import annotations

import argparse
import functools
import glob
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from common import machine, versions, write_json  # noqa: E402

from flaxcls.models.resnet import RESNET50_VARIANTS  # noqa: E402
from flaxcls.testing import xla_flags  # noqa: E402

PACKAGES = ("jax", "jaxlib", "flax", "optax", "torch", "torchvision", "numpy")
DEFAULT_OUT = os.path.join(ROOT, "benchmarks", "results", "resnet50_vs_pytorch.json")
TINY_OUT = os.path.join(ROOT, "runs", "resnet50_vs_pytorch_tiny.json")
FLAXCLS, PYTORCH = "flaxcls (JAX)", "PyTorch"

# Dense bf16 tensor-core peaks (vendor datasheets, SXM parts), TFLOP/s.
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L4": 121.0, "V100": 125.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[256], help="per-device sizes")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=50, help="timed steps per framework")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps after compiling")
    parser.add_argument(
        "--xla_flags",
        nargs="+",
        default=["default"],
        choices=[*xla_flags.GPU_FLAG_SETS, "all"],
        help="flag sets of flaxcls/testing/xla_flags.py, each in its own process",
    )
    parser.add_argument(
        "--variant",
        nargs="+",
        default=["today"],
        choices=[*RESNET50_VARIANTS, "all"],
        help="ResNet-50 variants of flaxcls.models.resnet.RESNET50_VARIANTS, each in its own "
        "process (per flag set)",
    )
    parser.add_argument("--profile", action="store_true", help="top-10 kernels of the step")
    parser.add_argument("--profile_steps", type=int, default=5)
    parser.add_argument("--profile_dir", default=os.path.join(ROOT, "runs", "profile_resnet50"))
    parser.add_argument("--peak_tflops", type=float, default=0.0, help="0: look up by name")
    parser.add_argument("--no_torch_compile", action="store_true", help="eager PyTorch")
    parser.add_argument("--skip_torch", action="store_true")
    parser.add_argument("--child_timeout", type=float, default=300.0, help="seconds per process")
    parser.add_argument(
        "--tiny", action="store_true", help="32px, batch 4, 2 steps, eager PyTorch: a CPU check"
    )
    parser.add_argument("--out", default="")
    # A child process: one framework (and, for flaxcls, the current XLA_FLAGS), every batch.
    parser.add_argument("--only", choices=["flaxcls", "pytorch"], help=argparse.SUPPRESS)
    parser.add_argument("--flag_set", default="default", help=argparse.SUPPRESS)
    parser.add_argument("--json_out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tiny:
        args.image_size, args.batch, args.steps, args.warmup = 32, [4], 2, 1
        args.no_torch_compile, args.profile_steps = True, 2
        args.child_timeout = max(args.child_timeout, 1800.0)  # ResNet-50 compiles slowly on CPUs
    if "all" in args.xla_flags:
        args.xla_flags = list(xla_flags.GPU_FLAG_SETS)
    if "all" in args.variant:
        args.variant = list(RESNET50_VARIANTS)
    args.out = args.out or (TINY_OUT if args.tiny else DEFAULT_OUT)
    return args


def xla_flops(*stages) -> float | None:
    """XLA's FLOP count of the step, from the first of `stages` (lowered, compiled) whose
    `cost_analysis` has one; None when none has (jax 0.11 on a GPU returns None for the lowered
    step). The lowered HLO comes first: the compiled GPU module's count leaves out convolutions
    that run as cuDNN calls."""
    for stage in stages:
        try:
            analysis = stage.cost_analysis()
        except Exception:  # some backends do not implement it
            continue
        if isinstance(analysis, list | tuple):  # older jax: one dict per computation
            analysis = analysis[0] if analysis else None
        if analysis and analysis.get("flops"):
            return float(analysis["flops"])
    return None


def _sub_jaxprs(value) -> list:
    """The jaxprs inside an equation's parameter (jit, custom_vjp, cond branches...)."""
    if isinstance(value, list | tuple):
        return [j for v in value for j in _sub_jaxprs(v)]
    value = getattr(value, "jaxpr", value)  # a ClosedJaxpr holds its Jaxpr
    return [value] if hasattr(value, "eqns") else []


def jaxpr_macs(jaxpr) -> int:
    """Multiply-adds of the convolutions and dot products in a jaxpr, nested ones included."""
    total = 0
    for eqn in jaxpr.eqns:
        out = eqn.outvars[0].aval
        if eqn.primitive.name == "conv_general_dilated":
            kernel = eqn.invars[1].aval  # one output element: kernel size / output features
            out_features = kernel.shape[eqn.params["dimension_numbers"].rhs_spec[0]]
            total += math.prod(out.shape) * math.prod(kernel.shape) // out_features
        elif eqn.primitive.name == "dot_general":
            (contracted, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval
            total += math.prod(out.shape) * math.prod(lhs.shape[d] for d in contracted)
        for value in eqn.params.values():
            total += sum(jaxpr_macs(sub) for sub in _sub_jaxprs(value))
    return total


def training_flops_per_image(model, image_size: int) -> float:
    """Model FLOPs of one training image: 2 x the forward pass's multiply-adds (one image, eval
    mode: BatchNorm and the rest are not counted), x3 for forward and backward."""
    import jax
    import jax.numpy as jnp

    image = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
    variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), image)
    jaxpr = jax.make_jaxpr(functools.partial(model.apply, train=False))(variables, image)
    return 3 * 2 * float(jaxpr_macs(jaxpr.jaxpr))


def time_steps(step, state, batch, steps: int, warmup: int, sync) -> tuple[float, object]:
    for _ in range(warmup):
        state = step(state, batch)
    sync(state)
    start = time.perf_counter()
    for _ in range(steps):
        state = step(state, batch)
    sync(state)
    return time.perf_counter() - start, state


def flaxcls_step(args: argparse.Namespace, batch_size: int):
    """The jitted step, its state and a synthetic batch on the device, as the config trains,
    for the model variant `args.variant[0]`; and today's model, whose FLOPs MFU counts."""
    import jax
    import jax.numpy as jnp

    from configs import imagenet_resnet50
    from flaxcls.core import sharding
    from flaxcls.core.optim import create_optimizer
    from flaxcls.core.steps import train_step
    from flaxcls.modes.build import create_model, init_state

    config = imagenet_resnet50.get_config()
    config.batch_size = batch_size
    config.optimizer.learning_rate = 0.1 * batch_size / 256
    today = create_model(config, num_classes=1000)
    model = today.clone(**RESNET50_VARIANTS[args.variant[0]])
    tx = create_optimizer(config, steps_per_epoch=1000, total_steps=100_000)
    mesh = sharding.make_mesh(jax.devices()[:1])
    shape = (args.image_size, args.image_size, 3)
    state = init_state(model, tx, 0, shape, mesh)
    rng = jax.random.PRNGKey(1)
    batch = {
        "image": jax.random.normal(rng, (batch_size, *shape), jnp.float32),
        "label": jax.random.randint(rng, (batch_size,), 0, 1000),
    }

    def step(state, batch):
        return train_step(state, batch, label_smoothing=config.label_smoothing)

    return jax.jit(step, donate_argnums=0), state, batch, today


def bench_flaxcls(args: argparse.Namespace) -> dict:
    import jax

    rows, top = [], None
    variant = args.variant[0]
    for i, batch_size in enumerate(args.batch):
        jitted, state, batch, today = flaxcls_step(args, batch_size)
        start = time.perf_counter()
        lowered = jitted.lower(state, batch)
        compiled = lowered.compile()
        compile_s = time.perf_counter() - start

        def run(state, batch, compiled=compiled):
            state, _ = compiled(state, batch)
            return state

        def sync(state):
            jax.block_until_ready(state.params)

        seconds, state = time_steps(run, state, batch, args.steps, args.warmup, sync)
        counted = xla_flops(lowered, compiled)
        rows.append(
            {
                "framework": FLAXCLS,
                "xla_flags": args.flag_set,
                "variant": variant,
                "variant_options": RESNET50_VARIANTS[variant],
                "batch": batch_size,
                "device": jax.devices()[0].device_kind,
                "compile_s": compile_s,
                "step_ms": 1000 * seconds / args.steps,
                "images_per_sec": batch_size * args.steps / seconds,
                "flops_per_image": training_flops_per_image(today, args.image_size),
                "xla_flops_per_image": counted / batch_size if counted else None,
            }
        )
        print(
            f"flaxcls [{setting(rows[-1])}] batch {batch_size}: "
            f"{rows[-1]['images_per_sec']:.0f} images/s",
            flush=True,
        )
        if args.profile and i == 0:
            try:  # a profiler that cannot start must not cost the measurements
                top = profile(run, state, batch, sync, args, variant)
            except Exception as e:
                print(f"profile failed: {e!r}", file=sys.stderr, flush=True)
                top = {"error": repr(e)}
        del state, batch, compiled
    return {"rows": rows, "top_kernels": top}


def profile(run, state, batch, sync, args: argparse.Namespace, variant: str) -> dict:
    """A `jax.profiler` trace of `profile_steps` steps, and its ten longest kernels per step."""
    import jax

    directory = os.path.abspath(os.path.join(args.profile_dir, variant))
    with jax.profiler.trace(directory):
        for _ in range(args.profile_steps):
            state = run(state, batch)
        sync(state)
    traces = glob.glob(os.path.join(directory, "plugins", "profile", "*", "*.xplane.pb"))
    kernels = kernel_times(max(traces, key=os.path.getmtime), args.profile_steps)
    total = sum(k["ms_per_step"] for k in kernels)
    print_kernels(kernels, args.batch[0], total, variant)
    return {
        "trace_dir": directory,
        "steps": args.profile_steps,
        "kernel_ms_per_step": total,
        "kernels": kernels[:10],
    }


def kernel_times(xplane_path: str, steps: int) -> list[dict]:
    """Per kernel (event name on the device's streams): calls and milliseconds per step, longest
    first. Without a device plane (a CPU backend) the host's XLA op events stand in."""
    from jax.profiler import ProfileData

    data = ProfileData.from_file(xplane_path)
    planes = [p for p in data.planes if p.name.startswith("/device:")]
    if not planes:
        planes = [p for p in data.planes if p.name.startswith("/host:")]
    totals: dict[str, list] = {}
    for plane in planes:
        lines = list(plane.lines)
        streams = [line for line in lines if line.name.startswith("Stream")]
        for line in streams or lines:
            if line.name.startswith(("XLA Modules", "Steps", "Framework", "Source")):
                continue  # derived timelines repeat the kernels' time
            for event in line.events:
                if not streams and not _is_xla_op(event):
                    continue
                entry = totals.setdefault(event.name, [0.0, 0, _stat(event, "hlo_op")])
                entry[0] += event.duration_ns
                entry[1] += 1
    busy = sum(ns for ns, _, _ in totals.values()) or 1.0
    kernels = [
        {
            "kernel": name,
            "hlo_op": op,
            "calls_per_step": calls / steps,
            "ms_per_step": ns / 1e6 / steps,
            "share": ns / busy,
        }
        for name, (ns, calls, op) in totals.items()
    ]
    return sorted(kernels, key=lambda k: -k["ms_per_step"])


def _stat(event, name: str) -> str:
    for key, value in getattr(event, "stats", ()):
        if key == name:
            return str(value)
    return ""


def _is_xla_op(event) -> bool:
    # XLA:CPU marks each thunk it runs with the HLO op it came from.
    return bool(_stat(event, "hlo_op") or _stat(event, "hlo_module"))


def print_kernels(kernels: list[dict], batch_size: int, total: float, variant: str) -> None:
    print(
        f"\nTop kernels of flaxcls's step ({variant}, batch {batch_size}): "
        f"{total:.2f} ms of kernels a step"
    )
    print("| kernel | HLO op | calls/step | ms/step | share |")
    print("|---|---|---|---|---|")
    for k in kernels[:10]:
        name = k["kernel"] if len(k["kernel"]) <= 70 else k["kernel"][:67] + "..."
        print(
            f"| {name} | {k['hlo_op']} | {k['calls_per_step']:.0f} | {k['ms_per_step']:.3f} | "
            f"{100 * k['share']:.1f}% |"
        )


def bench_pytorch(args: argparse.Namespace) -> dict:
    import torch
    import torchvision

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    autocast = functools.partial(torch.autocast, device_type=device, dtype=torch.bfloat16)
    rows = []
    for batch_size in args.batch:
        model = torchvision.models.resnet50(weights=None).to(device)
        model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(
            model.parameters(),
            lr=0.1 * batch_size / 256,
            momentum=0.9,
            nesterov=True,
            weight_decay=1e-4,
        )
        criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
        # One static graph per batch size, as flaxcls compiles one step per shape.
        compiled = model if args.no_torch_compile else torch.compile(model, dynamic=False)
        generator = torch.Generator(device=device).manual_seed(1)
        size = args.image_size
        images = torch.randn(batch_size, 3, size, size, device=device, generator=generator)
        images = images.contiguous(memory_format=torch.channels_last)
        labels = torch.randint(0, 1000, (batch_size,), device=device, generator=generator)

        def run(state, batch, compiled=compiled, criterion=criterion, optimizer=optimizer):
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
        rows.append(
            {
                "framework": PYTORCH
                + " (torchvision, AMP bf16, channels_last"
                + ("" if args.no_torch_compile else ", torch.compile")
                + ")",
                "batch": batch_size,
                "device": name,
                "compile_s": compile_s,
                "step_ms": 1000 * seconds / args.steps,
                "images_per_sec": batch_size * args.steps / seconds,
            }
        )
        print(f"PyTorch batch {batch_size}: {rows[-1]['images_per_sec']:.0f} images/s", flush=True)
        del model, optimizer, compiled, images, labels
        if device == "cuda":
            torch.cuda.empty_cache()
    return {"rows": rows}


CHILDREN = {"flaxcls": bench_flaxcls, "pytorch": bench_pytorch}


def child_args(args: argparse.Namespace) -> list[str]:
    """The flags a child process needs to measure what this process was asked for."""
    out = ["--batch", *map(str, args.batch), "--image_size", str(args.image_size)]
    out += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    out += ["--profile_steps", str(args.profile_steps), "--profile_dir", args.profile_dir]
    return out + (["--no_torch_compile"] if args.no_torch_compile else [])


def run_child(framework: str, extra: list[str], env: dict, timeout: float) -> dict:
    """One framework in a fresh interpreter; its figures, or {'error': ...} when it failed."""
    with tempfile.TemporaryDirectory(prefix=f"{framework}_") as tmp:
        out = os.path.join(tmp, "result.json")
        command = [sys.executable, os.path.abspath(__file__), "--only", framework, *extra]
        command += ["--json_out", out]
        print(f"== {' '.join(command[1:])}", flush=True)
        env = {**env, "TF_CPP_MIN_LOG_LEVEL": env.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        try:
            done = subprocess.run(
                command, env=env, stderr=subprocess.PIPE, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
        if done.returncode or not os.path.exists(out):
            tail = done.stderr.strip().splitlines()[-15:]
            print("\n".join(tail), file=sys.stderr, flush=True)
            return {"error": tail[-1] if tail else f"exit status {done.returncode}"}
        with open(out, encoding="utf-8") as f:
            return json.load(f)


def peak_tflops(args: argparse.Namespace, device: str) -> float:
    if args.peak_tflops:
        return args.peak_tflops
    for name, peak in PEAK_BF16_TFLOPS.items():
        if name in device:
            return peak
    return 0.0


def with_mfu(rows: list[dict], args: argparse.Namespace) -> tuple[float, float]:
    """Adds achieved model TFLOP/s and MFU to every measured row, from today's ResNet-50's
    FLOPs per image; returns (FLOPs per image, peak TFLOP/s used)."""
    measured = [r for r in rows if "images_per_sec" in r]
    counted = [r["flops_per_image"] for r in measured if r.get("flops_per_image")]
    flops = counted[0] if counted else 0.0
    peak = peak_tflops(args, measured[0]["device"]) if measured else 0.0
    for row in measured:
        achieved = flops * row["images_per_sec"]
        row["model_tflops_per_sec"] = achieved / 1e12 if flops else None
        row["mfu"] = achieved / (peak * 1e12) if peak and flops else None
    return flops, peak


def setting(row: dict) -> str:
    """A flaxcls row's flag set, and its model variant unless that is today's model."""
    variant = row.get("variant", "today")
    return row["xla_flags"] + ("" if variant == "today" else f"+{variant}")


def ratios(rows: list[dict]) -> dict[str, dict]:
    """Per batch: PyTorch's images/s, each setting's flaxcls/PyTorch ratio and the best one."""
    out = {}
    for batch in sorted({r["batch"] for r in rows if "images_per_sec" in r}):
        at = [r for r in rows if r.get("batch") == batch and "images_per_sec" in r]
        torch_rows = [r for r in at if r["framework"].startswith(PYTORCH)]
        flax_rows = {setting(r): r["images_per_sec"] for r in at if r["framework"] == FLAXCLS}
        entry: dict = {"flaxcls_images_per_sec": flax_rows}
        if flax_rows:
            best = max(flax_rows, key=flax_rows.get)
            entry["best_setting"] = best
            if "default" in flax_rows:
                entry["best_over_default"] = flax_rows[best] / flax_rows["default"]
        if torch_rows:
            reference = torch_rows[0]["images_per_sec"]
            entry["pytorch_images_per_sec"] = reference
            entry["flaxcls_over_pytorch"] = {k: v / reference for k, v in flax_rows.items()}
        out[str(batch)] = entry
    return out


def write_results(args, argv, rows: list[dict], top: dict[str, dict]) -> None:
    flops, peak = with_mfu(rows, args)
    write_json(
        args.out,
        {
            "benchmark": "resnet50_vs_pytorch",
            "command": "python benchmarks/resnet50_vs_pytorch.py "
            + " ".join(sys.argv[1:] if argv is None else argv),
            "batches": args.batch,
            "image_size": args.image_size,
            "timed_steps": args.steps,
            "xla_flag_sets": {name: xla_flags.GPU_FLAG_SETS[name] for name in args.xla_flags},
            "variants": {name: RESNET50_VARIANTS[name] for name in args.variant},
            "inherited_xla_flags": os.environ.get("XLA_FLAGS", ""),
            "peak_bf16_tflops": peak,
            "training_flops_per_image": flops,
            "flops_source": "2 x the multiply-adds of the convolutions and dense layer in the "
            "jaxpr of today's ResNet-50 (eval mode, one image), x3 for forward and backward; "
            "used for every row (xla_flops_per_image: XLA's cost_analysis, where it has one)",
            "machine": machine(),
            "versions": versions(PACKAGES),
            "rows": rows,
            "ratios": ratios(rows),
            "top_kernels": top,  # by setting
        },
    )


def print_table(args: argparse.Namespace, rows: list[dict]) -> None:
    device = next((r["device"] for r in rows if "device" in r), "?")
    print(f"\nResNet-50 training, {args.image_size}px, {device}")
    print("| framework | XLA flags | variant | batch | images/s | step ms | MFU | compile s |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        head = f"| {row['framework']} | {row.get('xla_flags', '')} | {row.get('variant', '')} |"
        if "error" in row:
            print(f"{head} | failed: {row['error'][:80]} | | | |")
            continue
        mfu = f"{100 * row['mfu']:.1f}%" if row.get("mfu") is not None else "n/a"
        print(
            f"{head} {row['batch']} | {row['images_per_sec']:.0f} | "
            f"{row['step_ms']:.1f} | {mfu} | {row['compile_s']:.0f} |"
        )
    for batch, entry in ratios(rows).items():
        for name, ratio in entry.get("flaxcls_over_pytorch", {}).items():
            print(f"batch {batch}, flaxcls [{name}] / PyTorch: {ratio:.2f}x")


def torch_missing() -> str:
    """Why the PyTorch side cannot run here ('' when it can): checked without importing it."""
    missing = [p for p in ("torch", "torchvision") if importlib.util.find_spec(p) is None]
    return f"not installed: {', '.join(missing)}" if missing else ""


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.only:
        result = CHILDREN[args.only](args)
        write_json(args.json_out, result)
        return
    rows: list[dict] = []
    top: dict[str, dict] = {}
    for k, name in enumerate(args.xla_flags):
        profiled = args.profile and k == 0
        env = xla_flags.environment(name)
        if profiled:  # XLA:CPU names its ops in traces only when asked
            env["XLA_FLAGS"] = xla_flags.merged(
                ["--xla_cpu_enable_xprof_traceme=true"], env.get("XLA_FLAGS", "")
            )
        for variant in args.variant:
            extra = child_args(args) + ["--flag_set", name, "--variant", variant]
            extra += ["--profile"] if profiled else []
            result = run_child("flaxcls", extra, env, args.child_timeout)
            failed = {"framework": FLAXCLS, "xla_flags": name, "variant": variant}
            if "error" in result:
                rows.append({**failed, "error": result["error"]})
            else:
                rows += result["rows"]
                if result.get("top_kernels"):
                    top[setting(failed)] = result["top_kernels"]
            write_results(args, argv, rows, top)  # kept if a later process fails or is stopped
    if not args.skip_torch:
        missing = torch_missing()
        result = (
            {"error": missing}
            if missing
            else run_child("pytorch", child_args(args), dict(os.environ), args.child_timeout)
        )
        rows += result.get("rows", [{"framework": PYTORCH, "error": result.get("error", "")}])
        write_results(args, argv, rows, top)
    print_table(args, rows)
    for name, kernels in top.items():
        if "kernels" in kernels:
            print_kernels(kernels["kernels"], args.batch[0], kernels["kernel_ms_per_step"], name)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
