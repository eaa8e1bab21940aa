"""Kill-anywhere: real training runs SIGKILLed at random moments (inside steps, checkpoint writes
and evaluations) and restarted until they finish; each must end bit-identical to an
uninterrupted run.

  python benchmarks/kill_anywhere.py [--runs 5] [--kills-per-run 10] [--steps 1500]

Prints a table and writes benchmarks/results/kill_anywhere.json unless --out says otherwise.
Counts: kills sent, resumes (restarts that continued from a checkpoint), checkpoints lost
(restarts that resumed from less than the newest finished checkpoint), and finals identical to
the uninterrupted reference (every parameter, bit for bit, on CPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from common import machine, versions, write_json  # noqa: E402

DEFAULT_OUT = os.path.join(ROOT, "benchmarks", "results", "kill_anywhere.json")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--kills-per-run", type=int, default=10)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--out", default=DEFAULT_OUT)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    from flaxcls.modes import train as train_lib
    from flaxcls.testing.killing import run_with_kills
    from flaxcls.testing.launch import write_config
    from flaxcls.testing.toy import restored_state, tiny_config, write_npz

    settings = {
        "num_train_steps": args.steps,
        "checkpoint_every_steps": 5,
        "keep_checkpoints": 2,
        "log_every_steps": 10,
    }
    totals = {"kills": 0, "resumes": 0, "lost": 0, "identical_finals": 0, "runs": args.runs}
    runs = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kill_anywhere_") as tmp:
        npz = write_npz(tmp)
        reference_config = tiny_config(npz, **settings)
        train_lib.train_and_evaluate(reference_config, os.path.join(tmp, "reference"))
        reference = restored_state(os.path.join(tmp, "reference"), reference_config)
        config_file = write_config(
            tmp, npz, **settings, compilation_cache_dir=os.path.join(tmp, "cache")
        )
        for run in range(args.runs):
            workdir = os.path.join(tmp, f"killed_{run}")
            report = run_with_kills(config_file, workdir, kills=args.kills_per_run, seed=run)
            final = restored_state(workdir, reference_config)
            identical = int(final.step) == args.steps and all(
                np.array_equal(np.asarray(a), np.asarray(b))
                for a, b in zip(jax.tree.leaves(final), jax.tree.leaves(reference), strict=True)
            )
            totals["kills"] += report.kills
            totals["resumes"] += report.resumes
            totals["lost"] += report.lost
            totals["identical_finals"] += identical
            record = dataclasses.asdict(report)
            record.pop("final_stdout")
            runs.append({**record, "identical_final": identical})
            print(
                f"run {run}: {report.kills} kills, {report.resumes} resumes at steps "
                f"{report.resumed_steps}, {report.lost} lost, final identical: {identical}",
                flush=True,
            )
    totals["wall_s"] = time.perf_counter() - start
    print(f"\n{'kills':>6} {'resumes':>8} {'lost':>5} {'identical finals':>17}")
    print(
        f"{totals['kills']:>6} {totals['resumes']:>8} {totals['lost']:>5} "
        f"{totals['identical_finals']:>10} of {args.runs}"
    )
    write_json(
        args.out,
        {
            "benchmark": "kill_anywhere",
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": "python benchmarks/kill_anywhere.py " + " ".join(argv or sys.argv[1:]),
            "machine": machine(),
            "versions": versions(("jax", "jaxlib", "flax", "orbax-checkpoint")),
            "settings": settings,
            "totals": totals,
            "runs": runs,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
