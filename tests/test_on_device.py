"""Training data held on the devices trains as the host pipeline does, augmentations included."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxcls.data import pipeline
from flaxcls.data.augment import get_augmentation
from flaxcls.modes import train as train_lib
from flaxcls.testing.toy import restored_state, tiny_config, write_npz


class _DyadicNormalizer(pipeline.Normalizer):
    """x * 2**-7 - 1: every product and sum is exact in float32, so a fused multiply-add (XLA)
    and a multiply then an add (numpy) give the same input bits."""

    def __init__(self, mean, std):
        self.scale = np.full(np.shape(std), 2.0**-7, np.float32)
        self.shift = np.full(np.shape(mean), -1.0, np.float32)


@pytest.mark.parametrize("augment", ["none", "crop_flip"])
def test_device_held_data_trains_as_the_host_pipeline(tmp_path, monkeypatch, augment):
    # The real normaliser rounds once on the device (XLA fuses x * scale + shift into one
    # multiply-add) and twice on the host (numpy): inputs differed in the last bit, and Adam's
    # normalised update amplified that in near-zero gradients (1.2e-4 relative in one element of
    # a fresh clone, over rtol 1e-4). The normalisers are compared at their rounding in the test
    # below; here exact arithmetic makes the inputs equal, so what remains is only the two
    # compiled steps summing in different orders (the device one has the gather and the
    # augmentation fused in): measured at most 2.3e-9 absolute, 6.8e-6 relative over 12 steps,
    # more than ten times inside the tolerance.
    monkeypatch.setattr(pipeline, "Normalizer", _DyadicNormalizer)
    npz = write_npz(str(tmp_path))
    host_config = tiny_config(npz, **{"data.augment": augment})
    device_config = tiny_config(npz, **{"data.augment": augment, "data.on_device": True})
    host = train_lib.train_and_evaluate(host_config, str(tmp_path / "host"))
    device = train_lib.train_and_evaluate(device_config, str(tmp_path / "device"))
    a = restored_state(str(tmp_path / "host"), host_config)
    b = restored_state(str(tmp_path / "device"), device_config)
    assert int(a.step) == int(b.step) == host_config.num_train_steps
    leaves = zip(
        jax.tree.leaves((a.params, a.batch_stats)),
        jax.tree.leaves((b.params, b.batch_stats)),
        strict=True,
    )
    for x, y in leaves:
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5)
    assert host["num_examples"] == device["num_examples"]
    np.testing.assert_allclose(host["loss"], device["loss"], rtol=1e-4)


def test_device_normalisation_equals_the_host_one_to_rounding():
    """Every uint8 value, per channel. The host rounds the product p = x * scale (half an ulp of
    p) and then the sum r = p + shift (half an ulp of r); the device, where XLA fuses them, rounds
    r once. With m = max(|p|, |shift|), |r| <= 2m, so ulp(r) <= 2 ulp(m) and the two differ by at
    most 1/2 + 1 + 1 = 2.5 ulp(m)."""
    normalizer = pipeline.Normalizer((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    pixels = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)[None, :, None, :]
    host = normalizer(pixels)
    scale, shift = jnp.asarray(normalizer.scale), jnp.asarray(normalizer.shift)
    device = np.asarray(jax.jit(lambda x: x.astype(jnp.float32) * scale + shift)(pixels))
    m = np.maximum(np.abs(pixels * normalizer.scale), np.abs(normalizer.shift)).astype(np.float32)
    assert np.all(np.abs(host - device) <= 2.5 * np.spacing(m))


def test_jax_augmentations_equal_the_numpy_ones():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 9, 7, 3), dtype=np.uint8)
    uniforms = rng.random((6, 3))
    for name in ("flip", "crop", "crop_flip"):
        for mode in ("constant", "reflect"):
            host = get_augmentation(name, 2, padding_mode=mode)(images, uniforms)
            device = get_augmentation(name, 2, xp=jnp, padding_mode=mode)(
                jnp.asarray(images), jnp.asarray(uniforms)
            )
            np.testing.assert_array_equal(host, np.asarray(device), err_msg=f"{name} {mode}")
            assert not np.array_equal(host, images)
