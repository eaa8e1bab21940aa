"""Fashion-MNIST speedrun on one GPU: airbench94 (PyTorch) against flaxcls's fastest recipe.

  pip install airbench   # airbench94's training code, by Keller Jordan; it imports torchvision
  python benchmarks/airbench_fashion.py [--seeds 0 1 2] [--data-path DIR] [--set KEY=VALUE ...]
      [--airbench-epochs E] [--out FILE.json]
  python benchmarks/airbench_fashion.py --tiny   # minutes on a CPU: checks the script end to end

Prints a table and writes benchmarks/results/airbench_fashion_gpu.json unless --out says
otherwise. Every seed of each side trains in a child process of its own, so each pays its own
start-up costs and the two frameworks never share allocators or threads.

airbench94: the `airbench` package's `train94` with its recipe unchanged (its hyperparameters,
9.9 epochs, batch 1024, flip and 2-pixel translate augmentation, mirror + translate test-time
augmentation). Its `CifarLoader` reads a dataset cached as DIR/train.pt and DIR/test.pt, and
`train94` always opens its test set from cifar10/ under the working directory, so the only glue
here writes Fashion-MNIST in that cache format (uint8 NHWC, 28x28 zero-padded to 32x32, the gray
channel repeated three times; int64 labels) to a temporary cifar10/ and trains there. The loader
normalises with airbench's CIFAR-10 mean and std, unchanged. Time runs from the data on the GPU
(the loaders built) to the test accuracy of `airbench.evaluate` at airbench's TTA level (train94
reloads its test set inside that time, as it always does). Before it, `warmup94` (one training
step, airbench's own warm-up: CUDA kernels and cuDNN's algorithm search) is timed apart;
"compile counted" adds it.

flaxcls: configs/fashion_mnist_fast.py (28x28 grayscale, as the IDX files hold it) through
`train_and_evaluate` with data.source="idx", JAX's compilation cache off and steps_per_dispatch=32
(optimiser steps per compiled call); `--set` overrides any of these. Time runs from loading the
data to the test accuracy, compilation included, as recipe_seeds.py times it. Compile seconds are
the wall time JAX spent tracing, lowering and compiling (the union of the spans of its compile
events), which the run waits on; "after compile" is the time less that.

Both clocks start with the runtime up: CUDA's context for PyTorch, JAX's backend for flaxcls.

--tiny: the first 2,048 training and 2,000 test images, 1 epoch on each side, 1 seed, results in
the temporary folder. airbench94 needs CUDA (`make_net94` calls `.cuda()`, `train94` times with
`torch.cuda.Event`); without it --tiny skips that side and says why (a full run stops instead).
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # `configs` and `flaxcls` import from the repository root

import common  # noqa: E402
from common import machine, versions, write_json  # noqa: E402

DATA_DIR = "/usr/share/datasets/fashion-mnist"
DEFAULT_OUT = os.path.join(ROOT, "benchmarks", "results", "airbench_fashion_gpu.json")
FLAXCLS_CONFIG = os.path.join(ROOT, "configs", "fashion_mnist_fast.py")
FRAMEWORKS = ("airbench", "flaxcls")
NAMES = {"airbench": "airbench94 (PyTorch)", "flaxcls": "flaxcls fashion_mnist_fast (JAX)"}
PACKAGES = ("jax", "jaxlib", "flax", "optax", "torch", "torchvision", "airbench", "numpy")
STEPS_PER_DISPATCH = 32
TARGET = 0.94
TINY_TRAIN, TINY_TEST, TINY_EPOCHS = 2048, 2000, 1
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# JAX's compile stages; each reports a time span through jax.monitoring.
COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", help="default 0 1 2 (0 with --tiny)")
    parser.add_argument("--data-path", default=DATA_DIR, help="the Fashion-MNIST IDX folder")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="flaxcls config")
    parser.add_argument(
        "--airbench-epochs",
        type=float,
        help=f"default airbench94's own ({TINY_EPOCHS} with --tiny)",
    )
    parser.add_argument("--tiny", action="store_true", help="a quick end-to-end check")
    parser.add_argument("--out", help="where the JSON results go")
    parser.add_argument("--only", choices=FRAMEWORKS, help="run one framework (child process)")
    parser.add_argument("--json-out", help="with --only: where the child writes its figures")
    args = parser.parse_args(argv)
    if args.only and not (args.json_out and args.seeds and len(args.seeds) == 1):
        parser.error("--only needs --json-out and one seed")
    if args.seeds is None:
        args.seeds = [0] if args.tiny else [0, 1, 2]
    if args.tiny and not args.only:  # the children get these through --airbench-epochs and --set
        args.airbench_epochs = args.airbench_epochs or TINY_EPOCHS
        args.set = [f"num_epochs={float(TINY_EPOCHS)}", *args.set]
    if args.out is None:
        # A tiny check is not a result; it stays out of benchmarks/results.
        tiny_out = os.path.join(tempfile.gettempdir(), "airbench_fashion_tiny.json")
        args.out = tiny_out if args.tiny else DEFAULT_OUT
    return args


# ---------------------------------------------------------------- data (numpy only)
# A few lines of IDX reading here keep JAX out of the PyTorch process and out of the parent.


def _idx_path(directory: str, stem: str) -> str:
    for name in (stem + ".gz", stem):
        if os.path.exists(os.path.join(directory, name)):
            return os.path.join(directory, name)
    raise FileNotFoundError(f"Neither {stem}.gz nor {stem} found in {directory}.")


def read_idx(path: str) -> np.ndarray:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def read_fashion(directory: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels uint8 (N,)) of the `train` or `test` split."""
    images_stem, labels_stem = IDX_FILES[split]
    images = read_idx(_idx_path(directory, images_stem))
    return images, read_idx(_idx_path(directory, labels_stem))


