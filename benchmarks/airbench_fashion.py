"""Fashion-MNIST (or CIFAR-10) speedrun on one GPU: airbench94 (PyTorch) against flaxcls's
recipes, side by side.

  pip install airbench   # airbench94's training code, by Keller Jordan; it imports torchvision
  python benchmarks/airbench_fashion.py [--sides airbench fast speedrun] [--seeds 0 1 2]
      [--data-path DIR] [--set KEY=VALUE ...] [--compile-cache DIR] [--airbench-epochs E]
      [--out FILE.json]
  python benchmarks/airbench_fashion.py --dataset cifar10 --data-path DIR   # DIR holds
      CIFAR-10's python batches (data_batch_1..5, test_batch, or cifar-10-batches-py/ of them)
  python benchmarks/airbench_fashion.py --tiny   # minutes on a CPU: checks the script end to end

Sides: `airbench` (airbench94), `fast` (configs/fashion_mnist_fast.py, or cifar10_fast.py) and
`speedrun` (configs/fashion_mnist_speedrun.py, or cifar10_speedrun.py: airbench94's recipe as
flaxcls parts; Fashion-MNIST at its own 28x28x1, where airbench sees it padded to 32x32x3).

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

flaxcls: the side's config (28x28 grayscale, as the IDX files hold it; CIFAR-10 from an .npz
written from the batches) through `train_and_evaluate`, JAX's compilation cache off unless
`--compile-cache DIR` (then the first seed fills it and the others read it, as a user's second
run would), steps_per_dispatch=32 for `fast` (the speedrun config picks it by platform: 32 on a
GPU); `--set` overrides any of these, on both flaxcls sides. Time runs from loading the
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
DATASETS = ("fashion_mnist", "cifar10")
SIDES = ("airbench", "fast", "speedrun")
FLAXCLS_SIDES = ("fast", "speedrun")
NAMES = {
    "airbench": "airbench94 (PyTorch)",
    "fast": "flaxcls {dataset}_fast (JAX)",
    "speedrun": "flaxcls {dataset}_speedrun (JAX)",
}
PACKAGES = ("jax", "jaxlib", "flax", "optax", "torch", "torchvision", "airbench", "numpy")
STEPS_PER_DISPATCH = 32
TARGET = 0.94
TINY_TRAIN, TINY_TEST, TINY_EPOCHS = 2048, 2000, 1
FULL_SIZES = {"fashion_mnist": (60_000, 10_000), "cifar10": (50_000, 10_000)}
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# JAX's compile stages; each reports a time span through jax.monitoring.
COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", help="default 0 1 2 (0 with --tiny)")
    parser.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    parser.add_argument("--dataset", choices=DATASETS, default="fashion_mnist")
    parser.add_argument(
        "--data-path",
        help=f"the Fashion-MNIST IDX folder (default {DATA_DIR}), or CIFAR-10's python batches",
    )
    parser.add_argument(
        "--compile-cache", default="", help="JAX's compilation cache for the flaxcls seeds"
    )
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="flaxcls config")
    parser.add_argument(
        "--airbench-epochs",
        type=float,
        help=f"default airbench94's own ({TINY_EPOCHS} with --tiny)",
    )
    parser.add_argument("--tiny", action="store_true", help="a quick end-to-end check")
    parser.add_argument("--out", help="where the JSON results go")
    parser.add_argument("--only", choices=SIDES, help="run one side (child process)")
    parser.add_argument("--json-out", help="with --only: where the child writes its figures")
    args = parser.parse_args(argv)
    if args.only and not (args.json_out and args.seeds and len(args.seeds) == 1):
        parser.error("--only needs --json-out and one seed")
    if args.seeds is None:
        args.seeds = [0] if args.tiny else [0, 1, 2]
    if args.data_path is None:
        if args.dataset != "fashion_mnist":
            parser.error("--dataset cifar10 needs --data-path (CIFAR-10's python batches)")
        args.data_path = DATA_DIR
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


def read_cifar_batches(directory: str) -> dict[str, np.ndarray]:
    """CIFAR-10's python batches (as its website ships them) as uint8 NHWC arrays."""
    import pickle

    nested = os.path.join(directory, "cifar-10-batches-py")
    directory = nested if os.path.isdir(nested) else directory

    def load(name: str) -> tuple[np.ndarray, np.ndarray]:
        with open(os.path.join(directory, name), "rb") as f:
            batch = pickle.load(f, encoding="bytes")  # the files are pickles of numpy arrays
        images = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return images, np.asarray(batch[b"labels"], np.int64)

    train = [load(f"data_batch_{i}") for i in range(1, 6)]
    test_images, test_labels = load("test_batch")
    return {
        "images": np.concatenate([x for x, _ in train]),
        "labels": np.concatenate([y for _, y in train]),
        "test_images": test_images,
        "test_labels": test_labels,
    }


