"""Vision Transformers: published sizes, the step contract, and timm / torchvision weights giving
PyTorch's own logits (fixtures made by tests/fixtures/make_vit_fixture.py; no torch needed)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flaxcls import create_train_state, eval_step, get_model, train_step, transfer
from flaxcls.errors import ConfigError
from flaxcls.models.vit import ViT

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def _count(name: str, side: int, num_classes: int) -> int:
    model = get_model(name, num_classes=num_classes)
    images = jnp.zeros((1, side, side, 3))
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images, train=False))
    return sum(leaf.size for leaf in jax.tree.leaves(shapes))


@pytest.mark.parametrize(
    "name, published",
    # DeiT (Touvron et al. 2021) and timm's deit_*_patch16_224 / vit_base_patch16_224
    [("vit_ti16", 5_717_416), ("vit_s16", 22_050_664), ("vit_b16", 86_567_656)],
)
def test_parameter_counts_are_the_published_ones(name, published):
    assert _count(name, 224, 1000) == published


def test_cifar_vit_is_vit_lite_7_4_sized():
    # Hassani et al. 2021 give ViT-Lite-7/4 3.717M parameters on CIFAR-10; theirs has no
    # q/k/v biases (7 blocks of 3 x 256), timm's layout here does
    assert round((_count("vit_cifar", 32, 10) - 7 * 3 * 256) / 1e6, 3) == 3.717


def _tiny_vit(num_classes: int = 5, **kwargs) -> ViT:
    # the fixtures' size: 32x32 images, patch 8, width 32, 2 blocks of 2 heads
    return ViT(num_classes=num_classes, patch_size=8, width=32, depth=2, num_heads=2, **kwargs)


def _logits(state, images):
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    return np.asarray(state.apply_fn(variables, jnp.asarray(images), train=False))


@pytest.mark.parametrize("layout", ["timm", "torchvision"])
def test_pytorch_weights_give_pytorch_logits(layout):
    fixture = np.load(os.path.join(FIXTURES, "vit_logits.npz"))
    images = fixture["images"]
    state = create_train_state(_tiny_vit(), optax.sgd(0.1), jax.random.PRNGKey(0), (32, 32, 3))
    path = os.path.join(FIXTURES, f"vit_{layout}.safetensors")
    state, summary = transfer.init_from_run(state, path, init_head=True)
    assert summary["fresh"] == []
    # float32 throughout on both sides, logits of order 1: rounding differences (summation
    # order, erf and softmax implementations) stay near 1e-6; a wrong transpose or head split
    # moves them by order 1.
    np.testing.assert_allclose(
        _logits(state, images), fixture[f"{layout}_logits"], atol=1e-4, rtol=1e-4
    )


def test_fine_tuning_another_label_set_keeps_a_fresh_head():
    model = _tiny_vit(num_classes=3)
    state = create_train_state(model, optax.sgd(0.1), jax.random.PRNGKey(0), (32, 32, 3))
    path = os.path.join(FIXTURES, "vit_timm.safetensors")
    new, summary = transfer.init_from_run(state, path)  # init_head=False: head.* is not read
    assert set(summary["fresh"]) == {"params/head/kernel", "params/head/bias"}
    np.testing.assert_array_equal(new.params["head"]["kernel"], state.params["head"]["kernel"])
    assert not np.allclose(new.params["pos_embed"], state.params["pos_embed"])


def test_weights_of_another_size_are_refused_by_name():
    model = _tiny_vit(num_classes=5)
    state = create_train_state(model, optax.sgd(0.1), jax.random.PRNGKey(0), (16, 16, 3))
    path = os.path.join(FIXTURES, "vit_timm.safetensors")
    with pytest.raises(ConfigError, match="pos_embed"):  # 16 px: 5 tokens here, 17 there
        transfer.init_from_run(state, path)


def test_trains_through_the_steps_with_stochastic_depth():
    model = _tiny_vit(num_classes=3, drop_path_rate=0.5)
    state = create_train_state(model, optax.adam(3e-3), jax.random.PRNGKey(0), (16, 16, 3))
    assert state.batch_stats == {}
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.normal(size=(8, 16, 16, 3)).astype(np.float32),
        "label": rng.integers(0, 3, 8).astype(np.int32),
    }
    head = {"kernel": jnp.asarray(rng.normal(size=(32, 3)), jnp.float32), "bias": jnp.zeros(3)}
    variables = {"params": {**state.params, "head": head}}  # the zero head hides the features
    images = jnp.asarray(batch["image"])
    drawn = [
        model.apply(variables, images, train=True, rngs={"dropout": jax.random.PRNGKey(i)})
        for i in (0, 0, 1)
    ]
    np.testing.assert_array_equal(drawn[0], drawn[1])
    assert not np.allclose(drawn[0], drawn[2])  # the step's dropout rng drops branches
    step = jax.jit(train_step)
    first = float(jax.jit(eval_step)(state, batch)["loss"])
    for _ in range(20):
        state, _ = step(state, batch)
    assert float(jax.jit(eval_step)(state, batch)["loss"]) < 0.5 * first


def test_bfloat16_compute_keeps_float32_parameters_and_logits():
    model = _tiny_vit(num_classes=3, dtype=jnp.bfloat16)
    images = jnp.ones((2, 16, 16, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images, train=False))
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    logits = jax.eval_shape(lambda v: model.apply(v, images, train=False), variables)
    assert (logits.dtype, logits.shape) == (jnp.float32, (2, 3))


@pytest.mark.slow
def test_a_trained_vit_exports_with_parity(tmp_path, monkeypatch):
    """run.py's path for a ViT: trained by name, restored from its checkpoint, exported to
    ONNX and TFLite, both agreeing with JAX."""
    import functools

    from flaxcls import export as export_lib
    from flaxcls import train as train_lib
    from flaxcls.models import MODELS
    from tests.helpers import tiny_config, write_npz

    small = functools.partial(ViT, patch_size=4, width=32, depth=2, num_heads=2)
    monkeypatch.setitem(MODELS, "vit_tiny", small)
    npz = write_npz(str(tmp_path), n_test=20)  # 28x28x1: 7x7 patches
    config = tiny_config(npz, **{"model.name": "vit_tiny", "num_train_steps": 6})
    workdir = str(tmp_path / "run")
    train_lib.train_and_evaluate(config, workdir)
    result = export_lib.export_run(workdir, checkpoint="latest", num_parity_images=20)
    for name in ("onnx", "tflite"):
        figures = result["parity"][name]
        assert figures["images"] == 20 and figures["top1_agreement"] == 1.0, (name, figures)
        assert figures["max_abs_prob_diff"] < 1e-5, (name, figures)
