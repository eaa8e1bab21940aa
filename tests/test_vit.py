"""Vision Transformers (published parameter counts: test_models.py): timm and torchvision
weights give PyTorch's own logits (fixtures made by tests/fixtures/make_vit_fixture.py; no torch
needed here), stochastic depth, bfloat16, training and export."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flaxcls import create_train_state, eval_step, get_model, train_step
from flaxcls.errors import ConfigError
from flaxcls.models import foreign
from flaxcls.models.vit import ViT

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def _count(name: str, side: int, num_classes: int) -> int:
    model = get_model(name, num_classes=num_classes)
    images = jnp.zeros((1, side, side, 3))
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images, train=False))
    return sum(leaf.size for leaf in jax.tree.leaves(shapes))


def test_cifar_vit_is_vit_lite_7_4_sized():
    # Hassani et al. 2021 give ViT-Lite-7/4 3.717M parameters on CIFAR-10; theirs has no
    # q/k/v biases (7 blocks of 3 x 256), timm's layout here does
    assert round((_count("vit_cifar", 32, 10) - 7 * 3 * 256) / 1e6, 3) == 3.717


def _tiny_vit(num_classes: int = 5, **kwargs) -> ViT:
    # the fixtures' size: 32x32 images, patch 8, width 32, 2 blocks of 2 heads
    return ViT(num_classes=num_classes, patch_size=8, width=32, depth=2, num_heads=2, **kwargs)


def _template(model: ViT, side: int = 32) -> dict:
    """Zeros in the shape of the model's variables, without running (or compiling) its init."""
    images = jnp.zeros((1, side, side, 3))
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images, train=False))
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def _fixture_weights(layout: str) -> dict:
    return foreign.load_state_dict(os.path.join(FIXTURES, f"vit_{layout}.safetensors"))


@pytest.fixture(scope="module")
def reference():
    with np.load(os.path.join(FIXTURES, "vit_logits.npz")) as f:
        return dict(f)


@pytest.mark.parametrize("layout", ["timm", "torchvision"])
def test_pytorch_weights_give_pytorch_logits(layout, reference):
    model = _tiny_vit()
    variables, fresh = foreign.variables_from_torch(_fixture_weights(layout), _template(model))
    assert fresh == []
    logits = jax.jit(functools.partial(model.apply, train=False))(variables, reference["images"])
    # float32 throughout on both sides, logits of order 1: rounding differences (summation
    # order, erf and softmax implementations) stay near 1e-6; a wrong transpose or head split
    # moves them by order 1.
    np.testing.assert_allclose(logits, reference[f"{layout}_logits"], atol=1e-4, rtol=1e-4)


def test_fine_tuning_another_label_set_keeps_a_fresh_head():
    template = _template(_tiny_vit(num_classes=3))
    weights = foreign.without_head(_fixture_weights("timm"))  # what init_head=False reads
    assert sorted(set(_fixture_weights("timm")) - set(weights)) == ["head.bias", "head.weight"]
    variables, fresh = foreign.variables_from_torch(weights, template)
    assert set(fresh) == {"params/head/kernel", "params/head/bias"}
    np.testing.assert_array_equal(variables["params"]["pos_embed"], weights["pos_embed"])


def test_weights_of_another_size_are_refused_by_name():
    template = _template(_tiny_vit(), side=16)  # 16 px: 5 tokens here, 17 in the weights
    with pytest.raises(ConfigError, match="pos_embed"):
        foreign.variables_from_torch(_fixture_weights("timm"), template)


def test_stochastic_depth_draws_from_the_dropout_rng(reference):
    model = _tiny_vit(drop_path_rate=0.5)
    variables, _ = foreign.variables_from_torch(_fixture_weights("timm"), _template(model))
    apply = jax.jit(functools.partial(model.apply, train=True))
    images = reference["images"]
    drawn = [apply(variables, images, rngs={"dropout": jax.random.PRNGKey(i)}) for i in (0, 0, 1)]
    np.testing.assert_array_equal(drawn[0], drawn[1])
    assert not np.allclose(drawn[0], drawn[2])  # the rng decides which branches are dropped
    # in evaluation every branch is kept: the fixture's logits
    evaluated = jax.jit(functools.partial(model.apply, train=False))(variables, images)
    np.testing.assert_allclose(evaluated, reference["timm_logits"], atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_trains_through_the_steps():
    model = _tiny_vit(num_classes=3, drop_path_rate=0.1)
    state = create_train_state(model, optax.adam(3e-3), jax.random.PRNGKey(0), (16, 16, 3))
    assert state.batch_stats == {}
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.normal(size=(8, 16, 16, 3)).astype(np.float32),
        "label": rng.integers(0, 3, 8).astype(np.int32),
    }
    step, evaluate = jax.jit(train_step), jax.jit(eval_step)
    first = float(evaluate(state, batch)["loss"])
    for _ in range(20):
        state, _ = step(state, batch)
    assert float(evaluate(state, batch)["loss"]) < 0.5 * first


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
    from flaxcls.models import MODELS
    from flaxcls.modes import export as export_lib
    from flaxcls.modes import train as train_lib
    from flaxcls.testing.toy import tiny_config, write_npz

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