def prepare_data(args: argparse.Namespace, directory: str) -> str:
    """The data path the children read: the IDX folder (a subset with --tiny) or, for
    CIFAR-10, an .npz written from its batches (uint8 images, int labels, train and test)."""
    if args.dataset == "fashion_mnist":
        return write_tiny_idx(args.data_path, directory) if args.tiny else args.data_path
    arrays = read_cifar_batches(args.data_path)
    if args.tiny:
        arrays = {k: v[: TINY_TEST if "test" in k else TINY_TRAIN] for k, v in arrays.items()}
    path = os.path.join(directory, "cifar10.npz")
    np.savez(path, **arrays)
    return path


def read_split(data_path: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images, labels) of `split` from what `prepare_data` returned."""
    if not data_path.endswith(".npz"):
        return read_fashion(data_path, split)
    prefix = "test_" if split == "test" else ""
    with np.load(data_path) as arrays:
        return arrays[prefix + "images"], arrays[prefix + "labels"]


def to_airbench_images(images: np.ndarray) -> np.ndarray:
    """(N, 28, 28) -> (N, 32, 32, 3) uint8: CIFAR-10's shape and layout in airbench's cache
    (CIFAR-10's own images pass unchanged)."""
    if images.ndim == 4:
        return images
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2)))
    return np.repeat(padded[..., None], 3, axis=-1)


def write_airbench_cache(directory: str, data_path: str) -> None:
    """train.pt and test.pt as `airbench.CifarLoader` caches CIFAR-10: images, labels, classes."""
    import torch

    os.makedirs(directory, exist_ok=True)
    for split in ("train", "test"):
        images, labels = read_split(data_path, split)
        cache = {
            "images": torch.from_numpy(to_airbench_images(images)),
            "labels": torch.from_numpy(labels.astype(np.int64)),
            "classes": [str(k) for k in range(10)],  # CifarLoader keeps them; nothing reads them
        }
        torch.save(cache, os.path.join(directory, f"{split}.pt"))


# ---------------------------------------------------------------- airbench94 (child)


def airbench_missing() -> str:
    """Why airbench94 cannot run here; empty when it can."""
    reasons = []
    try:
        import airbench  # noqa: F401
    except Exception as error:  # also a torchvision built for another torch (RuntimeError)
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


def flaxcls_config(args: argparse.Namespace, side: str) -> str:
    return os.path.join(ROOT, "configs", f"{args.dataset}_{side}.py")


def flaxcls_overrides(args: argparse.Namespace, side: str) -> list[str]:
    """This benchmark's settings, then the user's `--set` (the last of a key wins)."""
    source = "npz" if args.data_path.endswith(".npz") else "idx"
    # Without --compile-cache every seed compiles: it is part of the time.
    dispatch = [f"steps_per_dispatch={STEPS_PER_DISPATCH}"] if side == "fast" else []
    return [
        f"data.source={source!r}",
        f"data.path={args.data_path!r}",
        f"compilation_cache_dir={args.compile_cache!r}",
        *dispatch,
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
    side = args.only
    import jax
    from absl import logging
    from jax import monitoring
    from recipe_seeds import load_config

    from flaxcls.modes.train import train_and_evaluate

    logging.set_verbosity(logging.WARNING)  # orbax logs every file operation at INFO
    config = load_config(flaxcls_config(args, side), flaxcls_overrides(args, side))
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
        "steps_per_dispatch": config.steps_per_dispatch,  # 0: by platform
        "compile_cache": args.compile_cache,
        "test_images": int(test["num_examples"]),
    }


# ---------------------------------------------------------------- parent: run both, report


