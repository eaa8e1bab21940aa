"""Model zoo: parameter counts, shapes and dtypes, BatchNorm and dropout modes, the registry."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxcls.models import MODELS, get_model
from flaxcls.models.layers import max_pool_2x2
from flaxcls.models.resnet import CifarResNet20
from flaxcls.models.wide_resnet import WideResNet


def _key(seed: int) -> jax.Array:
    # Threefry (the default) makes initialisation several times slower to compile on XLA:CPU; the
    # models do not depend on the generator.
    return jax.random.key(seed, impl="rbg")


def _rngs(seed: int = 0) -> dict[str, jax.Array]:
    params, dropout = jax.random.split(_key(seed))
    return {"params": params, "dropout": dropout}


def _images(shape: tuple[int, ...], seed: int = 1) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, np.float32))


def _abstract_init(model: nn.Module, shape: tuple[int, ...]) -> dict:
    """Variable shapes without allocating them."""
    images = jax.ShapeDtypeStruct(shape, jnp.float32)
    return jax.eval_shape(functools.partial(model.init, train=False), _rngs(), images)


def _abstract_intermediates(model: nn.Module, shape: tuple[int, ...]) -> dict:
    """Output shapes of every submodule, without computing them."""
    variables = _abstract_init(model, shape)
    images = jax.ShapeDtypeStruct(shape, jnp.float32)
    apply = functools.partial(
        model.apply, train=False, capture_intermediates=True, mutable=["intermediates"]
    )
    return jax.eval_shape(apply, variables, images)[1]["intermediates"]


@functools.cache
def _variables(name: str, image_shape: tuple[int, ...]) -> dict:
    """Initialised once per model and input shape: init is slow to compile on XLA:CPU."""
    model = get_model(name, num_classes=10)
    return jax.jit(functools.partial(model.init, train=False))(_rngs(), _images((1, *image_shape)))


def _num_params(variables: dict) -> int:
    return sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))


# --- parameter counts --------------------------------------------------------------------------

# Published counts: the Keras tutorial's model.summary(), torchvision (1000 classes; inception_v3
# without its auxiliary head), He et al. 2016 and the common CIFAR code (10 classes), Zhang et al.
PUBLISHED = [
    ("seed_cnn", (32, 32, 3), 10, 122_570),
    ("seed_cnn", (28, 28, 1), 10, 93_322),
    ("resnet18", (224, 224, 3), 1000, 11_689_512),
    ("resnet34", (224, 224, 3), 1000, 21_797_672),
    ("resnet50", (224, 224, 3), 1000, 25_557_032),
    ("resnet101", (224, 224, 3), 1000, 44_549_160),
    ("resnet152", (224, 224, 3), 1000, 60_192_808),
    ("cifar_resnet20", (32, 32, 3), 10, 269_722),
    ("cifar_resnet56", (32, 32, 3), 10, 853_018),
    ("cifar_resnet18", (32, 32, 3), 10, 11_173_962),
    ("wide_resnet28_10", (32, 32, 3), 10, 36_479_194),
    ("wide_resnet16_8", (32, 32, 3), 10, 10_961_370),
    ("inception_v3", (299, 299, 3), 1000, 23_834_568),
    ("inception_small", (32, 32, 3), 10, 1_649_402),
    # DeiT (Touvron et al. 2021), as timm's deit_*_patch16_224 and vit_base_patch16_224
    ("vit_ti16", (224, 224, 3), 1000, 5_717_416),
    ("vit_s16", (224, 224, 3), 1000, 22_050_664),
    ("vit_b16", (224, 224, 3), 1000, 86_567_656),
]


# No published count: conv kernels (no biases), BatchNorm scale + bias, head without bias.
def _fast_cnn_count(channels, stem_kernel, stem, widths, classes):
    count = stem_kernel**2 * channels * stem + 2 * stem
    previous = stem
    for width in widths:
        count += 9 * previous * width + 9 * width * width + 4 * width
        previous = width
    return count + previous * classes


# The speedrun network: a whitening stem with a bias, BatchNorm biases only (no scale).
def _speedrun_count(channels, widths, classes):
    stem = 2 * 4 * channels  # 2x2 whitening: each patch direction and its negation
    count = 4 * channels * stem + stem
    previous = stem
    for width in widths:
        count += 9 * previous * width + 9 * width * width + 2 * width
        previous = width
    return count + previous * classes


def _vit_count(side, patch, channels, width, depth, mlp, classes):
    tokens = (side // patch) ** 2 + 1  # patches and the class token
    block = 4 * width + (width + 1) * 3 * width + (width + 1) * width  # 2 LayerNorms, attention
    block += (width + 1) * mlp + (mlp + 1) * width  # MLP
    embed = patch * patch * channels * width + width + width + tokens * width
    return embed + depth * block + 2 * width + (width + 1) * classes


DERIVED = [
    ("vit_cifar", (32, 32, 3), 10, _vit_count(32, 4, 3, 256, 7, 512, 10)),
    ("fast_cnn", (32, 32, 3), 10, _fast_cnn_count(3, 2, 24, (64, 256, 256), 10)),
    ("fast_cnn_small", (28, 28, 1), 10, _fast_cnn_count(1, 3, 16, (32, 64, 128), 10)),
    ("speedrun_cnn", (32, 32, 3), 10, _speedrun_count(3, (64, 256, 256), 10)),
    ("mlp", (28, 28, 1), 10, 784 * 128 + 128 + 128 * 10 + 10),
]


def test_registry_names_and_every_model_has_a_count():
    expected = {
        "mlp",
        "seed_cnn",
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "resnet152",
        "cifar_resnet20",
        "cifar_resnet56",
        "cifar_resnet18",
        "wide_resnet28_10",
        "wide_resnet16_8",
        "inception_v3",
        "inception_small",
        "fast_cnn",
        "fast_cnn_small",
        "speedrun_cnn",
        "vit_ti16",
        "vit_s16",
        "vit_b16",
        "vit_cifar",
    }
    assert set(MODELS) == expected
    assert {name for name, *_ in PUBLISHED + DERIVED} == expected


@pytest.mark.parametrize("name, image_shape, num_classes, count", PUBLISHED + DERIVED)
def test_param_count_matches_published(name, image_shape, num_classes, count):
    model = get_model(name, num_classes=num_classes)
    assert _num_params(_abstract_init(model, (1, *image_shape))) == count


def _conv(c_in: int, c_out: int, k: int) -> int:
    return k * k * c_in * c_out


def _wide_resnet_count(depth: int, k: int, num_classes: int) -> int:
    """Bias-free convs, BN scale and bias, 1x1 shortcut where width or stride changes."""
    total, c_in = _conv(3, 16, 3), 16
    for stage, width in enumerate((16 * k, 32 * k, 64 * k)):
        for block in range((depth - 4) // 6):
            total += 2 * c_in + _conv(c_in, width, 3) + 2 * width + _conv(width, width, 3)
            if block == 0 and (stage > 0 or c_in != width):
                total += _conv(c_in, width, 1)
            c_in = width
    return total + 2 * c_in + c_in * num_classes + num_classes


def _inception_small_count(num_classes: int) -> int:
    """Bias-free convs each followed by a BatchNorm offset (no scale), as in the reference model."""

    def conv_bn(c_in: int, c_out: int, k: int) -> int:
        return _conv(c_in, c_out, k) + c_out

    layout = [
        ("inception", 32, 32),
        ("inception", 32, 48),
        ("downsample", 80),
        ("inception", 112, 48),
        ("inception", 96, 64),
        ("inception", 80, 80),
        ("inception", 48, 96),
        ("downsample", 96),
        ("inception", 176, 160),
        ("inception", 176, 160),
    ]
    total, c = conv_bn(3, 96, 3), 96
    for kind, *widths in layout:
        if kind == "inception":
            ch1, ch3 = widths
            total += conv_bn(c, ch1, 1) + conv_bn(c, ch3, 3)
            c = ch1 + ch3
        else:  # the max-pool branch passes the c input channels through
            total += conv_bn(c, widths[0], 3)
            c += widths[0]
    return total + c * num_classes + num_classes


def test_wide_resnet_count_from_architecture_arithmetic():
    derived = _wide_resnet_count(28, 10, 10)
    assert derived == 36_479_194  # the paper's "36.5M"
    model = get_model("wide_resnet28_10", num_classes=10)
    assert _num_params(_abstract_init(model, (1, 32, 32, 3))) == derived
    small = WideResNet(depth=10, widen_factor=1, num_classes=3)  # no shortcut conv in stage 1
    assert _num_params(_abstract_init(small, (1, 32, 32, 3))) == _wide_resnet_count(10, 1, 3)


def test_inception_small_count_from_architecture_arithmetic():
    derived = _inception_small_count(10)
    assert derived == 1_649_402  # Zhang et al. 2017, appendix
    model = get_model("inception_small", num_classes=10)
    assert _num_params(_abstract_init(model, (1, 32, 32, 3))) == derived


# --- layout ------------------------------------------------------------------------------------


def test_resnet_layout_is_torchvision_v1_5():
    model = get_model("resnet50", num_classes=1000)
    params = _abstract_init(model, (1, 64, 64, 3))["params"]
    blocks = {f"stage{i + 1}_block{j}" for i, n in enumerate((3, 4, 6, 3)) for j in range(n)}
    assert set(params) == {"stem_conv", "stem_bn", "head"} | blocks
    assert set(params["stage2_block0"]) == {
        "conv1",
        "bn1",
        "conv2",
        "bn2",
        "conv3",
        "bn3",
        "proj_conv",
        "proj_bn",
    }
    # 64x64 -> stem conv 32 -> max pool 16; v1.5 strides the 3x3 conv, not the first 1x1.
    block = _abstract_intermediates(model, (1, 64, 64, 3))["stage2_block0"]
    assert block["conv1"]["__call__"][0].shape == (1, 16, 16, 128)
    assert block["conv2"]["__call__"][0].shape == (1, 8, 8, 128)
    assert block["__call__"][0].shape == (1, 8, 8, 512)


def test_inception_v3_grid_sizes():
    inter = _abstract_intermediates(get_model("inception_v3", num_classes=5), (1, 299, 299, 3))
    assert inter["Mixed_5d"]["__call__"][0].shape == (1, 35, 35, 288)
    assert inter["Mixed_6e"]["__call__"][0].shape == (1, 17, 17, 768)
    assert inter["Mixed_7c"]["__call__"][0].shape == (1, 8, 8, 2048)
    assert inter["__call__"][0].shape == (1, 5)


# --- forward passes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, image_shape",
    [
        ("seed_cnn", (28, 28, 1)),
        ("seed_cnn", (32, 32, 3)),
        ("cifar_resnet20", (32, 32, 3)),
        ("inception_small", (32, 32, 3)),
    ],
)
def test_forward_shape_and_dtype(name, image_shape):
    model = get_model(name, num_classes=10)
    images = _images((2, *image_shape))
    logits = jax.jit(functools.partial(model.apply, train=False))(
        _variables(name, image_shape), images
    )
    assert logits.shape == (2, 10)
    assert logits.dtype == jnp.float32
    assert np.all(np.isfinite(logits))


def test_bfloat16_compute_keeps_float32_params_and_logits():
    images = _images((2, 32, 32, 3))
    model = get_model("cifar_resnet20", num_classes=10, dtype=jnp.bfloat16)
    abstract = _abstract_init(model, images.shape)
    assert {leaf.dtype for leaf in jax.tree.leaves(abstract)} == {jnp.dtype(jnp.float32)}
    variables = _variables("cifar_resnet20", (32, 32, 3))
    apply = functools.partial(
        model.apply, train=False, capture_intermediates=True, mutable=["intermediates"]
    )
    logits, state = jax.jit(apply)(variables, images)
    assert logits.dtype == jnp.float32
    assert state["intermediates"]["stage1_block0"]["__call__"][0].dtype == jnp.bfloat16
    float32_model = get_model("cifar_resnet20", num_classes=10)
    reference = jax.jit(functools.partial(float32_model.apply, train=False))(variables, images)
    assert not np.array_equal(logits, reference)  # bf16 rounding shows
    np.testing.assert_allclose(logits, reference, atol=0.02 * np.abs(reference).max())


# --- layers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 8, 6, 3), (2, 7, 9, 3), (1, 5, 5, 1)])
def test_max_pool_2x2_equals_reduce_window(shape):
    def reference(x):
        return nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")

    x = _images(shape)  # continuous draws: no ties, so the gradient is unambiguous
    out = max_pool_2x2(x)
    assert out.shape == (shape[0], shape[1] // 2, shape[2] // 2, shape[3])
    np.testing.assert_array_equal(out, reference(x))
    weights = _images(out.shape, seed=2)  # a weighted sum tells the routed gradients apart
    grad = jax.grad(lambda x: jnp.sum(max_pool_2x2(x) * weights))(x)
    grad_ref = jax.grad(lambda x: jnp.sum(reference(x) * weights))(x)
    np.testing.assert_array_equal(grad, grad_ref)
    assert np.count_nonzero(grad) == out.size


# --- train and eval modes ----------------------------------------------------------------------


def test_batchnorm_statistics_update_in_train_only():
    model = get_model("cifar_resnet20", num_classes=10)
    images = 2.0 * _images((4, 32, 32, 3)) + 1.0
    variables = _variables("cifar_resnet20", (32, 32, 3))
    train_apply = functools.partial(
        model.apply,
        train=True,
        mutable=["batch_stats", "intermediates"],
        capture_intermediates=True,
    )
    _, updates = jax.jit(train_apply)(variables, images)
    old, new = variables["batch_stats"], updates["batch_stats"]
    assert jax.tree.structure(old) == jax.tree.structure(new)
    pairs = zip(jax.tree.leaves(old), jax.tree.leaves(new), strict=True)
    assert all(np.any(a != b) for a, b in pairs)
    # Momentum 0.9 from mean 0 and variance 1.
    stem = updates["intermediates"]["stem_conv"]["__call__"][0]
    np.testing.assert_allclose(new["stem_bn"]["mean"], 0.1 * stem.mean((0, 1, 2)), rtol=1e-4)
    np.testing.assert_allclose(new["stem_bn"]["var"], 0.9 + 0.1 * stem.var((0, 1, 2)), rtol=1e-4)
    eval_apply = functools.partial(model.apply, train=False, mutable=["batch_stats"])
    _, kept = jax.jit(eval_apply)(variables, images)
    jax.tree.map(np.testing.assert_array_equal, kept["batch_stats"], old)
    assert set(_variables("seed_cnn", (32, 32, 3))) == {"params"}


def _block_scales(model: nn.Module) -> dict[str, jax.Array]:
    # Returning only the scales lets XLA drop the random kernels, which are slow to compile.
    def init() -> dict[str, jax.Array]:
        params = model.init(_rngs(), jnp.zeros((1, 32, 32, 3)), train=False)["params"]
        return {bn: params["stage3_block2"][bn]["scale"] for bn in ("bn1", "bn2")}

    return jax.jit(init)()


def test_zero_init_last_bn_option():
    zeroed = _block_scales(CifarResNet20(num_classes=10, zero_init_last_bn=True))
    default = _block_scales(get_model("cifar_resnet20", num_classes=10))
    assert np.all(zeroed["bn2"] == 0)
    assert np.all(zeroed["bn1"] == 1)
    assert np.all(default["bn2"] == 1)


def _check_dropout(make, variables, images, mutable):
    """Different rngs differ in train mode; eval equals the same model without dropout."""

    @functools.partial(jax.jit, static_argnums=(0, 1))
    def forward(rate, train, seed):
        out = make(dropout_rate=rate).apply(
            variables,
            images,
            train=train,
            rngs={"dropout": _key(seed)},
            mutable=mutable if train else False,
        )
        return out[0] if mutable and train else out

    assert not np.allclose(forward(0.5, True, 1), forward(0.5, True, 2))
    np.testing.assert_array_equal(forward(0.5, True, 1), forward(0.5, True, 1))
    np.testing.assert_array_equal(forward(0.5, False, 1), forward(0.0, False, 1))
    np.testing.assert_array_equal(forward(0.0, True, 1), forward(0.0, True, 2))


def test_dropout_only_in_train():
    make = functools.partial(get_model, "seed_cnn", num_classes=10)
    variables = _variables("seed_cnn", (32, 32, 3))
    _check_dropout(make, variables, _images((4, 32, 32, 3)), mutable=False)


def test_wide_resnet_dropout_inside_blocks_only_in_train():
    images = _images((2, 16, 16, 3))
    make = functools.partial(WideResNet, depth=10, widen_factor=1, num_classes=10)
    init = jax.jit(functools.partial(make().init, train=False))
    _check_dropout(make, init(_rngs(), images), images, mutable=["batch_stats"])


# --- registry ----------------------------------------------------------------------------------


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as error:
        get_model("resnet19", num_classes=10)
    message = str(error.value)
    assert "resnet19" in message
    assert ", ".join(sorted(MODELS)) in message
