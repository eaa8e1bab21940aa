"""A recipe's test accuracy over several seeds, and its time: mean, spread and every run; with
`--ensemble`, the seeds' ensemble as rows of its own.

  python benchmarks/recipe_seeds.py --config configs/fashion_mnist_fast.py [--seeds 0 1 2]
      [--set num_epochs=6 ...] [--out FILE.json] [--budget_s S] [--concurrent] [--ensemble]
      [--validation] [--workdir DIR]

Prints a table and writes benchmarks/results/<config name>_seeds.json unless --out says otherwise
(rewritten after every seed, so a stopped call keeps what finished). Each seed trains from
scratch as `python run.py --config ... --config.seed=S` in a process of its own and a fresh
workdir; `--set key=value` becomes `--config.key=value`. Wall time runs from the process's start
to its test accuracy: start-up, data loading, compilation and testing included, as a user would
time `python run.py`. The seeds of one call share a fresh JAX compilation cache, so the first
seed compiles and later ones reuse its executables (`compile_cache` in the JSON says so).

`--concurrent` starts every seed at once on the same accelerators (each process may take a
share of the GPU memory, not the 75% JAX takes by default); otherwise they run one after
another. `--budget_s` bounds the whole call: at `budget_s` (less the time kept for the
ensemble) the running seeds get SIGTERM, save a checkpoint and stop; they are recorded with
the step they reached and no accuracy, the finished seeds as usual. `--ensemble` then runs
`run.py --mode=evaluate --workdir SEED0 --ensemble=SEED1,... --checkpoint=latest` on the
finished seeds and records its "ensemble of k" rows without and with flip TTA under
`ensemble`, apart from the single-model rows and summary. `--validation` is for choosing a
recipe: it needs `data.validation_fraction` > 0 and reports the last validation accuracy (and
evaluates the ensemble on the validation split) where it would report the test set's, which
it never reads.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # `configs` and `flaxcls` import from the repository root

from common import machine, versions, write_json  # noqa: E402

PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy")
RUN_PY = os.path.join(ROOT, "run.py")
STOP_GRACE_S = 60.0  # after SIGTERM, a seed saves and exits within this, or is killed
POLL_S = 1.0
PROGRESS_EVERY_S = 30.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="a configs/*.py file")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides")
    parser.add_argument("--out", help="where the JSON results go")
    parser.add_argument(
        "--budget_s", type=float, default=0.0, help="stop the seeds so the call ends by then"
    )
    parser.add_argument(
        "--ensemble_reserve_s",
        type=float,
        default=75.0,
        help="with --budget_s and --ensemble: seconds kept for the ensemble evaluation",
    )
    parser.add_argument("--concurrent", action="store_true", help="all seeds at once")
    parser.add_argument("--ensemble", action="store_true", help="evaluate the seeds' ensemble")
    parser.add_argument(
        "--validation", action="store_true", help="report validation, never test, accuracy"
    )
    parser.add_argument("--workdir", help="keep the seeds' runs here (default: a temp dir)")
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


def read_metrics(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def images_per_sec(workdir: str) -> float:
    """Median training images/s over the logged windows after the first (compilation)."""
    rates = [r["images_per_sec"] for r in read_metrics(workdir) if "images_per_sec" in r]
    return statistics.median(rates[1:] or rates) if rates else float("nan")


def _last(records: list[dict], key: str) -> float | None:
    values = [r[key] for r in records if key in r]
    return values[-1] if values else None


class Seed:
    """One seed's `run.py` process, its workdir and log."""

    def __init__(self, seed: int, args: argparse.Namespace, root: str, cache: str):
        self.seed = seed
        self.workdir = os.path.join(root, f"seed_{seed}")
        self.log_path = os.path.join(root, f"seed_{seed}.log")
        self.command = [
            sys.executable,
            RUN_PY,
            "--config",
            os.path.abspath(args.config),
            "--workdir",
            self.workdir,
            f"--config.seed={seed}",
            "--config.progress_bar=False",
            f"--config.compilation_cache_dir={cache}",
            *[f"--config.{item}" for item in args.set],
        ]
        self.process: subprocess.Popen | None = None
        self.start = self.end = 0.0
        self.stopped = False  # sent SIGTERM for the budget

    def launch(self, env: dict[str, str]) -> None:
        self.log = open(self.log_path, "w", encoding="utf-8")  # noqa: SIM115 (closed in finish)
        self.start = time.perf_counter()
        self.process = subprocess.Popen(
            self.command, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=ROOT
        )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.running():
            self.stopped = True
            self.process.send_signal(signal.SIGTERM)

    def finish(self) -> None:
        self.end = time.perf_counter()
        self.log.close()

    def log_tail(self, lines: int = 5) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:]).rstrip()

    def result(self, validation: bool) -> dict:
        if self.process is None:
            return {
                "seed": self.seed,
                "finished": False,
                "stopped": "not started: the time budget was spent",
            }
        records = read_metrics(self.workdir)
        steps = [r["step"] for r in records if "step" in r]
        rate = images_per_sec(self.workdir)
        row = {
            "seed": self.seed,
            "wall_s": self.end - self.start,
            "train_images_per_sec": None if rate != rate else rate,  # NaN: nothing logged
            "last_logged_step": max(steps) if steps else 0,
        }
        test_path = os.path.join(self.workdir, "test_metrics.json")
        finished = self.process.returncode == 0 and os.path.isfile(test_path)
        if validation:
            finished = finished and _last(records, "val_accuracy") is not None
        row["finished"] = finished
        if finished and validation:
            row["val_accuracy"] = _last(records, "val_accuracy")
            row["val_loss"] = _last(records, "val_loss")
        elif finished:
            with open(test_path, encoding="utf-8") as f:
                test = json.load(f)
            row.update(test_accuracy=test["accuracy"], test_loss=test["loss"], step=test["step"])
        elif self.stopped:
            # The loop saves a checkpoint on SIGTERM; a process still starting just exits.
            row["stopped"] = "SIGTERM at the time budget, no accuracy"
        else:
            row["error"] = f"exit status {self.process.returncode}: {self.log_tail(1)}"
        return row