def child_args(args: argparse.Namespace, seed: int, data_path: str) -> list[str]:
    flags = ["--seeds", str(seed), "--data-path", data_path, "--dataset", args.dataset]
    if args.compile_cache:
        flags += ["--compile-cache", args.compile_cache]
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


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per flaxcls side, its seconds / airbench94's (above 1: flaxcls took longer) and its
    mean accuracy less airbench94's."""
    air = results.get("airbench", {}).get("summary")
    out = {}
    for side in FLAXCLS_SIDES:
        flax = results.get(side, {}).get("summary")
        if air is None or flax is None:
            continue
        out[side] = {
            "seconds": flax["mean_seconds"] / air["mean_seconds"],
            "seconds_after_compile": (
                flax["mean_seconds_after_compile"] / air["mean_seconds_after_compile"]
            ),
            "accuracy_minus_airbench": flax["mean_test_accuracy"] - air["mean_test_accuracy"],
        }
    return out


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
                "dataset": args.dataset,
                "data_path": args.data_path,
                "tiny": args.tiny,
                "train_images": TINY_TRAIN if args.tiny else FULL_SIZES[args.dataset][0],
                "test_images": TINY_TEST if args.tiny else FULL_SIZES[args.dataset][1],
                "seeds": args.seeds,
                "sides": args.sides,
                "flaxcls_configs": {
                    side: os.path.relpath(flaxcls_config(args, side), ROOT)
                    for side in FLAXCLS_SIDES
                    if side in args.sides
                },
                "flaxcls_overrides": {
                    side: flaxcls_overrides(args, side)
                    for side in FLAXCLS_SIDES
                    if side in args.sides
                },
                "airbench_epochs": args.airbench_epochs,
            },
            "results": results,
            "ratios_flaxcls_over_airbench": ratios(results),
        },
    )


def side_name(args: argparse.Namespace, side: str) -> str:
    return NAMES[side].format(dataset=args.dataset)


def print_table(args: argparse.Namespace, results: dict[str, dict[str, Any]]) -> None:
    train, test = (TINY_TRAIN, TINY_TEST) if args.tiny else FULL_SIZES[args.dataset]
    print(
        f"\n{args.dataset}, {train:,} / {test:,} train / test images, "
        f"seeds {' '.join(map(str, args.seeds))}"
    )
    print(
        "| side | device | seeds | mean test acc | min test acc | >= 94% mean | "
        "mean s, compile counted | compile s | mean s after compile |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for side in args.sides:
        result = results.get(side, {})
        if "summary" not in result:
            print(f"| {side_name(args, side)} | skipped: {result.get('skipped', 'not run')} |")
            continue
        s, runs = result["summary"], result["runs"]
        print(
            f"| {side_name(args, side)} | {runs[0]['device']} | {len(runs)} | "
            f"{s['mean_test_accuracy']:.4f} | {s['min_test_accuracy']:.4f} | "
            f"{'yes' if s['reached_94'] else 'no'} | {s['mean_seconds']:.1f} | "
            f"{s['mean_compile_s']:.1f} | {s['mean_seconds_after_compile']:.1f} |"
        )
    for side, ratio in ratios(results).items():
        print(
            f"{side_name(args, side)} / airbench94 seconds: x{ratio['seconds']:.2f} compile "
            f"counted, x{ratio['seconds_after_compile']:.2f} after compile; accuracy "
            f"{100 * ratio['accuracy_minus_airbench']:+.2f} points"
        )
    print("compile s: airbench94's warm-up run; flaxcls's time in JAX tracing and compiling")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.only:
        run = run_airbench if args.only == "airbench" else run_flaxcls
        write_json(args.json_out, run(args, args.seeds[0]))
        return
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="airbench_fashion_data_") as data_dir:
        data_path = prepare_data(args, data_dir)
        for side in args.sides:
            runs = []
            for seed in args.seeds:
                run = common.run_child(__file__, side, child_args(args, seed, data_path))
                if "skipped" in run:
                    print(f"{side_name(args, side)}: skipped: {run['skipped']}", flush=True)
                    results[side] = run
                    break
                runs.append(run)
                results[side] = {"summary": summary_of(runs), "runs": runs}
                # Written after every run, so a stopped benchmark keeps what it finished.
                write_results(args, argv, results)
    write_results(args, argv, results)
    print_table(args, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
