"""Every open GPU question as one prepared command: the speedrun, the ResNet-50 variants, the
Fashion-MNIST 97% search. Run it as it is on whatever GPU a session is lent.

  python benchmarks/gpu_plan.py [--parts speedrun resnet50 search97 test97] [--data-path DIR]
      [--out DIR]
  python benchmarks/gpu_plan.py --tiny   # every part end to end on a CPU, at tiny sizes

Each part runs the project's own benchmark scripts in processes of its own, under its own
time limit, and writes its JSON and log to `--out` (default `$OUT`, else runs/gpu_plan) the
moment it ends, so a call that is cut keeps what finished. Before starting, the plan prints
how long each chosen part should take (estimated from the H200 figures of 2026-12-04) and
skips a part that would not fit in `--budget_s`. `plan.json` in `--out` says what ran.

The parts (estimates on one H200; a session has about 13 minutes of GPU time and one call
at most 10, so the default split is two calls: `--parts speedrun resnet50`, then
`--parts search97 test97`):
- speedrun (~3.5 min): `airbench_fashion.py --sides airbench speedrun`, 5 seeds each, on the
  real Fashion-MNIST: airbench94 against configs/fashion_mnist_speedrun.py, with JAX's
  compilation cache shared by the flaxcls seeds (the first compiles); then 3 seeds of the
  config in float32 (what bfloat16 costs in accuracy, and saves in time).
- resnet50 (~6 min): `resnet50_vs_pytorch.py --variant all --profile` at batch 256, 30 timed
  steps, each variant in a fresh process with its top-10 kernels, and the PyTorch row.
- search97 (~5 min): SEARCH_VARIANTS of configs/fashion_mnist_97.py side by side on the one
  GPU (a share of its memory each), trained on 90% of the training set and compared on the
  held-out 10% (`recipe_seeds.py --validation`; the test set is never read).
- test97 (~4 min): the best variant of search97's JSON (from `--out`), seeds 0 and 1 on all
  60,000 training images, test accuracy: run after search97, in the same call if time is left
  or in the next.

On the GPU machine (no internet): carry `.whl/` (ml_collections, dm-pix, airbench wheels) and
`runs/fashion-mnist/` (the IDX files), as benchmarks/README.md says; the plan installs the
wheels into /tmp/site itself and passes them to every part.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")
DATA_DIRS = (os.path.join(ROOT, "runs", "fashion-mnist"), "/usr/share/datasets/fashion-mnist")
WHEELS, SITE = os.path.join(ROOT, ".whl"), "/tmp/site"
CONFIG_97 = os.path.join(ROOT, "configs", "fashion_mnist_97.py")
# Each is configs/fashion_mnist_97.py (WRN-16-8, SAM, 40 epochs: 95.47% test, seed 0, 133 s
# on an H200) with these overrides; equal compute unless said.
SEARCH_VARIANTS: dict[str, list[str]] = {
    "sam_40ep": [],  # the config as it is
    "no_sam_80ep": ["optimizer.sam_rho=0.0", "num_epochs=80.0"],  # SAM's second pass as epochs
    "randaugment_2x9": ["data.randaugment_ops=2", "data.randaugment_magnitude=9.0"],
    "wrn28_10_12ep": ["model.name=wide_resnet28_10", "num_epochs=12.0"],  # 3.4x per image
}
VALIDATION = ["data.validation_fraction=0.1", "eval_every_epochs=5.0"]


@dataclasses.dataclass
class Context:
    out: str
    data: str  # the Fashion-MNIST IDX folder
    recipe_data: str  # the same, or with --tiny a few hundred images for the 97% recipes
    tiny: bool
    env: dict[str, str]
    python: str = sys.executable


@dataclasses.dataclass(frozen=True)
class Part:
    """A part: its commands (run one after another, or all at once), estimated seconds on
    an H200 and its hard limit."""

    estimate_s: float
    limit_s: float
    commands: Callable[[Context], list[list[str]]]
    concurrent: bool = False
    mem_fraction: float = 0.0  # > 0: each concurrent process's share of the GPU memory


def speedrun(ctx: Context) -> list[list[str]]:
    """airbench94 and the speedrun config, 5 seeds each; then 3 seeds of the config computing in
    float32 (airbench computes in float16, the config in bfloat16: what does that cost?)."""
    seeds = ["0"] if ctx.tiny else ["0", "1", "2", "3", "4"]

    def command(sides: list[str], seeds: list[str], out: str, *extra: str) -> list[str]:
        args = [ctx.python, os.path.join(BENCH, "airbench_fashion.py"), "--sides", *sides]
        args += ["--seeds", *seeds, "--data-path", ctx.data]
        args += ["--compile-cache", os.path.join(tempfile.gettempdir(), "gpu_plan_jax_cache")]
        args += ["--out", os.path.join(ctx.out, out), *extra]
        return args + (["--tiny"] if ctx.tiny else [])

    return [
        command(["airbench", "speedrun"], seeds, "speedrun.json"),
        command(["speedrun"], seeds[:3], "speedrun_float32.json", "--set", "model.dtype='float32'"),
    ]


def resnet50(ctx: Context) -> list[list[str]]:
    command = [ctx.python, os.path.join(BENCH, "resnet50_vs_pytorch.py"), "--variant", "all"]
    command += ["--profile", "--profile_dir", os.path.join(tempfile.gettempdir(), "gpu_plan_rn")]
    command += ["--out", os.path.join(ctx.out, "resnet50_variants.json")]
    if ctx.tiny:
        return [command + ["--tiny", "--skip_torch"]]
    return [command + ["--batch", "256", "--steps", "30"]]


def _recipe(ctx: Context, name: str, seeds: list[str], overrides: list[str], budget: float):
    command = [ctx.python, os.path.join(BENCH, "recipe_seeds.py"), "--config", CONFIG_97]
    command += ["--seeds", *seeds, "--budget_s", str(budget)]
    command += ["--out", os.path.join(ctx.out, f"{name}.json")]
    tiny = ["num_train_steps=2", "batch_size=16", "eval_batch_size=100"] if ctx.tiny else []
    # recipe_seeds passes each as run.py's --config.KEY=VALUE: plain strings, no quotes
    return command + ["--set", f"data.path={ctx.recipe_data}", *overrides, *tiny]


def search97(ctx: Context) -> list[list[str]]:
    budget = PARTS["search97"].limit_s - 20
    return [
        _recipe(ctx, f"search97_{name}", ["0"], [*VALIDATION, *overrides], budget)
        + ["--validation"]
        for name, overrides in SEARCH_VARIANTS.items()
    ]


def best_variant(out: str) -> tuple[str, float] | None:
    """The search97 variant with the highest validation accuracy in `out`, and that accuracy."""
    best = None
    for name in SEARCH_VARIANTS:
        path = os.path.join(out, f"search97_{name}.json")
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as f:
            summary = json.load(f).get("summary", {})
        accuracy = summary.get("mean_val_accuracy")
        if accuracy is not None and (best is None or accuracy > best[1]):
            best = (name, accuracy)
    return best


def test97(ctx: Context) -> list[list[str]]:
    best = best_variant(ctx.out)
    if best is None:
        print("test97: no finished search97 variant in --out; run search97 first", flush=True)
        return []
    print(f"test97: {best[0]} (validation accuracy {best[1]:.4f}), seeds 0 and 1", flush=True)
    budget = PARTS["test97"].limit_s - 20
    return [_recipe(ctx, "test97", ["0", "1"], SEARCH_VARIANTS[best[0]], budget)]


PARTS: dict[str, Part] = {
    # airbench94: 5.8 s warm-up + 3.1 s a seed + ~5 s of process start; the speedrun config
    # about as long, once compiled (~10 s, the first seed only); then 3 float32 seeds.
    "speedrun": Part(205.0, 230.0, speedrun),
    # Each variant's process ~45 s (start, 17 s compile, 35 steps, profile), PyTorch's ~80 s.
    "resnet50": Part(330.0, 350.0, resnet50),
    # 4 variants of 40 epochs-equivalent (88 s each alone at 24,574 images/s) sharing the GPU.
    "search97": Part(300.0, 330.0, search97, concurrent=True, mem_fraction=0.2),
    # Two seeds one after the other, the second reusing the first's compiled steps.
    "test97": Part(240.0, 270.0, test97),
}
TINY_LIMIT_S = 900.0  # every part on a CPU


def install_wheels(env: dict[str, str]) -> None:
    """The carried wheels (.whl/) into /tmp/site, on every part's PYTHONPATH."""
    wheels = sorted(glob.glob(os.path.join(WHEELS, "*.whl")))
    if not wheels:
        return
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
    pip += ["--no-compile", "--upgrade", "--target", SITE, *wheels]
    subprocess.run(pip, check=True)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SITE, env.get("PYTHONPATH", "")) if p)


