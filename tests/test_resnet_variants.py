"""The ResNet variants of `RESNET50_VARIANTS` compute today's function from today's parameters.

Each variant is built next to today's model (a narrow ResNet-18 on 32x32 images, float32) and
applied to today's variables: the same parameter tree, the same initial values, the same logits
in eval and train mode, the same BatchNorm statistics and the same parameter gradients, to
float32 rounding. The max pool of `pool_slices` differs from reduce_window's gradient only on
exact ties, which a ReLU in front turns into zero-gradient entries; the tests' inputs have none
elsewhere. The structural tests check that each variant changes the program as it claims.
Last, the benchmark's FLOP count, which MFU takes from today's model for every variant.
"""

import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxcls.models import resnet
from flaxcls.models.layers import max_pool, max_pool_slices

NUM_CLASSES = 10
SHAPE = (4, 32, 32, 3)
Small = functools.partial(resnet.ResNet18, num_classes=NUM_CLASSES, num_filters=8)
VARIANTS = [name for name in resnet.RESNET50_VARIANTS if name != "today"]
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))

import resnet50_vs_pytorch  # noqa: E402


def _images(seed: int = 0) -> jax.Array:
    # a mean far from zero, where a one-pass variance loses the most digits
    return 1.0 + jax.random.normal(jax.random.PRNGKey(seed), SHAPE)


def _loss(model, params, batch_stats, images, labels):
    logits, updates = model.apply(
        {"params": params, "batch_stats": batch_stats},
        images,
        train=True,
        mutable=["batch_stats"],
    )
    one_hot = jax.nn.one_hot(labels, NUM_CLASSES)
    loss = -jnp.mean(jnp.sum(jax.nn.log_softmax(logits) * one_hot, axis=-1))
    return loss, (logits, updates["batch_stats"])


@functools.cache
def _results(options: tuple) -> dict:
    """Eval logits, train logits, new BatchNorm statistics and gradients of `Small(**options)`,
    all from today's model's initial variables."""
    variables = Small().init(jax.random.PRNGKey(0), jnp.zeros(SHAPE), train=False)
    model = Small(**dict(options))
    images, labels = _images(), jnp.arange(SHAPE[0]) % NUM_CLASSES
    grad = jax.jit(jax.grad(functools.partial(_loss, model), has_aux=True))
    grads, (train_logits, stats) = grad(
        variables["params"], variables["batch_stats"], images, labels
    )
    eval_logits = jax.jit(functools.partial(model.apply, train=False))(variables, images)
    return {"eval": eval_logits, "train": train_logits, "batch_stats": stats, "grads": grads}


def _differences(a, b, rtol: float = 1e-4) -> list[str]:
    """Leaves of two trees that differ by more than `rtol` of the reference leaf's largest
    magnitude (a scale-aware float32 tolerance: gradients of one tensor span many decades)."""
    out = []
    for (path, x), y in zip(
        jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves(b), strict=True
    ):
        x, y = np.asarray(x), np.asarray(y)
        error = float(np.max(np.abs(x - y))) if x.size else 0.0
        scale = float(np.max(np.abs(y))) if y.size else 0.0
        if x.shape != y.shape or error > rtol * max(scale, 1e-30):
            out.append(f"{jax.tree_util.keystr(path)}: error {error:.3g}, scale {scale:.3g}")
    return out


def _options(name: str) -> tuple:
    return tuple(sorted(resnet.RESNET50_VARIANTS[name].items()))


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_same_parameters_and_initial_values(name):
    key, images = jax.random.PRNGKey(3), jnp.zeros(SHAPE)
    today = Small().init(key, images, train=False)
    variant = Small(**resnet.RESNET50_VARIANTS[name]).init(key, images, train=False)
    assert jax.tree.structure(variant) == jax.tree.structure(today)
    assert not _differences(variant, today, rtol=0.0)


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_same_outputs_statistics_and_gradients(name):
    today, variant = _results(()), _results(_options(name))
    for part in ("eval", "train", "batch_stats", "grads"):
        assert not _differences(variant[part], today[part]), part


def test_comparison_tells_a_different_network_apart():
    # no stem max pool: the same parameters and logits' shape, another function
    today, other = _results(()), _results((("stem_pool", False),))
    for part in ("eval", "train", "grads"):
        assert _differences(other[part], today[part]), part