def write_idx(path: str, array: np.ndarray) -> None:
    shape = b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with open(path, "wb") as f:
        f.write(bytes([0, 0, 0x08, array.ndim]) + shape + np.ascontiguousarray(array).tobytes())


def write_tiny_idx(source: str, directory: str) -> str:
    """The first TINY_TRAIN / TINY_TEST images of `source` as IDX files in `directory`, so both
    sides train on the same small subset."""
    for split, n in (("train", TINY_TRAIN), ("test", TINY_TEST)):
        images, labels = read_fashion(source, split)
        images_stem, labels_stem = IDX_FILES[split]
        write_idx(os.path.join(directory, images_stem), images[:n])
        write_idx(os.path.join(directory, labels_stem), labels[:n])
    return directory


def to_airbench_images(images: np.ndarray) -> np.ndarray:
    """(N, 28, 28) -> (N, 32, 32, 3) uint8: CIFAR-10's shape and layout in airbench's cache."""
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2)))
    return np.repeat(padded[..., None], 3, axis=-1)


def write_airbench_cache(directory: str, data_path: str) -> None:
    """train.pt and test.pt as `airbench.CifarLoader` caches CIFAR-10: images, labels, classes."""
    import torch

    os.makedirs(directory, exist_ok=True)
    for split in ("train", "test"):
        images, labels = read_fashion(data_path, split)
        cache = {
            "images": torch.from_numpy(to_airbench_images(images)),
            "labels": torch.from_numpy(labels.astype(np.int64)),
            "classes": list(CLASSES),
        }
        torch.save(cache, os.path.join(directory, f"{split}.pt"))


# ---------------------------------------------------------------- airbench94 (child)


def airbench_missing() -> str:
    """Why airbench94 cannot run here; empty when it can."""
    reasons = []
    try:
        import airbench  # noqa: F401
    except ImportError as error:
        reasons.append(f"the airbench package does not import ({error}); pip install airbench")
    import torch

    if not torch.cuda.is_available():
        reasons.append(
            "airbench94 needs CUDA (make_net94 calls .cuda(), train94 times with "
            "torch.cuda.Event) and this machine has no CUDA device"
        )
    return "; ".join(reasons)


