"""flaxcls's speedrun parts against airbench94's own code (tests/fixtures/airbench94.npz, made
by tests/fixtures/make_airbench94_fixture.py with torch and airbench): the same weights give
the same logits and loss, 12 optimiser steps of the recipe (decoupled Nesterov SGD, the
BatchNorm biases' rate, the triangle schedule, the whitening bias frozen after an epoch,
lookahead with its final copy) give the same weights, and the whitening, translation and
test-time augmentation views are airbench's.

Tolerances come from the fixture: airbench's float32 run against the same run in float64
measures float32's own rounding over the 12 steps, and the port may differ from airbench by
a small multiple of it. BatchNorm running variances differ by design: torch averages the
unbiased batch variance (n / (n - 1)), flax the biased one.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxcls.core.lookahead import Lookahead
from flaxcls.core.optim import make_optimizer
from flaxcls.core.steps import create_train_state, predict, train_step
from flaxcls.data.augment import get_augmentation
from flaxcls.data.pipeline import alternating_flips
from flaxcls.models.speedrun import SpeedrunCNN
from flaxcls.models.whitening import patch_whitening_kernel

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "airbench94.npz")
WIDTHS = (8, 16, 16)  # the fixture's make_net94 widths
BATCH, BATCHES, EPOCHS = 32, 4, 3  # and its training: 12 steps
STEPS = BATCHES * EPOCHS
CIFAR_MEAN = np.array((0.4914, 0.4822, 0.4465), np.float32)
CIFAR_STD = np.array((0.2470, 0.2435, 0.2616), np.float32)
# airbench module index -> flaxcls group, and each group's BatchNorm side at 32x32 input
GROUPS = {"2": ("group1", 15), "3": ("group2", 7), "4": ("group3", 3)}
ROUNDING_MULTIPLE = 20.0


@pytest.fixture(scope="module")
def fixture() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as data:
        return dict(data)


def normalize(pixels: np.ndarray) -> np.ndarray:
    return ((pixels.astype(np.float32) / 255 - CIFAR_MEAN) / CIFAR_STD).astype(np.float32)


def hwio(kernel: np.ndarray) -> np.ndarray:
    return np.transpose(kernel, (2, 3, 1, 0))  # torch OIHW -> flax HWIO


def variables_from(state_dict: dict[str, np.ndarray], prefix: str) -> dict[str, dict]:
    """airbench's state_dict (keys `prefix/...`) as flaxcls {'params', 'batch_stats'}."""
    sd = {k[len(prefix) + 1 :]: v for k, v in state_dict.items() if k.startswith(prefix + "/")}
    params = {
        "stem": {"kernel": hwio(sd["0.weight"]), "bias": sd["0.bias"]},
        "head": {"kernel": sd["7.weight"].T},
    }
    stats = {}
    for index, (group, _) in GROUPS.items():
        for j in (1, 2):
            params[f"{group}_conv{j}"] = {"kernel": hwio(sd[f"{index}.conv{j}.weight"])}
            params[f"{group}_norm{j}"] = {"bias": sd[f"{index}.norm{j}.bias"]}
            stats[f"{group}_norm{j}"] = {
                "mean": sd[f"{index}.norm{j}.running_mean"],
                "var": sd[f"{index}.norm{j}.running_var"],
            }
    as_f32 = functools.partial(jax.tree.map, lambda x: jnp.asarray(x, jnp.float32))
    return {"params": as_f32(params), "batch_stats": as_f32(stats)}


def recipe_optimizer():
    """The recipe of configs/cifar10_speedrun.py at the fixture's batch size and length."""
    return make_optimizer(
        "sgd_decoupled",
        11.5,
        schedule="triangle",
        total_steps=STEPS,
        start_factor=0.2,
        peak_fraction=0.23,
        end_factor=0.07,
        weight_decay=0.0153,
        momentum=0.85,
        nesterov=True,
        batch_size=BATCH,
        norm_bias_lr_factor=64.0,
        freeze="^stem/kernel$",
        freeze_after="^stem/bias$",
        freeze_after_steps=BATCHES,  # whiten_bias_epochs=1
    )