def tiny_data(directory: str, source: str, train: int = 320, test: int = 100) -> str:
    """The first `train` and `test` images of `source` as IDX files in `directory`."""
    sys.path.insert(0, BENCH)
    from airbench_fashion import IDX_FILES, read_fashion, write_idx

    for split, n in (("train", train), ("test", test)):
        images, labels = read_fashion(source, split)
        for stem, array in zip(IDX_FILES[split], (images[:n], labels[:n]), strict=True):
            write_idx(os.path.join(directory, stem), array)
    return directory


def run_part(name: str, part: Part, ctx: Context) -> dict:
    """The part's commands under its time limit; its log beside its JSON in `ctx.out`."""
    limit = TINY_LIMIT_S if ctx.tiny else part.limit_s
    log_path = os.path.join(ctx.out, f"{name}.log")
    start = time.perf_counter()
    commands = part.commands(ctx)
    env = dict(ctx.env)
    if part.concurrent and part.mem_fraction and not ctx.tiny:
        env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = str(part.mem_fraction)
    status = "done"
    with open(log_path, "a", encoding="utf-8") as log:
        batches = [commands] if part.concurrent else [[c] for c in commands]
        for batch in batches:
            for command in batch:
                log.write("$ " + " ".join(command) + "\n")
            log.flush()
            processes = [
                subprocess.Popen(c, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
                for c in batch
            ]
            for process in processes:
                remaining = max(limit - (time.perf_counter() - start), 1.0)
                try:
                    process.wait(timeout=remaining)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                    status = f"cut at its {limit:.0f} s limit"
                if process.returncode and status == "done":
                    status = f"a command exited with {process.returncode} (see {name}.log)"
    seconds = time.perf_counter() - start
    files = sorted(glob.glob(os.path.join(ctx.out, f"{name}*.json")))
    summaries = {os.path.basename(f): summary_of(f) for f in files}
    if status == "done" and any(s.get("seeds_finished") == 0 for s in summaries.values()):
        status = f"a recipe finished no seed (see {name}.log)"
    print(f"== {name}: {status} in {seconds:.0f} s; files: {', '.join(summaries) or 'none'}")
    return {
        "status": status,
        "seconds": round(seconds, 1),
        "summaries": summaries,
        "commands": commands,
    }


def summary_of(path: str) -> dict:
    """The `summary` a benchmark's JSON holds (recipe_seeds, airbench_fashion's per side)."""
    try:
        with open(path, encoding="utf-8") as f:
            result = json.load(f)
    except (OSError, ValueError) as error:
        return {"unreadable": str(error)}
    if "summary" in result:
        return result["summary"]
    sides = result.get("results", {})
    return {side: r.get("summary", r) for side, r in sides.items() if isinstance(r, dict)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    parser.add_argument("--data-path", help="the Fashion-MNIST IDX folder")
    default_out = os.environ.get("OUT") or os.path.join(ROOT, "runs", "gpu_plan")
    parser.add_argument("--out", default=default_out, help="where the files go")
    parser.add_argument("--budget_s", type=float, default=540.0, help="the call's time")
    parser.add_argument("--tiny", action="store_true", help="every part on a CPU, tiny sizes")
    args = parser.parse_args(argv)
    if args.data_path is None:
        args.data_path = next((d for d in DATA_DIRS if os.path.isdir(d)), None)
        if args.data_path is None:
            parser.error(f"no Fashion-MNIST IDX folder in {' or '.join(DATA_DIRS)}: --data-path")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    install_wheels(env)
    chosen, planned = [], 0.0
    for name in args.parts:
        estimate = PARTS[name].estimate_s
        fits = args.tiny or planned + estimate <= args.budget_s
        note = "" if fits else " (skipped: over --budget_s)"
        print(f"{name}: ~{estimate / 60:.1f} min on an H200{note}")
        if fits:
            chosen.append(name)
            planned += estimate
    print(f"planned: ~{planned / 60:.1f} min of {args.budget_s / 60:.1f}", flush=True)
    record = {"parts": {}, "argv": sys.argv[1:], "tiny": args.tiny}
    with tempfile.TemporaryDirectory(prefix="gpu_plan_") as tmp:
        recipe_data = tiny_data(tmp, args.data_path) if args.tiny else args.data_path
        ctx = Context(args.out, args.data_path, recipe_data, args.tiny, env)
        for name in chosen:
            record["parts"][name] = run_part(name, PARTS[name], ctx)
            with open(os.path.join(args.out, "plan.json"), "w", encoding="utf-8") as f:
                json.dump(record, f, indent=2)
    failed = [n for n, r in record["parts"].items() if r["status"] != "done"]
    verdict = "all parts done" if not failed else "not done: " + ", ".join(failed)
    print(f"wrote {args.out}/plan.json; {verdict}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
