"""A finished run stands on its own: predict, export, init_from and ensemble members build the
state from config.json, dataset.json and the checkpoint, and never read the training data."""

import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

from flaxcls.modes import build as runs
from flaxcls.modes import train as train_lib
from flaxcls.modes.export import export_run
from flaxcls.modes.predict import predict_files
from flaxcls.testing.toy import tiny_config, write_npz


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("standalone")
    npz = write_npz(str(root))
    workdir = str(root / "run")
    train_lib.train_and_evaluate(tiny_config(npz, num_train_steps=6), workdir)
    image = np.load(npz)["test_images"][0, :, :, 0]
    path = str(root / "one.png")
    Image.fromarray(image).save(path)
    return npz, workdir, path


def test_dataset_facts_are_written_beside_the_config(finished):
    _, workdir, _ = finished
    with open(os.path.join(workdir, "dataset.json")) as f:
        facts = json.load(f)
    assert facts["info"]["image_shape"] == [28, 28, 1] and facts["info"]["num_classes"] == 3
    assert facts["split_sizes"]["train"] == 60 and facts["steps_per_epoch"] == 3


def test_loading_a_run_never_builds_its_input(finished, monkeypatch):
    _, workdir, _ = finished
    with_data = runs.load_run(workdir)
    read_info = with_data.inputs.info

    def refuse(*args, **kwargs):
        raise AssertionError("the training data was read")

    monkeypatch.setattr(runs, "build_input", refuse)
    alone = runs.load_run(workdir)
    assert alone.step == with_data.step and alone.info == read_info
    for x, y in zip(jax.tree.leaves(alone.state), jax.tree.leaves(with_data.state), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_predict_and_export_work_with_the_data_deleted(finished, tmp_path, capsys):
    npz, workdir, image = finished
    before = predict_files(workdir, [image])
    moved = str(tmp_path / "moved.npz")
    os.replace(npz, moved)
    try:
        after = predict_files(workdir, [image])
        assert after == before and "top" in after[0]
        result = export_run(workdir, formats=("onnx",), num_parity_images=64)
    finally:
        os.replace(moved, npz)
    assert "random images" in capsys.readouterr().out
    figures = result["parity"]["onnx"]
    assert figures["images"] == 64 and figures["accuracy"] is None
    assert figures["top1_agreement"] == 1.0 and figures["max_abs_prob_diff"] < 1e-4
