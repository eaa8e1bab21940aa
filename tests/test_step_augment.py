"""In-step augmentations: mixup, cutmix, random erasing, RandAugment and flip TTA."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image, ImageOps

from flaxcls.core.metrics import cross_entropy
from flaxcls.core.steps import _training_loss, create_train_state, eval_step
from flaxcls.data import randaugment as ra
from flaxcls.data.mixing import mix_batch, random_erasing
from flaxcls.models import get_model
from flaxcls.modes import train as train_lib
from flaxcls.testing.toy import restored_state, tiny_config, write_npz


def _batch(n=8, h=6, w=5, c=2, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": jnp.asarray(rng.normal(size=(n, h, w, c)), jnp.float32),
        "label": jnp.asarray(rng.integers(0, 4, n), jnp.int32),
    }


def test_mixup_mixes_images_and_labels_with_one_weight():
    batch = _batch()
    mixed = mix_batch(jax.random.PRNGKey(3), batch, mixup_alpha=0.4)
    lam = np.asarray(mixed["mix_weight"])
    assert np.all(lam == lam[0]) and 0.0 < lam[0] < 1.0
    x = np.asarray(batch["image"])
    np.testing.assert_allclose(
        mixed["image"], lam[0] * x + (1 - lam[0]) * x[::-1], rtol=1e-5, atol=1e-6
    )
    np.testing.assert_array_equal(mixed["mix_label"], np.asarray(batch["label"])[::-1])


def test_cutmix_pastes_one_box_and_weighs_labels_by_its_area():
    batch = _batch(h=16, w=16)
    x = np.asarray(batch["image"])
    for seed in range(5):
        mixed = mix_batch(jax.random.PRNGKey(seed), batch, cutmix_alpha=1.0)
        out = np.asarray(mixed["image"])
        own = np.all(out == x, axis=-1)  # (n, h, w): pixel kept from the example itself
        partner = np.all(out == x[::-1], axis=-1)
        assert np.all(own | partner)
        pasted = ~own[0]
        rows, cols = np.nonzero(pasted)
        if rows.size:  # the pasted region is one axis-aligned box
            assert pasted[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
        np.testing.assert_allclose(mixed["mix_weight"], own[0].mean(), rtol=1e-6)


def test_mixing_with_probability_zero_leaves_the_batch_and_loss_unchanged():
    batch = _batch()
    mixed = mix_batch(jax.random.PRNGKey(0), batch, mixup_alpha=1.0, cutmix_alpha=1.0, prob=0.0)
    np.testing.assert_array_equal(mixed["image"], batch["image"])
    np.testing.assert_array_equal(mixed["mix_weight"], 1.0)
    logits = jax.random.normal(jax.random.PRNGKey(1), (8, 4))
    np.testing.assert_allclose(
        _training_loss(logits, mixed, 0.1), cross_entropy(logits, batch["label"], 0.1), rtol=1e-6
    )


def test_mixed_loss_equals_cross_entropy_against_soft_targets():
    batch = mix_batch(jax.random.PRNGKey(2), _batch(), mixup_alpha=0.8)
    logits = jax.random.normal(jax.random.PRNGKey(1), (8, 4))
    lam = np.asarray(batch["mix_weight"])[:, None]
    targets = (
        lam * np.eye(4)[np.asarray(batch["label"])]
        + (1 - lam) * np.eye(4)[np.asarray(batch["mix_label"])]
    )
    expected = optax.softmax_cross_entropy(logits, targets)
    np.testing.assert_allclose(_training_loss(logits, batch, 0.0), expected, rtol=1e-5)


def test_random_erasing_replaces_one_box_per_image():
    images = jnp.full((16, 20, 20, 1), 7.0)
    assert random_erasing(jax.random.PRNGKey(0), images, prob=0.0) is images
    erased = np.asarray(random_erasing(jax.random.PRNGKey(0), images, prob=1.0))[..., 0] != 7.0
    for box in erased:
        rows, cols = np.nonzero(box)
        assert rows.size > 0
        block = box[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert block.all()  # a filled rectangle, nothing erased outside it
        assert 0.02 * 400 * 0.5 <= block.size <= 400 / 3 * 1.5
    half = np.asarray(
        random_erasing(jax.random.PRNGKey(1), jnp.full((400, 8, 8, 1), 7.0), prob=0.5)
    )
    share = np.mean(np.any(half != 7.0, axis=(1, 2, 3)))
    assert 0.4 < share < 0.6


def _pil_reference(op, image_u8: np.ndarray) -> np.ndarray:
    return np.asarray(op(Image.fromarray(image_u8[..., 0])))[..., None]


@pytest.mark.parametrize(
    "ours, level, pil_op",
    [
        (ra.invert, 0.0, ImageOps.invert),
        (ra.posterize, 1.0, lambda im: ImageOps.posterize(im, 4)),
        (ra.posterize, 0.5, lambda im: ImageOps.posterize(im, 6)),
        (ra.solarize, 0.5, lambda im: ImageOps.solarize(im, 128)),
        (ra.auto_contrast, 0.0, ImageOps.autocontrast),
    ],
)
def test_randaugment_pixel_operations_equal_pil(ours, level, pil_op):
    image = np.random.default_rng(0).integers(30, 220, (12, 10, 1), dtype=np.uint8)
    got = np.asarray(ours(jnp.asarray(image, jnp.float32) / 255.0, jnp.float32(level)))
    expected = _pil_reference(pil_op, image)
    np.testing.assert_allclose(got * 255.0, expected, atol=1.01)


def test_randaugment_geometry_and_neutral_levels():
    rng = np.random.default_rng(1)
    image = jnp.asarray(rng.random((9, 9, 3)), jnp.float32)
    for op in (ra.rotate, ra.shear_x, ra.shear_y, ra.translate_x, ra.translate_y):
        np.testing.assert_allclose(
            op(image, jnp.float32(0.0)), image, atol=1e-6, err_msg=op.__name__
        )
    # level 3 is a 90 degree turn: a square image turns exactly (the border rows may fall a
    # rounding error outside the image and take the fill value)
    turned = np.asarray(ra.rotate(image, jnp.float32(3.0)))
    np.testing.assert_allclose(
        turned[1:-1, 1:-1], np.rot90(np.asarray(image), -1)[1:-1, 1:-1], atol=1e-5
    )
    # enhancement factor 1 (level 0) leaves an image as it is
    for op in (ra.brightness, ra.contrast, ra.color, ra.sharpness):
        np.testing.assert_allclose(
            op(image, jnp.float32(0.0)), image, atol=1e-6, err_msg=op.__name__
        )
    batch = jnp.stack([image] * 4)
    out = np.asarray(ra.rand_augment(jax.random.PRNGKey(0), batch, 2, 9.0))
    assert out.shape == batch.shape and out.min() >= 0.0 and out.max() <= 1.0
    assert not np.allclose(out, np.asarray(batch))


def test_flip_tta_is_invariant_to_mirroring():
    model = get_model("seed_cnn", num_classes=3)
    state = create_train_state(model, optax.sgd(0.1), jax.random.PRNGKey(0), (28, 28, 1))
    images = jax.random.normal(jax.random.PRNGKey(1), (5, 28, 28, 1))
    labels = jnp.arange(5) % 3
    plain = eval_step(state, {"image": images, "label": labels})
    tta = eval_step(state, {"image": images, "label": labels}, flip_tta=True)
    mirrored = eval_step(state, {"image": images[:, :, ::-1], "label": labels}, flip_tta=True)
    np.testing.assert_allclose(tta["loss"], mirrored["loss"], rtol=1e-5)
    assert not np.isclose(plain["loss"], tta["loss"], rtol=1e-4)


def test_in_step_augmentations_train_alike_from_host_and_device_data(tmp_path, tiny_net):
    npz = write_npz(str(tmp_path))
    augment = {
        "model.name": tiny_net,
        "data.augment": "crop_flip",
        "data.randaugment_ops": 2,
        "data.erasing_prob": 0.25,
        "data.mixup_alpha": 0.8,
        "data.cutmix_alpha": 1.0,
        "flip_tta": True,
    }
    host_config = tiny_config(npz, **augment)
    device_config = tiny_config(npz, **augment, **{"data.on_device": True})
    plain_config = tiny_config(npz, **{"model.name": tiny_net, "data.augment": "crop_flip"})
    host = train_lib.train_and_evaluate(host_config, str(tmp_path / "host"))
    device = train_lib.train_and_evaluate(device_config, str(tmp_path / "device"))
    train_lib.train_and_evaluate(plain_config, str(tmp_path / "plain"))
    a = restored_state(str(tmp_path / "host"), host_config)
    b = restored_state(str(tmp_path / "device"), device_config)
    c = restored_state(str(tmp_path / "plain"), plain_config)
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)
    assert not np.allclose(
        np.asarray(a.params["head"]["kernel"]), np.asarray(c.params["head"]["kernel"])
    )
    assert np.isfinite(host["loss"]) and host["num_examples"] == device["num_examples"] == 30
