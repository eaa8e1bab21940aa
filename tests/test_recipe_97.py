"""configs/fashion_mnist_97.py through the real training path at toy size, WideResNet-16-8's
parameter count, and benchmarks/recipe_seeds.py: the time budget, and the ensemble rows checked
against probabilities computed here from the two runs' checkpoints."""

import functools
import gzip
import json
import os
import struct
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from flaxcls.core.optim import uses_sam
from flaxcls.models import MODELS, get_model
from flaxcls.models.wide_resnet import WideResNet
from flaxcls.modes import train as train_lib
from flaxcls.testing.toy import restored_state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "fashion_mnist_97.py")
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import recipe_seeds  # noqa: E402


def write_idx(directory: str, n_train: int = 64, n_test: int = 45) -> tuple[np.ndarray, ...]:
    """Gzipped Fashion-MNIST-shaped IDX files (28x28 uint8, labels 0-9), as the original
    release ships them; class k brightens row band k, so a few steps learn something."""
    rng = np.random.default_rng(0)

    def make(n):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 80, (n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(labels):
            images[i, 2 * k + 4 : 2 * k + 7, 4:24] = rng.integers(180, 256, (3, 20))
        return images, labels

    train, test = make(n_train), make(n_test)
    files = {
        "train-images-idx3-ubyte": train[0],
        "train-labels-idx1-ubyte": train[1],
        "t10k-images-idx3-ubyte": test[0],
        "t10k-labels-idx1-ubyte": test[1],
    }
    for name, array in files.items():
        header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
            struct.pack(">I", d) for d in array.shape
        )
        with gzip.open(os.path.join(directory, name + ".gz"), "wb") as f:
            f.write(header + array.tobytes())
    return test


def _wide_resnet_count(depth: int, k: int, channels: int, classes: int) -> int:
    """Bias-free 3x3 convs, BatchNorm scale and bias, 1x1 shortcuts where the width or the
    stride changes, a dense head with bias."""
    count, previous = 9 * channels * 16, 16
    for stage, width in enumerate((16 * k, 32 * k, 64 * k)):
        for block in range((depth - 4) // 6):
            count += 2 * previous + 9 * previous * width + 2 * width + 9 * width * width
            if previous != width or (stage > 0 and block == 0):
                count += previous * width
            previous = width
    return count + 2 * previous + previous * classes + classes


def test_wide_resnet16_8_parameter_count():
    model = get_model("wide_resnet16_8", num_classes=10)
    images = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    init = functools.partial(model.init, train=False)
    variables = jax.eval_shape(init, jax.random.PRNGKey(0), images)
    count = sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))
    assert count == _wide_resnet_count(16, 8, 3, 10)
    assert round(count / 1e6, 1) == 11.0  # Zagoruyko & Komodakis's 11.0M


@pytest.mark.slow
def test_the_recipe_trains_at_toy_size(tmp_path, monkeypatch):
    """The config as shipped (bf16, SAM, EMA, crop + flip, erasing, cutmix, flip TTA, data on
    the device, IDX files) for one short epoch, with WideResNet-10-1 under the recipe's model
    name so a CPU compiles it in seconds."""
    monkeypatch.setitem(
        MODELS, "wide_resnet16_8", functools.partial(WideResNet, depth=10, widen_factor=1)
    )
    write_idx(str(tmp_path))
    config = recipe_seeds.load_config(
        CONFIG,
        [
            f"data.path={tmp_path}",
            "num_epochs=1.0",
            "eval_every_epochs=1.0",
            "batch_size=16",
            "eval_batch_size=20",
            "steps_per_dispatch=1",
            "progress_bar=False",
            "compilation_cache_dir=''",
        ],
    )
    workdir = str(tmp_path / "run")
    test = train_lib.train_and_evaluate(config, workdir)
    assert test["step"] == 4 and test["num_examples"] == 45  # 64 // 16 steps; every test image
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert all(r["skipped_steps"] == 0 for r in records if "skipped_steps" in r)
    state = restored_state(workdir, config)
    assert uses_sam(state.opt_state) and state.ema is not None
    # SAM's base optimiser took 4 steps of Nesterov momentum from zero.
    trace = jax.tree.leaves(state.opt_state.opt_state)
    assert any(float(jnp.max(jnp.abs(x))) > 0 for x in trace if x.ndim > 1)


