"""Every model of the registry exports to ONNX and to TFLite, and the exported files give JAX's
probabilities on images of any batch size: untrained models with perturbed weights and
BatchNorm statistics, small images; the ImageNet models at full size in the slow tests."""

import functools

import flax.linen as nn
import jax
import numpy as np
import pytest

from flaxcls.models import MODELS
from flaxcls.models.layers import avg_pool, max_pool
from flaxcls.modes import export as export_lib
from flaxcls.testing.served_models import FULL_SIZES, served_model, small_shape

# float32 end to end: XLA, ONNX Runtime and TFLite's kernels sum in different orders, which
# moves probabilities (in [0, 1]) by 1e-6 or less; 1e-4 is the export contract.
TOLERANCE = 1e-4

# The quick suite: one model of each family (MLP, plain CNN, BatchNorm CNN, option-A and
# projection ResNets, Inception, ViT), chosen for size; each case still costs a compilation
# and an export, 5-60 s on 2 shared CPU cores. Every other registered model, and any added
# later, runs in the slow suite (benchmarks/export_all_models.py has the export times).
QUICK = {
    "onnx": {
        "mlp",
        "seed_cnn",
        "fast_cnn_small",
        "cifar_resnet20",
        "cifar_resnet18",
        "inception_small",
        "vit_cifar",
    },
    "tflite": {"seed_cnn", "fast_cnn_small", "cifar_resnet20", "inception_small", "vit_cifar"},
}


def _cases() -> list:
    """(model, format) pairs, a model's two formats one after the other (they share its build)."""
    return [
        (name, fmt) if name in QUICK[fmt] else pytest.param(name, fmt, marks=pytest.mark.slow)
        for name in MODELS
        for fmt in export_lib.FORMATS
    ]


@functools.lru_cache(maxsize=1)  # one model's weights at a time
def _served(name: str, shape: tuple[int, ...]) -> tuple:
    """The served model, 5 random images and JAX's probabilities on them."""
    images = np.random.default_rng(1).integers(0, 256, (5, *shape), dtype=np.uint8)
    serve, expected = served_model(name, images)
    return serve, images, expected


def _check_export(name: str, shape: tuple[int, ...], fmt: str, out: str) -> None:
    serve, images, expected = _served(name, shape)
    # probabilities that can tell a wrong graph apart: neither uniform nor one-hot
    assert 0.3 < expected.max(axis=1).mean() < 0.95, expected
    _, models = export_lib.export_artefacts(serve, shape, out, (fmt,), float16=False)
    for batch in (images[:1], images):  # any batch size through the same file
        got = models[fmt](batch)
        np.testing.assert_allclose(got, expected[: len(batch)], rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize(("name", "fmt"), _cases())
def test_export_matches_jax(name, fmt, tmp_path):
    _check_export(name, small_shape(name), fmt, str(tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "fmt"), [(name, fmt) for name in sorted(FULL_SIZES) for fmt in export_lib.FORMATS]
)
def test_imagenet_models_export_at_full_size(name, fmt, tmp_path):
    size = FULL_SIZES[name]
    _check_export(name, (size, size, 3), fmt, str(tmp_path))


@pytest.mark.parametrize("padding", ["SAME", "VALID", ((1, 1), (1, 1))])
def test_pools_are_flax_pools(padding):
    """The models' pools (explicit padding, then flax's pools with 'VALID', the form jax2onnx
    exports) give nn.max_pool's and nn.avg_pool's results exactly."""
    x = jax.random.normal(jax.random.key(0), (2, 9, 10, 3))
    np.testing.assert_array_equal(
        max_pool(x, 3, 2, padding), nn.max_pool(x, (3, 3), (2, 2), padding)
    )
    np.testing.assert_array_equal(
        avg_pool(x, 3, 1, padding),
        nn.avg_pool(x, (3, 3), (1, 1), padding, count_include_pad=True),
    )
