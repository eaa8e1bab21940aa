"""Export a run's checkpoint for applications: ONNX (ONNX Runtime) and TFLite (LiteRT), with
the preprocessing inside the graph (uint8 NHWC images of any batch size in, class
probabilities out) and the class names beside them, and a parity check against JAX.

  python run.py --mode=export --workdir RUN [--format=onnx|tflite|all]

Routes: ONNX through jax2onnx, which lowers the jitted JAX function primitive by primitive (no
TensorFlow involved); TFLite through jax2tf's native serialisation into a TF SavedModel, then
the LiteRT (TFLite) converter, the path the TFLite documentation gives for JAX. Writes
RUN/export/{model.onnx, saved_model/, model.tflite, model_fp16.tflite, classes.json,
export.json}. `export_artefacts` does the same for any serving function (uint8 NHWC images ->
probabilities), e.g. an untrained model of the registry.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flaxcls.data import DatasetNotPreparedError
from flaxcls.errors import ConfigError
from flaxcls.modes.build import load_run, serving_function

FORMATS = ("onnx", "tflite")
# What each format imports: the `export` extra, checked before any work is done.
REQUIREMENTS = {
    "onnx": ("jax2onnx", "onnx", "onnxruntime"),
    "tflite": ("tensorflow", "ai_edge_litert"),
}
PARITY_IMAGES = 1000


def check_requirements(formats: tuple[str, ...]) -> None:
    """A ConfigError with the install command when a module that `formats` need is missing."""
    missing = [m for f in formats for m in REQUIREMENTS[f] if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"export to {', '.join(formats)} needs {', '.join(missing)}, which this install "
            "lacks: pip install 'flaxcls[export]'"
        )


def export_onnx(serve: Callable, image_shape: tuple[int, ...], path: str) -> str:
    """One .onnx file (weights inside; beside it in PATH.data only past protobuf's 2 GiB)."""
    import onnx
    from jax2onnx import to_onnx

    spec = jax.ShapeDtypeStruct(("batch", *image_shape), jnp.uint8)
    model = to_onnx(
        serve,
        [spec],
        model_name="flaxcls",
        input_names=["images"],
        output_names=["probabilities"],
    )
    # jax2onnx (0.17) moves the Relu/Add chains between convolutions from NHWC into NCHW when it
    # drops the transposes around them (residual blocks with projection shortcuts), but keeps
    # those values' recorded NHWC shapes; ONNX Runtime merges the stale shapes and rejects the
    # file ("Incompatible dimensions" at an Add). Intermediate shapes are optional: drop them
    # and infer them again from the graph, strictly, so a wrong graph fails here, not at load.
    del model.graph.value_info[:]
    external = model.ByteSize() >= onnx.checker.MAXIMUM_PROTOBUF
    onnx.save_model(
        model,
        path,
        save_as_external_data=external,
        location=os.path.basename(path) + ".data" if external else None,
    )
    onnx.shape_inference.infer_shapes_path(path, strict_mode=True)
    return path


def export_saved_model(serve: Callable, image_shape: tuple[int, ...], directory: str) -> str:
    import tensorflow as tf
    from jax.experimental import jax2tf

    dims = ", ".join(str(d) for d in image_shape)
    converted = jax2tf.convert(serve, polymorphic_shapes=[f"(b, {dims})"], with_gradient=False)
    signature = [tf.TensorSpec([None, *image_shape], tf.uint8, name="images")]
    module = tf.Module()
    module.serve = tf.function(converted, autograph=False, input_signature=signature)
    tf.saved_model.save(module, directory, signatures=module.serve.get_concrete_function())
    return directory


def export_tflite(saved_model: str, path: str, float16: bool = False) -> str:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
    if float16:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    with open(path, "wb") as f:
        f.write(converter.convert())
    return path


class OnnxModel:
    """An exported model in ONNX Runtime, called on uint8 NHWC batches."""

    def __init__(self, path: str):
        import onnxruntime as ort

        options = ort.SessionOptions()
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: images})[0]


class TfliteModel:
    """An exported model in the LiteRT (TFLite) interpreter, resized to each batch size."""

    def __init__(self, path: str, num_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        # all cores, as ONNX Runtime and XLA use (the interpreter's default is one thread)
        threads = num_threads or os.cpu_count() or 1
        self.interpreter = Interpreter(model_path=path, num_threads=threads)
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.output = self.interpreter.get_output_details()[0]["index"]
        self.batch = None

    def __call__(self, images: np.ndarray) -> np.ndarray:
        if images.shape[0] != self.batch:
            self.interpreter.resize_tensor_input(self.input, images.shape)
            self.interpreter.allocate_tensors()
            self.batch = images.shape[0]
        self.interpreter.set_tensor(self.input, images)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output).copy()


def _batched(model: Callable, images: np.ndarray, batch: int = 250) -> np.ndarray:
    return np.concatenate([model(images[i : i + batch]) for i in range(0, len(images), batch)])


