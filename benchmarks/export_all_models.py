"""Every model of the registry through both export routes: ONNX (jax2onnx, ONNX Runtime) and
TFLite (jax2tf SavedModel, LiteRT converter and interpreter), untrained, each at a small image
size, and with --full the ImageNet models at their own size.

  python benchmarks/export_all_models.py [--models resnet50 vit_s16] [--full]

Per model: whether each export ran and loads, the largest probability difference from JAX on
random uint8 images, top-1 agreement, and the export seconds (after a warm-up export, so the
one-off imports, about half a minute of jax2onnx plugin loading among them, are reported apart).
Prints a table and writes benchmarks/results/export_all_models.json unless --out says otherwise.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
import traceback

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from common import machine, versions, write_json  # noqa: E402

DEFAULT_OUT = os.path.join(ROOT, "benchmarks", "results", "export_all_models.json")
PACKAGES = ("jax", "jaxlib", "flax", "jax2onnx", "onnx", "onnxruntime", "tensorflow")
TOLERANCE = 1e-4


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", help="registry names (default: all)")
    parser.add_argument("--full", action="store_true", help="also the ImageNet models at size")
    parser.add_argument("--formats", nargs="*", default=["onnx", "tflite"])
    parser.add_argument("--images", type=int, default=16, help="random images compared")
    parser.add_argument("--num-classes", type=int, default=5)
    parser.add_argument("--out", default=DEFAULT_OUT)
    return parser.parse_args(argv)


def warm_up(formats: list[str]) -> float:
    """One tiny export per route: the imports and jax2onnx's plugin loading happen once per
    process, and would otherwise be billed to the first model."""
    import jax
    import jax.numpy as jnp

    from flaxcls.modes import export as export_lib

    def serve(images):
        return jax.nn.softmax(images.astype(jnp.float32).mean(axis=(1, 2)), axis=-1)

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        export_lib.export_artefacts(serve, (4, 4, 3), tmp, tuple(formats), float16=False)
    return time.perf_counter() - start


def measure(
    name: str, shape: tuple[int, ...], formats: list[str], num_images: int, num_classes: int
) -> dict:
    from flaxcls.modes import export as export_lib
    from flaxcls.testing.served_models import served_model

    images = np.random.default_rng(1).integers(0, 256, (num_images, *shape), dtype=np.uint8)
    serve, reference = served_model(name, images, num_classes=num_classes)
    row: dict = {"model": name, "image_shape": list(shape)}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in formats:
            try:
                artefacts, models = export_lib.export_artefacts(
                    serve, shape, tmp, (fmt,), float16=False
                )
                figures = export_lib.parity(reference, models[fmt](images), None)
                row[fmt] = {
                    "ok": figures["max_abs_prob_diff"] < TOLERANCE,
                    "max_abs_prob_diff": figures["max_abs_prob_diff"],
                    "top1_agreement": figures["top1_agreement"],
                    "seconds": artefacts[fmt]["seconds"],
                    "bytes": artefacts[fmt]["bytes"],
                }
            except Exception as e:  # noqa: BLE001 - a failing route is a result, not a crash
                traceback.print_exc()
                row[fmt] = {"ok": False, "error": f"{type(e).__name__}: {str(e)[:300]}"}
    return row


def cell(figures: dict) -> str:
    if "error" in figures:
        return f"FAIL {figures['error'][:40]:<40}"
    status = "ok" if figures["ok"] else "OVER"
    return f"{status:<4} {figures['max_abs_prob_diff']:8.1e} {figures['seconds']:7.1f}"


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import jax

    from flaxcls.models import MODELS
    from flaxcls.testing.served_models import FULL_SIZES, small_shape

    names = args.models or list(MODELS)
    cases = [(name, small_shape(name)) for name in names]
    if args.full:
        cases += [(name, (size, size, 3)) for name, size in FULL_SIZES.items()]
    one_off = warm_up(args.formats)
    print(f"one-off imports and plugin loading: {one_off:.1f} s", flush=True)
    rows = []
    print(f"{'model':<18} {'size':>5}  {'ONNX: diff, s':<22} {'TFLite: diff, s':<22}", flush=True)
    for name, shape in cases:
        row = measure(name, shape, args.formats, args.images, args.num_classes)
        rows.append(row)
        cells = "  ".join(cell(row[fmt]) for fmt in args.formats)
        print(f"{name:<18} {shape[0]:>5}  {cells}", flush=True)
        # the compiled functions keep each model's weights as constants: release them, or
        # the 19 models add up to more than 10 GB
        jax.clear_caches()
        gc.collect()
        # after every model, so that a run cut short keeps what it measured
        write_json(
            args.out,
            {
                "benchmark": "export_all_models",
                "tolerance": TOLERANCE,
                "num_images": args.images,
                "num_classes": args.num_classes,
                "one_off_seconds": one_off,
                "models": rows,
                "all_ok": all(row[fmt]["ok"] for row in rows for fmt in args.formats),
                "complete": len(rows) == len(cases),
                "machine": machine(),
                "versions": versions(PACKAGES),
            },
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