def _grad_jaxpr(**options) -> str:
    model = Small(**options)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros(SHAPE), train=False)
    labels = jnp.zeros(SHAPE[0], jnp.int32)
    grad = jax.grad(functools.partial(_loss, model), has_aux=True)
    return str(
        jax.make_jaxpr(grad)(variables["params"], variables["batch_stats"], _images(), labels)
    )


def test_pool_slices_gradient_has_no_select_and_scatter():
    assert "select_and_scatter" in _grad_jaxpr()
    assert "select_and_scatter" not in _grad_jaxpr(stem_pool_impl="slices")


@pytest.mark.parametrize("channels", [4, 8])
def test_padded_stem_convolves_padded_channels(channels):
    model = Small(stem_input_channels=channels)
    variables = Small().init(jax.random.PRNGKey(0), jnp.zeros(SHAPE), train=False)
    jaxpr = jax.make_jaxpr(functools.partial(model.apply, train=False))(variables, _images())
    convs = [e for e in jaxpr.eqns if e.primitive.name == "conv_general_dilated"]
    assert convs[0].invars[0].aval.shape[-1] == channels  # the stem's input
    assert convs[0].invars[1].aval.shape[-2] == channels  # the stem's kernel


@pytest.mark.parametrize(
    "shape, window, strides, padding",
    [
        ((2, 9, 9, 3), 3, 2, ((1, 1), (1, 1))),  # the stem's pool, odd size
        ((2, 8, 10, 3), 3, 2, ((1, 1), (1, 1))),  # even sizes
        ((1, 7, 7, 2), 2, 2, "VALID"),
        ((1, 7, 6, 2), 3, 1, ((0, 2), (1, 0))),
    ],
)
def test_max_pool_slices_matches_reduce_window(shape, window, strides, padding):
    x = jax.random.normal(jax.random.PRNGKey(1), shape)  # no ties
    cotangent = jax.random.normal(
        jax.random.PRNGKey(2), max_pool(x, window, strides, padding).shape
    )

    def pulled_back(pool):
        out, vjp = jax.vjp(lambda x: pool(x, window, strides, padding), x)
        return out, vjp(cotangent)[0]

    (want, want_grad), (got, got_grad) = pulled_back(max_pool), pulled_back(max_pool_slices)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got_grad, want_grad, rtol=1e-6, atol=1e-6)


def test_max_pool_slices_ties_keep_the_window_total():
    # all equal: each window's cotangent is split between its elements instead of given to one
    x, padding = jnp.ones((1, 5, 5, 1)), ((1, 1), (1, 1))
    for pool in (max_pool, max_pool_slices):
        out, vjp = jax.vjp(lambda x, pool=pool: pool(x, 3, 2, padding), x)
        np.testing.assert_allclose(vjp(jnp.ones_like(out))[0].sum(), out.size, rtol=1e-6)


def test_max_pool_slices_rejects_same_padding():
    with pytest.raises(ValueError, match="explicit padding"):
        max_pool_slices(jnp.zeros((1, 4, 4, 1)), 3, 2, "SAME")


def test_model_flops_of_resnet50_at_224():
    # torchvision's ResNet-50: 4.09 G multiply-adds per 224px image (convolutions and fc)
    model = resnet.ResNet50(num_classes=1000, dtype=jnp.bfloat16)
    flops = resnet50_vs_pytorch.training_flops_per_image(model, 224)
    assert flops == 3 * 2 * 4_089_184_256


class _Stage:
    def __init__(self, analysis):
        self.analysis = analysis

    def cost_analysis(self):
        if isinstance(self.analysis, Exception):
            raise self.analysis
        return self.analysis


def test_xla_flops_takes_the_first_stage_with_a_count():
    count = resnet50_vs_pytorch.xla_flops
    assert count(_Stage(None), _Stage([{"flops": 7.0}])) == 7.0  # jax 0.11's None, then a list
    assert count(_Stage({"flops": 5.0}), _Stage({"flops": 9.0})) == 5.0
    assert count(_Stage(NotImplementedError()), _Stage([]), _Stage({})) is None