def accuracy(probs: np.ndarray, labels: np.ndarray | None) -> float | None:
    return None if labels is None else float(np.mean(probs.argmax(1) == labels))


def parity(reference: np.ndarray, other: np.ndarray, labels: np.ndarray | None) -> dict[str, Any]:
    """How an exported model's probabilities compare with JAX's on the same images (and its
    accuracy, where the images' labels are known)."""
    return {
        "images": int(len(reference)),
        "top1_agreement": float(np.mean(reference.argmax(1) == other.argmax(1))),
        "max_abs_prob_diff": float(np.abs(reference - other).max()),
        "accuracy": accuracy(other, labels),
    }


def split_images(run: Any, split: str, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to `limit` uint8 images and labels of a split of the run's data, in order."""
    images, labels = [], []
    for batch in run.inputs.evaluate(split):
        real = batch["mask"] > 0
        images.append(run.inputs.normalizer.to_uint8(batch["image"][real]))
        labels.append(batch["label"][real])
        if sum(len(x) for x in labels) >= limit:
            break
    return np.concatenate(images)[:limit], np.concatenate(labels)[:limit]


def parity_images(run: Any, split: str, limit: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The split's images and labels; where the run's data is gone, `limit` random images
    (parity still holds on them; accuracy is then not measured)."""
    try:
        return split_images(run, split, limit)
    except (OSError, ConfigError, DatasetNotPreparedError) as e:
        print(
            f"warning: the run's data is not available ({type(e).__name__}: {e}); parity is "
            f"checked on {limit} random images and accuracy is not measured.",
            flush=True,
        )
        shape = (limit, *run.info.image_shape)
        return np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8), None


def export_artefacts(
    serve: Callable,
    image_shape: tuple[int, ...],
    out: str,
    formats: tuple[str, ...] = FORMATS,
    *,
    float16: bool = True,
) -> tuple[dict[str, dict[str, Any]], dict[str, Callable]]:
    """Exports `serve` (uint8 NHWC images of `image_shape`, any batch size -> probabilities) in
    `formats` under `out`; returns each artefact's path, bytes and export seconds, and each
    model loaded in its runtime, by name (onnx, tflite and, with `float16`, tflite_fp16)."""
    artefacts: dict[str, dict[str, Any]] = {}
    models: dict[str, Callable] = {}
    if "onnx" in formats:
        start = time.perf_counter()
        path = export_onnx(serve, image_shape, os.path.join(out, "model.onnx"))
        artefacts["onnx"] = {"path": path, "seconds": time.perf_counter() - start}
        models["onnx"] = OnnxModel(path)
    if "tflite" in formats:
        start = time.perf_counter()
        saved = export_saved_model(serve, image_shape, os.path.join(out, "saved_model"))
        path = export_tflite(saved, os.path.join(out, "model.tflite"))
        artefacts["saved_model"] = {"path": saved}
        artefacts["tflite"] = {"path": path, "seconds": time.perf_counter() - start}
        models["tflite"] = TfliteModel(path)
        if float16:
            half = export_tflite(saved, os.path.join(out, "model_fp16.tflite"), float16=True)
            artefacts["tflite_fp16"] = {"path": half}
            models["tflite_fp16"] = TfliteModel(half)
    for name in models:
        artefacts[name]["bytes"] = os.path.getsize(artefacts[name]["path"])
    return artefacts, models


def export_run(
    workdir: str,
    *,
    formats: tuple[str, ...] = FORMATS,
    checkpoint: str = "best",
    num_parity_images: int = PARITY_IMAGES,
) -> dict[str, Any]:
    """Writes the artefacts under WORKDIR/export/ and checks them against JAX on up to
    `num_parity_images` test images (random ones where the data is gone); returns (and writes
    to export.json) the figures."""
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ConfigError(f"unknown export format(s) {sorted(unknown)}; choose from {FORMATS}.")
    check_requirements(formats)
    run = load_run(workdir, checkpoint)
    out = os.path.join(workdir, "export")
    os.makedirs(out, exist_ok=True)
    serve = serving_function(run)
    shape = tuple(run.info.image_shape)
    names = run.class_names
    with open(os.path.join(out, "classes.json"), "w", encoding="utf-8") as f:
        json.dump({"class_names": names, "image_shape": list(shape), "input": "uint8 NHWC"}, f)
    images, labels = parity_images(run, "test", num_parity_images)
    reference = _batched(jax.jit(serve), images)
    artefacts, models = export_artefacts(serve, shape, out, formats)
    result: dict[str, Any] = {
        "step": run.step,
        "image_shape": list(shape),
        "jax_accuracy": accuracy(reference, labels),
        "artefacts": artefacts,
        "parity": {
            name: parity(reference, _batched(model, images), labels)
            for name, model in models.items()
        },
    }
    with open(os.path.join(out, "export.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    return result