def child_env(concurrent: int) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if concurrent > 1:  # JAX takes 75% of a GPU's memory per process by default
        env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.9 / concurrent:.2f}")
    return env


def run_seeds(seeds: list[Seed], args: argparse.Namespace, deadline: float, on_done) -> None:
    """Runs `seeds` (all at once with --concurrent, else in turn) until each ends or the
    deadline stops it; `on_done(seed)` after each."""
    env = child_env(len(seeds) if args.concurrent else 1)
    waiting = list(seeds)
    active: list[Seed] = []
    next_progress = time.perf_counter() + PROGRESS_EVERY_S
    while waiting or active:
        while waiting and (args.concurrent or not active):
            if time.perf_counter() >= deadline:
                on_done(waiting.pop(0))  # recorded as not started
                continue
            seed = waiting.pop(0)
            seed.launch(env)
            active.append(seed)
            print(f"seed {seed.seed}: started ({' '.join(seed.command[1:])})", flush=True)
        if not active:
            break
        time.sleep(POLL_S)
        now = time.perf_counter()
        if now >= deadline:
            for seed in active:
                if not seed.stopped and seed.running():
                    print(f"seed {seed.seed}: time budget reached, stopping it", flush=True)
                    seed.stop()
        for seed in list(active):
            if seed.stopped and seed.running() and now >= deadline + STOP_GRACE_S:
                seed.process.kill()
            if not seed.running():
                seed.process.wait()
                seed.finish()
                active.remove(seed)
                on_done(seed)
        if now >= next_progress:
            next_progress = now + PROGRESS_EVERY_S
            for seed in active:
                records = read_metrics(seed.workdir)
                rate = _last(records, "images_per_sec")
                step = _last(records, "step")
                print(
                    f"seed {seed.seed}: {now - seed.start:.0f} s, step {step}, "
                    f"{rate if rate is None else round(rate)} images/s",
                    flush=True,
                )


def evaluate_ensemble(
    finished: list[dict], root: str, split: str, timeout_s: float, env: dict[str, str]
) -> dict:
    """`run.py --mode=evaluate` of the first finished run with the others as its ensemble:
    the "ensemble of k" rows, without and with flip TTA, and the command's wall time."""
    workdirs = [os.path.join(root, f"seed_{row['seed']}") for row in finished]
    command = [sys.executable, RUN_PY, "--mode=evaluate", "--workdir", workdirs[0]]
    command += [f"--ensemble={','.join(workdirs[1:])}", "--checkpoint=latest", f"--split={split}"]
    seeds = [row["seed"] for row in finished]
    start = time.perf_counter()
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        return {"seeds": seeds, "skipped": f"the evaluation passed its {timeout_s:.0f} s"}
    wall = time.perf_counter() - start
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-1:]
        return {"seeds": seeds, "error": f"exit status {done.returncode}: {' '.join(tail)}"}
    with open(os.path.join(workdirs[0], "eval", f"{split}.json"), encoding="utf-8") as f:
        variants = json.load(f)["variants"]
    rows = [
        {key: v[key] for key in ("variant", "accuracy", "loss", "ece")}
        for v in variants
        if v["variant"].startswith("ensemble of")
    ]
    return {"seeds": seeds, "split": split, "checkpoint": "latest", "wall_s": wall, "rows": rows}


def summary_of(runs: list[dict], key: str = "test_accuracy") -> dict:
    done = [r for r in runs if r.get(key) is not None]
    accuracies = [r[key] for r in done]
    summary = {"seeds_finished": len(done), "seeds_run": len(runs)}
    if done:
        summary.update(
            {
                f"mean_{key}": statistics.mean(accuracies),
                f"std_{key}": statistics.stdev(accuracies) if len(done) > 1 else 0.0,
                f"min_{key}": min(accuracies),
                "mean_wall_s": statistics.mean(r["wall_s"] for r in done),
            }
        )
    return summary


