"""Label new images with a trained run: top-k classes and probabilities for each file.

  python run.py --mode=predict --workdir RUN image1.jpg photos/ [--top_k=5]

Folders are searched recursively for image files. Any size and mode is resized and converted
to what the model was trained on. A file that cannot be read (not an image, truncated, or over
the pixel limit) gets its own error line and the others still run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from flaxcls.data.folder import IMAGE_EXTENSIONS, decode_image
from flaxcls.modes.build import load_run, serving_function

BATCH = 64


def expand_paths(paths: Sequence[str]) -> list[str]:
    """Files as given; folders replaced by the image files under them, sorted."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            for directory, _, names in sorted(os.walk(path)):
                files += [
                    os.path.join(directory, n)
                    for n in sorted(names)
                    if n.lower().endswith(IMAGE_EXTENSIONS)
                ]
        else:
            files.append(path)
    return files


def predict_files(
    workdir: str, paths: Sequence[str], *, top_k: int = 5, checkpoint: str = "best"
) -> list[dict[str, Any]]:
    """One result per file: {'path', 'top': [(class, probability), ...]} or {'path', 'error'}."""
    run = load_run(workdir, checkpoint)
    height, width, channels = run.info.image_shape
    names = run.class_names
    serve = jax.jit(serving_function(run))
    results: list[dict[str, Any]] = []
    decoded: list[tuple[int, np.ndarray]] = []
    for path in expand_paths(paths):
        try:
            if not os.path.isfile(path):
                raise FileNotFoundError("no such file")
            image = decode_image(path, (height, width), channels)
        except Exception as e:  # noqa: BLE001 - one bad file must not stop the others
            results.append({"path": path, "error": f"{type(e).__name__}: {e}"})
            continue
        results.append({"path": path})
        decoded.append((len(results) - 1, image))
    k = min(top_k, len(names))
    for start in range(0, len(decoded), BATCH):
        chunk = decoded[start : start + BATCH]
        batch = np.stack([image for _, image in chunk])
        padded = np.concatenate([batch, np.zeros((BATCH - len(batch), *batch.shape[1:]), np.uint8)])
        probs = np.asarray(serve(padded))[: len(batch)]  # one batch shape: one compilation
        for (slot, _), p in zip(chunk, probs, strict=True):
            order = np.argsort(-p)[:k]
            results[slot]["top"] = [(names[c], float(p[c])) for c in order]
    return results


def format_result(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"{result['path']}: error: {result['error']}"
    top = ", ".join(f"{name} {prob:.4f}" for name, prob in result["top"])
    return f"{result['path']}: {top}"
