"""XLA:CPU's optional kernel libraries and fusions, measured on flaxcls's training steps.

  python benchmarks/xla_cpu_flags.py [--steps 20] [--repeats 3] [--out FILE.json]

Prints a table and writes benchmarks/results/xla_cpu_flags.json unless --out says otherwise.
Each flag set runs in a fresh process (XLA reads XLA_FLAGS once, when the backend starts) and
times the jitted training step of each case on one batch already on the device: the best of
`--repeats` runs of `--steps` steps after a warm-up (compilation left out). The ratio is the
flag set's images/s over the defaults'; any XLA_FLAGS of the calling shell are left out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from common import machine, versions, write_json  # noqa: E402

DEFAULT_OUT = os.path.join(ROOT, "benchmarks", "results", "xla_cpu_flags.json")
PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy")
# name -> (model, image shape, batch size, optimizer)
CASES = {
    "seed_cnn_28x28x1": ("seed_cnn", (28, 28, 1), 64, "adam"),
    "fast_cnn_small_28x28x1": ("fast_cnn_small", (28, 28, 1), 128, "sgd"),
    "mlp_28x28x1": ("mlp", (28, 28, 1), 64, "adam"),
}
FLAG_SETS = {
    "default": "",
    "xnnpack off": "--xla_cpu_use_xnnpack=false",
    "xnn graph fusion greedy": "--xla_cpu_experimental_xnn_graph_fusion_mode="
    "XNN_GRAPH_FUSION_MODE_GREEDY",
    "xnn fusion dot,eltwise,reduce": "--xla_cpu_experimental_xnn_fusion_type=dot,eltwise,reduce",
    "onednn": "--xla_cpu_use_onednn=true",
    "onednn fusion dot,eltwise": "--xla_cpu_use_onednn=true "
    "--xla_cpu_experimental_onednn_fusion_type=dot,eltwise",
    "no multi-thread eigen": "--xla_cpu_multi_thread_eigen=false",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--flag-sets", nargs="+", choices=list(FLAG_SETS), default=list(FLAG_SETS))
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--child", help="(internal) time the cases under the current XLA_FLAGS")
    return parser.parse_args(argv)


def time_case(case: str, steps: int, repeats: int) -> float:
    """Images/s of the jitted training step of `case` on one on-device batch."""
    import jax
    import numpy as np
    import optax

    from flaxcls import create_train_state, get_model, train_step

    name, shape, batch, optimizer = CASES[case]
    model = get_model(name, num_classes=10)
    tx = optax.adam(1e-3) if optimizer == "adam" else optax.sgd(0.05, 0.9, nesterov=True)
    state = create_train_state(model, tx, jax.random.PRNGKey(0), shape)
    rng = np.random.default_rng(0)
    data = {
        "image": jax.device_put(rng.normal(size=(batch, *shape)).astype(np.float32)),
        "label": jax.device_put(rng.integers(0, 10, batch).astype(np.int32)),
    }
    step = jax.jit(train_step, donate_argnums=0)
    state, sums = step(state, data)
    jax.block_until_ready(sums)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            state, sums = step(state, data)
        jax.block_until_ready((state, sums))
        best = min(best, time.perf_counter() - start)
    return steps * batch / best


def run_flag_set(flags: str, args: argparse.Namespace) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    command = [sys.executable, os.path.abspath(__file__), "--child", ",".join(args.cases)]
    command += ["--steps", str(args.steps), "--repeats", str(args.repeats)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        rates = {case: time_case(case, args.steps, args.repeats) for case in args.child.split(",")}
        print(json.dumps(rates))
        return
    results = {}
    for name in args.flag_sets:
        print(f"== {name}: XLA_FLAGS={FLAG_SETS[name]!r}", flush=True)
        results[name] = run_flag_set(FLAG_SETS[name], args)
    default = results.get("default", {})
    print(f"\n{'flags':<32}" + "".join(f"{case:>26}" for case in args.cases))
    for name, rates in results.items():
        cells = []
        for case in args.cases:
            rate = rates.get(case)
            if rate is None:
                cells.append(f"{'failed':>26}")
                continue
            ratio = f" ({rate / default[case]:.2f}x)" if case in default else ""
            cells.append(f"{rate:>17,.0f}{ratio:>9}")
        print(f"{name:<32}" + "".join(cells))
    write_json(
        args.out,
        {
            "benchmark": "xla_cpu_flags",
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": machine(),
            "versions": versions(PACKAGES),
            "settings": {"steps": args.steps, "repeats": args.repeats, "flag_sets": FLAG_SETS},
            "images_per_sec": results,
            "ratio_to_default": {
                name: {c: r[c] / default[c] for c in args.cases if c in r and c in default}
                for name, r in results.items()
            },
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