def airbench_state(fixture: dict, lookahead: Lookahead | None = None):
    """airbench's initial weights with its whitened stem, as a flaxcls state."""
    model = SpeedrunCNN(num_classes=10, widths=WIDTHS)
    tx = recipe_optimizer()
    state = create_train_state(model, tx, jax.random.PRNGKey(0), (32, 32, 3), lookahead=lookahead)
    initial = variables_from(fixture, "initial")
    whitened = jnp.asarray(hwio(fixture["whitening"]))
    params = {**initial["params"], "stem": {**initial["params"]["stem"], "kernel": whitened}}
    # airbench's lookahead copy is taken before the stem is whitened: it starts from the
    # network's random stem, as flaxcls's does (the state is made before `whiten_stem`).
    return state.replace(
        params=params,
        batch_stats=initial["batch_stats"],
        opt_state=tx.init(params),
        lookahead=initial if lookahead is not None else None,
    )


def test_whitening_is_airbenchs(fixture):
    images = normalize(fixture["train_pixels"])
    ours = patch_whitening_kernel(images, 2, centered=False)  # HWIO, 24 filters
    theirs = hwio(fixture["whitening"])
    half = ours.shape[-1] // 2
    for kernel in (ours, theirs):  # each direction and its negation
        np.testing.assert_array_equal(kernel[..., half:], -kernel[..., :half])
    f, g = ours[..., :half].reshape(-1, half), theirs[..., :half].reshape(-1, half)
    # Eigenvectors are defined up to sign, and up to a rotation where eigenvalues (nearly)
    # coincide; F F^T = (second moment + eps)^-1 is not, nor are the filters' norms
    # 1 / sqrt(eigenvalue + eps), which give their order. float64 (numpy) against float32
    # (torch) moments: agreement to a part in a thousand.
    np.testing.assert_allclose(f @ f.T, g @ g.T, rtol=0, atol=1e-3 * np.abs(g @ g.T).max())
    np.testing.assert_allclose(np.linalg.norm(f, axis=0), np.linalg.norm(g, axis=0), rtol=1e-3)