def run_airbench(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    reason = airbench_missing()
    if reason and args.tiny:
        return {"skipped": reason}
    if reason:
        raise SystemExit(f"airbench94: {reason}")
    import airbench
    import torch
    from airbench import lib_airbench94

    hyp = lib_airbench94.hyp
    epochs = args.airbench_epochs or hyp["opt"]["train_epochs"]
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="airbench_fashion_") as tmp:
        write_airbench_cache(os.path.join(tmp, "cifar10"), args.data_path)
        os.chdir(tmp)  # train94 opens its test set at the relative path cifar10/
        try:
            start = time.perf_counter()
            # As train94 builds its loaders when given none.
            train_loader = airbench.CifarLoader(
                "cifar10",
                train=True,
                batch_size=hyp["opt"]["batch_size"],
                aug=hyp["aug"],
                altflip=True,
            )
            test_loader = airbench.CifarLoader("cifar10", train=False, batch_size=2000)
            torch.cuda.synchronize()
            load_s = time.perf_counter() - start

            torch.manual_seed(seed)
            start = time.perf_counter()
            airbench.warmup94(train_loader, epochs=epochs)
            torch.cuda.synchronize()
            warmup_s = time.perf_counter() - start

            torch.manual_seed(seed)
            start = time.perf_counter()
            model = airbench.train94(train_loader, epochs=epochs, verbose=False)
            # evaluate's .item() waits for the GPU, so the clock stops with the answer.
            accuracy = airbench.evaluate(model, test_loader, tta_level=hyp["net"]["tta_level"])
            run_s = time.perf_counter() - start
        finally:
            os.chdir(cwd)
    print(f"airbench94 seed {seed}: test accuracy {accuracy:.4f}, {run_s:.1f} s", flush=True)
    return {
        "seed": seed,
        "device": torch.cuda.get_device_name(),
        "test_accuracy": accuracy,
        "seconds": warmup_s + run_s,
        "compile_s": warmup_s,
        "seconds_after_compile": run_s,
        "load_to_gpu_s": load_s,
        "epochs": epochs,
        "tta_level": hyp["net"]["tta_level"],
        "train_images": len(train_loader.labels),
        "test_images": len(test_loader.labels),
        "normalisation": "airbench's CIFAR-10 mean and std",
    }


# ---------------------------------------------------------------- flaxcls (child)


def flaxcls_overrides(args: argparse.Namespace) -> list[str]:
    """This benchmark's settings, then the user's `--set` (the last of a key wins)."""
    return [
        "data.source='idx'",
        f"data.path={args.data_path!r}",
        "compilation_cache_dir=''",  # every seed compiles: it is part of the time
        f"steps_per_dispatch={STEPS_PER_DISPATCH}",
        *args.set,
    ]


def union_seconds(spans: list[tuple[float, float]]) -> float:
    """Seconds covered by any of the spans (nested compilations are counted once)."""
    total, reached = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reached:
            total += end - max(start, reached)
            reached = end
    return total


def run_flaxcls(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    import jax
    from absl import logging
    from jax import monitoring
    from recipe_seeds import load_config

    from flaxcls.train import train_and_evaluate

    logging.set_verbosity(logging.WARNING)  # orbax logs every file operation at INFO
    config = load_config(FLAXCLS_CONFIG, flaxcls_overrides(args))
    config.seed = seed
    config.progress_bar = False
    spans: list[tuple[float, float]] = []

    def on_span(event: str, start: float, end: float, **kwargs: Any) -> None:
        if event in COMPILE_EVENTS:
            spans.append((start, end))

    monitoring.register_event_time_span_listener(on_span)
    device = jax.devices()[0].device_kind  # brings the backend up before the clock starts
    with tempfile.TemporaryDirectory(prefix="airbench_fashion_flaxcls_") as workdir:
        start = time.perf_counter()
        test = train_and_evaluate(config, workdir)
        wall = time.perf_counter() - start
    compile_s = union_seconds(spans)
    print(f"flaxcls seed {seed}: test accuracy {test['accuracy']:.4f}, {wall:.1f} s", flush=True)
    return {
        "seed": seed,
        "device": device,
        "test_accuracy": float(test["accuracy"]),
        "test_loss": float(test["loss"]),
        "seconds": wall,
        "compile_s": compile_s,
        "seconds_after_compile": wall - compile_s,
        "compile_events": len(spans),  # 0 would mean JAX renamed its events
        "num_epochs": config.num_epochs,
        "steps_per_dispatch": config.steps_per_dispatch,
        "test_images": int(test["num_examples"]),
    }


# ---------------------------------------------------------------- parent: run both, report


def child_args(args: argparse.Namespace, seed: int, data_path: str) -> list[str]:
    flags = ["--seeds", str(seed), "--data-path", data_path]
    if args.tiny:
        flags.append("--tiny")
    if args.airbench_epochs:
        flags += ["--airbench-epochs", str(args.airbench_epochs)]
    if args.set:
        flags += ["--set", *args.set]
    return flags


def summary_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    accuracies = [r["test_accuracy"] for r in runs]
    mean = statistics.mean(accuracies)
    return {
        "mean_test_accuracy": mean,
        "std_test_accuracy": statistics.stdev(accuracies) if len(runs) > 1 else 0.0,
        "min_test_accuracy": min(accuracies),
        "reached_94": mean >= TARGET,
        "mean_seconds": statistics.mean(r["seconds"] for r in runs),
        "mean_compile_s": statistics.mean(r["compile_s"] for r in runs),
        "mean_seconds_after_compile": statistics.mean(r["seconds_after_compile"] for r in runs),
    }


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, float] | None:
    """flaxcls seconds / airbench94 seconds: above 1 means flaxcls took longer."""
    if not all("summary" in results.get(name, {}) for name in FRAMEWORKS):
        return None
    air, flax = results["airbench"]["summary"], results["flaxcls"]["summary"]
    return {
        "seconds": flax["mean_seconds"] / air["mean_seconds"],
        "seconds_after_compile": (
            flax["mean_seconds_after_compile"] / air["mean_seconds_after_compile"]
        ),
    }


