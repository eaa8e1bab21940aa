"""Export to ONNX and TFLite: parity with JAX, any batch size; predict on good and bad files."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from flaxcls.modes import export as export_lib
from flaxcls.modes import train as train_lib
from flaxcls.testing.launch import ROOT, env_for
from flaxcls.testing.toy import tiny_config, write_npz


def _train(tmp_path, model):
    npz = write_npz(str(tmp_path), n_test=40)
    config = tiny_config(npz, **{"model.name": model, "num_train_steps": 6})
    workdir = str(tmp_path / model)
    train_lib.train_and_evaluate(config, workdir)
    return workdir


@pytest.mark.slow
@pytest.mark.parametrize("model", ["seed_cnn", "fast_cnn_small", "cifar_resnet20"])
def test_exports_match_jax_on_every_image(tmp_path, model):
    workdir = _train(tmp_path, model)
    result = export_lib.export_run(workdir, checkpoint="latest")
    for name in ("onnx", "tflite"):
        figures = result["parity"][name]
        assert figures["images"] == 40
        assert figures["top1_agreement"] == 1.0, (name, figures)
        assert figures["max_abs_prob_diff"] < 1e-4, (name, figures)
    assert result["parity"]["tflite_fp16"]["max_abs_prob_diff"] < 0.05
    with open(os.path.join(workdir, "export", "classes.json")) as f:
        assert json.load(f)["class_names"] == ["0", "1", "2"]
    # any batch size: 1 and 7 through the same files
    from flaxcls.modes.build import load_run, serving_function

    run = load_run(workdir, "latest")
    serve = serving_function(run)
    images = np.random.default_rng(0).integers(0, 256, (7, 28, 28, 1), dtype=np.uint8)
    expected = np.asarray(serve(images))
    onnx = export_lib.OnnxModel(os.path.join(workdir, "export", "model.onnx"))
    tflite = export_lib.TfliteModel(os.path.join(workdir, "export", "model.tflite"))
    for batch in (images[:1], images):
        n = len(batch)
        np.testing.assert_allclose(onnx(batch), expected[:n], atol=1e-5)
        np.testing.assert_allclose(tflite(batch), expected[:n], atol=1e-5)
    np.testing.assert_allclose(expected.sum(axis=1), 1.0, rtol=1e-5)


def test_predict_labels_good_files_and_names_bad_ones(tmp_path):
    workdir = _train(tmp_path, "seed_cnn")
    photos = tmp_path / "photos"
    photos.mkdir()
    rgb = np.random.default_rng(0).integers(0, 256, (50, 37, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(photos / "colour.png")
    Image.fromarray(rgb[..., 0]).save(photos / "gray.jpg")
    Image.fromarray(rgb).convert("P").save(photos / "palette.gif")
    good = (photos / "colour.png").read_bytes()
    (photos / "truncated.png").write_bytes(good[: len(good) // 3])
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    result = subprocess.run(
        [
            sys.executable,
            "run.py",
            "--mode=predict",
            f"--workdir={workdir}",
            "--checkpoint=latest",
            "--top_k=2",
            str(photos),
            str(notes),
        ],
        cwd=ROOT,
        env=env_for(1),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    lines = {line.split(":")[0]: line for line in result.stdout.splitlines() if ": " in line}
    for name in ("colour.png", "gray.jpg", "palette.gif"):
        line = lines[str(photos / name)]
        assert "error" not in line and line.count(" 0.") + line.count(" 1.0") == 2, line
    assert "error" in lines[str(photos / "truncated.png")]
    assert "error" in lines[str(notes)] and "UnidentifiedImageError" in lines[str(notes)]