def write_results(
    args: argparse.Namespace, argv: list[str] | None, name: str, runs: list[dict], **extra
) -> str:
    out = args.out or os.path.join(ROOT, "benchmarks", "results", f"{name}_seeds.json")
    key = "val_accuracy" if args.validation else "test_accuracy"
    write_json(
        out,
        {
            "benchmark": "recipe_seeds",
            "config": os.path.relpath(os.path.abspath(args.config), ROOT),
            "overrides": args.set,
            "command": "python benchmarks/recipe_seeds.py " + " ".join(argv or sys.argv[1:]),
            "machine": machine(),
            "versions": versions(PACKAGES),
            "mode": "concurrent" if args.concurrent else "sequential",
            "compile_cache": "shared by the seeds of this call: the first compiles",
            "metric": key,
            "summary": summary_of(runs, key),
            "runs": runs,
            **extra,
        },
    )
    return out


def summarize(args: argparse.Namespace, name: str, runs: list[dict], extra: dict) -> None:
    key = "val_accuracy" if args.validation else "test_accuracy"
    summary = summary_of(runs, key)
    print()
    print(f"| {name} | seed | {key} | wall s | train images/s | finished |")
    print("|---|---|---|---|---|---|")
    for r in runs:
        accuracy = f"{r[key]:.4f}" if r.get(key) is not None else "-"
        wall = f"{r['wall_s']:.0f}" if "wall_s" in r else "-"
        rate = r.get("train_images_per_sec")
        rate = f"{rate:.0f}" if rate is not None else "-"
        print(f"| single model | {r['seed']} | {accuracy} | {wall} | {rate} | {r['finished']} |")
    if summary["seeds_finished"]:
        print(
            f"| mean of {summary['seeds_finished']} | | {summary[f'mean_{key}']:.4f} "
            f"(std {summary[f'std_{key}']:.4f}) | {summary['mean_wall_s']:.0f} | | |"
        )
    ensemble = extra.get("ensemble")
    if ensemble:
        for row in ensemble.get("rows", []):
            seeds = " ".join(str(s) for s in ensemble["seeds"])
            print(f"| {row['variant']} | {seeds} | {row['accuracy']:.4f} | | | |")
        for problem in ("skipped", "error"):
            if problem in ensemble:
                print(f"ensemble {problem}: {ensemble[problem]}")
    print(f"call wall time {extra['call_wall_s']:.0f} s")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    call_start = time.perf_counter()
    config = load_config(args.config, args.set)  # a bad key or value fails before any run
    if args.validation and not config.data.validation_fraction > 0:
        sys.exit("error: --validation needs data.validation_fraction > 0 (--set it).")
    name = os.path.splitext(os.path.basename(args.config))[0]
    end = call_start + args.budget_s if args.budget_s > 0 else float("inf")
    train_deadline = end - (args.ensemble_reserve_s if args.ensemble else 0.0)
    root = args.workdir or tempfile.mkdtemp(prefix=f"{name}_seeds_")
    os.makedirs(root, exist_ok=True)
    cache = os.path.join(root, "xla_cache")
    seeds = [Seed(s, args, root, cache) for s in args.seeds]
    runs: list[dict] = []
    key = "val_accuracy" if args.validation else "test_accuracy"

    def on_done(seed: Seed) -> None:
        row = seed.result(args.validation)
        runs.append(row)
        accuracy = f"{key} {row[key]:.4f}" if row.get(key) is not None else "no accuracy"
        problem = row.get("stopped") or row.get("error") or ""
        print(f"seed {seed.seed}: {accuracy}, {row.get('wall_s', 0):.0f} s {problem}", flush=True)
        if row.get("error"):
            print(seed.log_tail(), flush=True)
        write_results(args, argv, name, sorted(runs, key=lambda r: r["seed"]))

    run_seeds(seeds, args, train_deadline, on_done)
    runs.sort(key=lambda r: r["seed"])
    extra: dict = {"workdir": root, "budget_s": args.budget_s or None}
    finished = [r for r in runs if r["finished"]]
    if args.ensemble and len(finished) >= 2:
        left = end - time.perf_counter()
        if left < 20:
            extra["ensemble"] = {"skipped": f"{left:.0f} s of the budget left"}
        else:
            split = "validation" if args.validation else "test"
            timeout = left if args.budget_s > 0 else None
            extra["ensemble"] = evaluate_ensemble(finished, root, split, timeout, child_env(1))
    elif args.ensemble:
        extra["ensemble"] = {"skipped": f"{len(finished)} finished seed(s); an ensemble needs 2"}
    extra["call_wall_s"] = time.perf_counter() - call_start
    out = write_results(args, argv, name, runs, **extra)
    summarize(args, name, runs, extra)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