def test_same_weights_same_logits_and_loss(fixture):
    state = airbench_state(fixture)
    images = jnp.asarray(normalize(fixture["train_pixels"][:BATCH]))
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    logits, _ = state.apply_fn(variables, images, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(logits, fixture["first_logits"], rtol=1e-4, atol=1e-5)
    _, sums = train_step(
        state,
        {"image": images, "label": jnp.asarray(fixture["train_labels"][:BATCH], jnp.int32)},
        label_smoothing=0.2,
    )
    np.testing.assert_allclose(sums["loss"], fixture["first_loss"], rtol=1e-5)


def rounding_tolerance(fixture: dict, key: str) -> float:
    """A multiple of how far airbench's float32 run ends from its float64 run at `key`."""
    noise = np.abs(fixture[f"final/{key}"] - fixture[f"final64/{key}"]).max()
    return ROUNDING_MULTIPLE * float(noise) + 1e-7


def test_recipe_steps_match_airbench(fixture):
    lookahead = Lookahead(every=5, decay=0.95, power=3.0, total_steps=STEPS)
    state = airbench_state(fixture, lookahead)
    images = normalize(fixture["train_pixels"])
    labels = fixture["train_labels"].astype(np.int32)
    step = jax.jit(functools.partial(train_step, label_smoothing=0.2))
    for i in range(STEPS):
        rows = slice((i % BATCHES) * BATCH, (i % BATCHES + 1) * BATCH)
        state, _ = step(state, {"image": images[rows], "label": labels[rows]})
    initial = variables_from(fixture, "initial")["params"]
    theirs = variables_from(fixture, "final")
    torch_keys = {
        ("stem", "kernel"): "0.weight",
        ("stem", "bias"): "0.bias",
        ("head", "kernel"): "7.weight",
    }
    for index, (group, _) in GROUPS.items():
        for j in (1, 2):
            torch_keys[(f"{group}_conv{j}", "kernel")] = f"{index}.conv{j}.weight"
            torch_keys[(f"{group}_norm{j}", "bias")] = f"{index}.norm{j}.bias"
    for (module, name), key in torch_keys.items():
        ours, want = state.params[module][name], theirs["params"][module][name]
        moved = np.abs(want - initial[module][name]).max()
        tolerance = rounding_tolerance(fixture, key)
        # the comparison means something only where training moved the weights much more
        assert tolerance < 0.05 * moved or module == "stem", (module, tolerance, moved)
        np.testing.assert_allclose(ours, want, rtol=0, atol=tolerance, err_msg=f"{module}/{name}")
    for index, (group, side) in GROUPS.items():
        n = BATCH * side * side
        for j in (1, 2):
            norm = f"{group}_norm{j}"
            ours, want = state.batch_stats[norm], theirs["batch_stats"][norm]
            key = f"{index}.norm{j}.running_"
            mean_tol = rounding_tolerance(fixture, key + "mean")
            np.testing.assert_allclose(ours["mean"], want["mean"], rtol=0, atol=mean_tol)
            # torch's unbiased averages exceed flax's by at most var / (n - 1)
            var_tol = np.asarray(ours["var"]) / (n - 1) + rounding_tolerance(fixture, key + "var")
            assert np.all(np.abs(np.asarray(ours["var"]) - want["var"]) <= var_tol), norm


@pytest.mark.parametrize("level", [0, 1, 2])
def test_tta_levels_are_airbenchs(fixture, level):
    state = airbench_state(fixture)
    final = variables_from(fixture, "final")
    state = state.replace(params=final["params"], batch_stats=final["batch_stats"])
    images = jnp.asarray(normalize(fixture["test_pixels"]))
    logits = predict(state, images, flip_tta=level >= 1, translate_tta=1 if level == 2 else 0)
    want = fixture[f"tta{level}"]
    np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_translations_are_airbenchs(fixture):
    """Each of airbench's 2-pixel translations (reflect padding) is one of the 25 that
    flaxcls's crop draws, each reached by its uniform draw."""
    images = normalize(fixture["test_pixels"])
    crop = get_augmentation("crop", crop_padding=2, padding_mode="reflect")
    theirs = np.transpose(fixture["translate_crops"], (0, 2, 3, 1))
    shifts = [(top, left) for top in range(5) for left in range(5)]
    candidates = []
    for top, left in shifts:
        uniforms = np.tile(np.float32([0.9, (top + 0.5) / 5, (left + 0.5) / 5]), (len(images), 1))
        candidates.append(crop(images, uniforms))
    for i, want in enumerate(theirs):
        errors = [np.abs(c[i] - want).max() for c in candidates]
        assert min(errors) < 1e-5, f"image {i}: no flaxcls translation matches airbench's crop"
    assert (
        len({np.argmin([np.abs(c[i] - w).max() for c in candidates]) for i, w in enumerate(theirs)})
        > 1
    )  # the fixture's crops are not all one shift


def test_alternating_flip_alternates():
    """airbench's altflip: a random flip per image in the first epoch, then every image
    mirrored on odd epochs, so each sees both sides in any two epochs in a row."""
    n, batch = 40, 8  # 5 steps an epoch
    index = np.arange(n)
    per_epoch = [
        np.concatenate(
            [
                alternating_flips(3, e * 5 + s, index[s * batch : (s + 1) * batch], n)
                for s in range(5)
            ]
        )
        for e in range(4)
    ]
    assert 0 < per_epoch[0].sum() < n  # random in the first epoch
    for e in range(1, 4):
        np.testing.assert_array_equal(per_epoch[e], ~per_epoch[e - 1])
