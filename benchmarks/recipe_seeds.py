"""A recipe's test accuracy over several seeds, and its time: mean, spread and every run.

  python benchmarks/recipe_seeds.py --config configs/fashion_mnist_fast.py [--seeds 0 1 2]
      [--set num_epochs=6 ...] [--out FILE.json]

Prints a table and writes benchmarks/results/<config name>_seeds.json unless --out says otherwise.
Each seed trains from scratch through `train_and_evaluate` in a fresh workdir. Wall time runs
from loading the data to the test accuracy, compilation included (JAX's compilation cache is
off, so every seed compiles), as a user would time `python run.py`.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # `configs` and `flaxcls` import from the repository root

from common import machine, versions, write_json  # noqa: E402

PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="a configs/*.py file")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides")
    parser.add_argument("--out", help="where the JSON results go")
    return parser.parse_args(argv)


def load_config(path: str, overrides: list[str]):
    """`get_config()` of a config file, with `key.sub=value` overrides (Python literals)."""
    spec = importlib.util.spec_from_file_location("recipe_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.update_from_flattened_dict(dict(_parse_override(item) for item in overrides))
    return config


def _parse_override(item: str) -> tuple[str, object]:
    key, _, text = item.partition("=")
    try:
        return key, ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return key, text  # a bare string


def images_per_sec(workdir: str) -> float:
    """Median training images/s over the logged windows after the first (compilation)."""
    rates = []
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            if "images_per_sec" in record:
                rates.append(record["images_per_sec"])
    return statistics.median(rates[1:] or rates) if rates else float("nan")


def summary_of(runs: list[dict]) -> dict:
    accuracies = [r["test_accuracy"] for r in runs]
    walls = [r["wall_s"] for r in runs]
    return {
        "mean_test_accuracy": statistics.mean(accuracies),
        "std_test_accuracy": statistics.stdev(accuracies) if len(runs) > 1 else 0.0,
        "min_test_accuracy": min(accuracies),
        "mean_wall_s": statistics.mean(walls),
    }


def write_results(
    args: argparse.Namespace, argv: list[str] | None, name: str, runs: list[dict]
) -> str:
    out = args.out or os.path.join(ROOT, "benchmarks", "results", f"{name}_seeds.json")
    write_json(
        out,
        {
            "benchmark": "recipe_seeds",
            "config": os.path.relpath(os.path.abspath(args.config), ROOT),
            "overrides": args.set,
            "command": "python benchmarks/recipe_seeds.py " + " ".join(argv or sys.argv[1:]),
            "machine": machine(),
            "versions": versions(PACKAGES),
            "summary": summary_of(runs),
            "runs": runs,
        },
    )
    return out


def summarize(args: argparse.Namespace, name: str, runs: list[dict]) -> None:
    summary = summary_of(runs)
    print()
    print(f"| {name} | seeds | mean test acc | std | min | mean wall s |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {' '.join(args.set) or 'as configured'} | {len(runs)} | "
        f"{summary['mean_test_accuracy']:.4f} | {summary['std_test_accuracy']:.4f} | "
        f"{summary['min_test_accuracy']:.4f} | {summary['mean_wall_s']:.0f} |"
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from flaxcls.train import train_and_evaluate

    name = os.path.splitext(os.path.basename(args.config))[0]
    runs = []
    for seed in args.seeds:
        config = load_config(args.config, args.set)
        config.seed = seed
        config.progress_bar = False
        config.compilation_cache_dir = ""
        with tempfile.TemporaryDirectory() as workdir:
            start = time.perf_counter()
            test = train_and_evaluate(config, workdir)
            wall = time.perf_counter() - start
            rate = images_per_sec(workdir)
        runs.append(
            {
                "seed": seed,
                "test_accuracy": test["accuracy"],
                "test_loss": test["loss"],
                "wall_s": wall,
                "train_images_per_sec": rate,
            }
        )
        print(f"seed {seed}: test accuracy {test['accuracy']:.4f}, {wall:.0f} s", flush=True)
        # Written after every seed, so a stopped run keeps the seeds it finished.
        out = write_results(args, argv, name, runs)
    summarize(args, name, runs)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