def write_results(
    args: argparse.Namespace, argv: list[str] | None, results: dict[str, dict[str, Any]]
) -> None:
    write_json(
        args.out,
        {
            "benchmark": "airbench_fashion",
            "command": "python benchmarks/airbench_fashion.py " + " ".join(argv or sys.argv[1:]),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": machine(),
            "versions": versions(PACKAGES),
            "settings": {
                "data_path": args.data_path,
                "tiny": args.tiny,
                "train_images": TINY_TRAIN if args.tiny else 60_000,
                "test_images": TINY_TEST if args.tiny else 10_000,
                "seeds": args.seeds,
                "flaxcls_config": os.path.relpath(FLAXCLS_CONFIG, ROOT),
                "flaxcls_overrides": flaxcls_overrides(args),
                "airbench_epochs": args.airbench_epochs,
            },
            "results": results,
            "ratios_flaxcls_over_airbench": ratios(results),
        },
    )


def print_table(args: argparse.Namespace, results: dict[str, dict[str, Any]]) -> None:
    size = f"{TINY_TRAIN:,} / {TINY_TEST:,}" if args.tiny else "60,000 / 10,000"
    print(f"\nFashion-MNIST, {size} train / test images, seeds {' '.join(map(str, args.seeds))}")
    print(
        "| framework | device | seeds | mean test acc | min test acc | >= 94% mean | "
        "mean s, compile counted | compile s | mean s after compile |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in FRAMEWORKS:
        result = results.get(name, {})
        if "summary" not in result:
            print(f"| {NAMES[name]} | skipped: {result.get('skipped', 'not run')} |")
            continue
        s, runs = result["summary"], result["runs"]
        print(
            f"| {NAMES[name]} | {runs[0]['device']} | {len(runs)} | "
            f"{s['mean_test_accuracy']:.4f} | {s['min_test_accuracy']:.4f} | "
            f"{'yes' if s['reached_94'] else 'no'} | {s['mean_seconds']:.1f} | "
            f"{s['mean_compile_s']:.1f} | {s['mean_seconds_after_compile']:.1f} |"
        )
    ratio = ratios(results)
    if ratio:
        print(
            f"flaxcls / airbench94 seconds: x{ratio['seconds']:.2f} compile counted, "
            f"x{ratio['seconds_after_compile']:.2f} after compile"
        )
    print("compile s: airbench94's warm-up run; flaxcls's time in JAX tracing and compiling")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.only:
        run = run_airbench if args.only == "airbench" else run_flaxcls
        write_json(args.json_out, run(args, args.seeds[0]))
        return
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="airbench_fashion_tiny_") as tiny_dir:
        data_path = write_tiny_idx(args.data_path, tiny_dir) if args.tiny else args.data_path
        for name in FRAMEWORKS:
            runs = []
            for seed in args.seeds:
                run = common.run_child(__file__, name, child_args(args, seed, data_path))
                if "skipped" in run:
                    print(f"{NAMES[name]}: skipped: {run['skipped']}", flush=True)
                    results[name] = run
                    break
                runs.append(run)
                results[name] = {"summary": summary_of(runs), "runs": runs}
                # Written after every run, so a stopped benchmark keeps what it finished.
                write_results(args, argv, results)
    write_results(args, argv, results)
    print_table(args, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
