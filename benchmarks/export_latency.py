"""Inference latency of exported runs on this CPU: JAX (jit) vs ONNX Runtime vs TFLite (LiteRT),
at batch 1 and batch 64, with each artefact's parity against JAX on the test images.

  python benchmarks/export_latency.py --workdir runs/fashion_mnist [--workdir runs/resnet20 ...]

Exports each run first (`run.py --mode=export` does the same) unless RUN/export/export.json
exists. Prints a table and writes benchmarks/results/export_latency.json unless --out says
otherwise. Latency is the median of timed calls after warm-up, on uint8 images in host memory
and probabilities back in host memory, one call at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from common import machine, versions, write_json  # noqa: E402

DEFAULT_OUT = os.path.join(ROOT, "benchmarks", "results", "export_latency.json")
BATCHES = (1, 64)
PACKAGES = ("jax", "jaxlib", "flax", "jax2onnx", "onnxruntime", "tensorflow", "ai-edge-litert")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", action="append", required=True, help="a trained run")
    parser.add_argument("--checkpoint", default="best", choices=["best", "latest"])
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--out", default=DEFAULT_OUT)
    return parser.parse_args(argv)


def median_ms(call, images: np.ndarray, repeats: int) -> float:
    for _ in range(5):
        call(images)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        call(images)
        seconds.append(time.perf_counter() - start)
    return 1000 * statistics.median(seconds)


def measure(workdir: str, checkpoint: str, repeats: int) -> dict:
    import jax

    from flaxcls.modes import export as export_lib
    from flaxcls.modes.build import load_run, serving_function

    summary_path = os.path.join(workdir, "export", "export.json")
    if not os.path.isfile(summary_path):
        export_lib.export_run(workdir, checkpoint=checkpoint)
    with open(summary_path, encoding="utf-8") as f:
        exported = json.load(f)
    run = load_run(workdir, checkpoint)
    serve = jax.jit(serving_function(run))
    runtimes = {
        "jax": lambda x: np.asarray(serve(x)),
        "onnxruntime": export_lib.OnnxModel(exported["artefacts"]["onnx"]["path"]),
        "tflite": export_lib.TfliteModel(exported["artefacts"]["tflite"]["path"]),
    }
    shape = tuple(exported["image_shape"])
    rng = np.random.default_rng(0)
    latency = {}
    for batch in BATCHES:
        images = rng.integers(0, 256, (batch, *shape), dtype=np.uint8)
        count = repeats if batch == 1 else max(10, repeats // 5)
        latency[f"batch_{batch}"] = {
            name: median_ms(call, images, count) for name, call in runtimes.items()
        }
    return {
        "model": run.config.model.name,
        "step": exported["step"],
        "jax_test_accuracy": exported["jax_accuracy"],
        "parity": exported["parity"],
        "latency_ms": latency,
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    results = {w: measure(w, args.checkpoint, args.repeats) for w in args.workdir}
    print(f"\n{'run':<28} {'batch':>5} {'JAX ms':>8} {'ORT ms':>8} {'TFLite ms':>10}")
    for workdir, r in results.items():
        for batch in BATCHES:
            t = r["latency_ms"][f"batch_{batch}"]
            print(
                f"{os.path.basename(workdir.rstrip('/')):<28} {batch:>5} {t['jax']:>8.2f} "
                f"{t['onnxruntime']:>8.2f} {t['tflite']:>10.2f}"
            )
    header = f"{'run':<28} {'artefact':<12} {'images':>6} {'top-1 agree':>11} {'max |dp|':>9}"
    print(f"\n{header} {'acc':>7}")
    for workdir, r in results.items():
        for name, p in r["parity"].items():
            print(
                f"{os.path.basename(workdir.rstrip('/')):<28} {name:<12} {p['images']:>6} "
                f"{p['top1_agreement']:>11.4f} {p['max_abs_prob_diff']:>9.1e} {p['accuracy']:>7.4f}"
            )
    write_json(
        args.out,
        {
            "benchmark": "export_latency",
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": "python benchmarks/export_latency.py " + " ".join(argv or sys.argv[1:]),
            "machine": machine(),
            "versions": versions(PACKAGES),
            "results": results,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