def _probabilities(workdir: str, images: np.ndarray, flip: bool) -> np.ndarray:
    """A finished run's class probabilities, from its checkpoint, written out here: the
    moving-average weights, the normalisation in dataset.json, flip TTA as the mean of the
    logits of each image and its mirror."""
    with open(os.path.join(workdir, "config.json")) as f:
        config = ml_collections.ConfigDict(json.load(f))
    with open(os.path.join(workdir, "dataset.json")) as f:
        info = json.load(f)["info"]
    state = restored_state(workdir, config)
    x = (images[..., None].astype(np.float32) / 255.0 - np.float32(info["mean"][0])) / np.float32(
        info["std"][0]
    )
    logits = np.asarray(state.apply_fn(state.ema, x, train=False), np.float64)
    if flip:
        mirrored = np.ascontiguousarray(x[:, :, ::-1])
        logits = 0.5 * (logits + np.asarray(state.apply_fn(state.ema, mirrored, train=False)))
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.slow
def test_two_seeds_and_their_ensemble_rows(tmp_path):
    """recipe_seeds runs two seeds of the recipe (a small float32 model: the ensemble is
    checked to rounding) as `run.py` processes, then `--mode=evaluate --ensemble`; its rows
    agree with the ensemble computed here from the two checkpoints."""
    test_images, test_labels = write_idx(str(tmp_path))
    out = str(tmp_path / "seeds.json")
    sets = [f"data.path={tmp_path}", "model.name=mlp", "model.dtype=float32"]
    sets += ["num_epochs=1.0", "eval_every_epochs=1.0", "batch_size=16", "eval_batch_size=20"]
    sets += ["steps_per_dispatch=1"]
    recipe_seeds.main(
        ["--config", CONFIG, "--seeds", "0", "1", "--ensemble", "--out", out]
        + ["--workdir", str(tmp_path / "runs"), "--set", *sets]
    )
    with open(out) as f:
        result = json.load(f)
    runs = result["runs"]
    assert [r["seed"] for r in runs] == [0, 1] and all(r["finished"] for r in runs)
    workdirs = [str(tmp_path / "runs" / f"seed_{s}") for s in (0, 1)]
    singles = [_probabilities(w, test_images, flip=True) for w in workdirs]
    for run, probs in zip(runs, singles, strict=True):  # the config tests with flip TTA
        assert run["test_accuracy"] == np.mean(probs.argmax(1) == test_labels)
    assert result["summary"]["seeds_finished"] == 2
    assert result["summary"]["mean_test_accuracy"] == pytest.approx(
        np.mean([r["test_accuracy"] for r in runs])
    )
    rows = {row["variant"]: row for row in result["ensemble"]["rows"]}
    assert set(rows) == {"ensemble of 2", "ensemble of 2 + flip TTA"}
    for flip, name in ((False, "ensemble of 2"), (True, "ensemble of 2 + flip TTA")):
        probs = np.mean([_probabilities(w, test_images, flip) for w in workdirs], axis=0)
        assert rows[name]["accuracy"] == np.mean(probs.argmax(1) == test_labels)
        nll = -np.mean(np.log(probs[np.arange(len(test_labels)), test_labels]))
        # float32 softmax summed in another order than float64 numpy here
        assert rows[name]["loss"] == pytest.approx(nll, rel=1e-4)


@pytest.mark.parametrize("concurrent", [False, True])
def test_the_time_budget_stops_cleanly_and_writes_what_it_has(tmp_path, concurrent):
    """A budget that runs out while the first seed starts: it is stopped (SIGTERM); run in
    turn, the second never starts; run at once, both are stopped. The JSON says so."""
    write_idx(str(tmp_path))  # real data: the seeds are still starting when the budget ends
    out = str(tmp_path / "seeds.json")
    recipe_seeds.main(
        ["--config", CONFIG, "--seeds", "0", "1", "--budget_s", "1", "--ensemble"]
        + ["--ensemble_reserve_s", "0", "--out", out, "--workdir", str(tmp_path / "runs")]
        + ["--set", f"data.path={tmp_path}"]
        + (["--concurrent"] if concurrent else [])
    )
    with open(out) as f:
        result = json.load(f)
    first, second = result["runs"]
    assert result["mode"] == ("concurrent" if concurrent else "sequential")
    assert not first["finished"] and "SIGTERM" in first["stopped"]
    assert not second["finished"]
    assert ("SIGTERM" if concurrent else "not started") in second["stopped"]
    assert result["summary"]["seeds_finished"] == 0
    assert "ensemble needs 2" in result["ensemble"]["skipped"]


def test_validation_mode_needs_a_validation_split(tmp_path):
    with pytest.raises(SystemExit, match="validation_fraction"):
        recipe_seeds.main(["--config", CONFIG, "--validation", "--out", str(tmp_path / "x")])
