"""Patch whitening of the fast models' stem."""

import jax
import numpy as np
import pytest

from flaxcls.data import build_input
from flaxcls.errors import ConfigError
from flaxcls.models.whitening import patch_whitening_kernel
from flaxcls.modes import train as train_lib
from flaxcls.testing.toy import restored_state, tiny_config, write_npz


def test_whitened_patches_have_identity_covariance():
    rng = np.random.default_rng(0)
    # correlated channels and neighbouring pixels
    base = rng.normal(size=(200, 12, 12, 1))
    images = np.concatenate([base, 0.8 * base + 0.2 * rng.normal(size=base.shape)], axis=-1)
    images = images + np.roll(images, 1, axis=1)
    kernel = patch_whitening_kernel(images.astype(np.float32), 2, eps=0.0)
    assert kernel.shape == (2, 2, 2, 16)
    out = jax.lax.conv_general_dilated(
        images.astype(np.float32),
        kernel[..., :8],
        (1, 1),
        "VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    features = np.asarray(out).reshape(-1, 8).astype(np.float64)
    features -= features.mean(axis=0)
    np.testing.assert_allclose(features.T @ features / len(features), np.eye(8), atol=1e-3)
    np.testing.assert_array_equal(kernel[..., 8:], -kernel[..., :8])


def test_whitened_stem_is_set_and_stays_frozen(tmp_path):
    npz = write_npz(str(tmp_path), shape=(24, 24, 3))
    config = tiny_config(
        npz,
        **{
            "model.name": "fast_cnn",  # 2x2 stem, 24 = 2 * 2 * 2 * 3 filters
            "model.whiten_stem": True,
            "optimizer.freeze": "^stem/",
            "num_train_steps": 4,
        },
    )
    train_lib.train_and_evaluate(config, str(tmp_path / "run"))
    state = restored_state(str(tmp_path / "run"), config)
    inputs = build_input(config.data, global_batch_size=16, eval_batch_size=24, seed=0)
    expected = patch_whitening_kernel(inputs.normalizer(inputs.train_split.images[:5000]), 2)
    np.testing.assert_array_equal(np.asarray(state.params["stem"]["kernel"]), expected)
    assert int(state.step) == 4


def test_whitening_a_stem_of_the_wrong_width_names_the_width(tmp_path):
    npz = write_npz(str(tmp_path))
    config = tiny_config(npz, **{"model.name": "fast_cnn_small", "model.whiten_stem": True})
    with pytest.raises(ConfigError, match="needs 18 filters, the model has 16"):
        train_lib.train_and_evaluate(config, str(tmp_path / "run"))
