"""Transfer learning: a backbone from another run, a fresh head, frozen or slower backbones."""

import jax
import numpy as np

from flaxcls.core import sharding
from flaxcls.core.optim import create_optimizer
from flaxcls.modes import build as runs
from flaxcls.modes import train as train_lib
from flaxcls.testing.toy import restored_state, tiny_config, write_npz


def _leaves(tree):
    return {
        "/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
        for path, v in jax.tree_util.tree_leaves_with_path(tree)
    }


def _pretrained(tmp_path, model="tiny_net", num_classes=5):
    if num_classes <= 5:
        npz = write_npz(str(tmp_path / "src"), num_classes=num_classes, shape=(32, 32, 3))
    else:  # noise with every label present: a source model for many classes
        rng = np.random.default_rng(0)
        npz = str(tmp_path / "src" / "many.npz")
        np.savez(
            npz,
            images=rng.integers(0, 256, (160, 32, 32, 3), dtype=np.uint8),
            labels=np.arange(160) % num_classes,
            test_images=rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8),
            test_labels=np.arange(20) % num_classes,
        )
    config = tiny_config(npz, **{"model.name": model, "num_train_steps": 4})
    train_lib.train_and_evaluate(config, str(tmp_path / "pretrained"))
    return restored_state(str(tmp_path / "pretrained"), config)


def test_a_hundred_class_checkpoint_starts_a_ten_class_model(tmp_path, tiny_net):
    (tmp_path / "src").mkdir()
    source = _pretrained(tmp_path, num_classes=100)
    rng = np.random.default_rng(1)
    npz = str(tmp_path / "ten.npz")
    np.savez(
        npz,
        images=rng.integers(0, 256, (80, 32, 32, 3), dtype=np.uint8),
        labels=np.arange(80) % 10,
    )
    config = tiny_config(
        npz,
        **{
            "model.name": tiny_net,
            "init_from": str(tmp_path / "pretrained"),
            "num_train_steps": 1,
            "optimizer.learning_rate": 1e-12,  # one step that changes (almost) nothing
        },
    )
    train_lib.train_and_evaluate(config, str(tmp_path / "target"))
    target = restored_state(str(tmp_path / "target"), config)
    src, dst = _leaves(source.params), _leaves(target.params)
    assert dst["head/kernel"].shape == (8, 10) and src["head/kernel"].shape == (8, 100)
    for path, value in dst.items():
        if not path.startswith("head/"):
            np.testing.assert_allclose(value, src[path], atol=1e-6, err_msg=path)
    src_stats, dst_stats = _leaves(source.batch_stats), _leaves(target.batch_stats)
    assert src_stats.keys() == dst_stats.keys()


def test_frozen_backbone_is_bit_identical_after_training(tmp_path, tiny_net):
    (tmp_path / "src").mkdir()
    source = _pretrained(tmp_path)
    npz = write_npz(str(tmp_path), num_classes=5, shape=(32, 32, 3), seed=2)
    config = tiny_config(
        npz,
        **{
            "model.name": tiny_net,
            "init_from": str(tmp_path / "pretrained"),
            "optimizer.freeze": "^(?!head/)",
            "optimizer.weight_decay": 1e-3,
            "frozen_batch_stats": True,
            "num_train_steps": 6,
        },
    )
    train_lib.train_and_evaluate(config, str(tmp_path / "frozen"))
    frozen = restored_state(str(tmp_path / "frozen"), config)
    src, dst = _leaves(source.params), _leaves(frozen.params)
    for path, value in dst.items():
        if not path.startswith("head/"):
            np.testing.assert_array_equal(value, src[path], err_msg=path)
    for path, value in _leaves(frozen.batch_stats).items():
        np.testing.assert_array_equal(value, _leaves(source.batch_stats)[path], err_msg=path)
    assert int(frozen.step) == 6


def test_lower_backbone_learning_rate_scales_backbone_updates(tmp_path):
    npz = write_npz(str(tmp_path), shape=(28, 28, 1))
    base = {"optimizer.name": "sgd", "optimizer.momentum": 0.0, "num_train_steps": 1}
    full = tiny_config(npz, **base)
    slow = tiny_config(npz, **base, **{"optimizer.backbone_lr_factor": 0.1})
    train_lib.train_and_evaluate(full, str(tmp_path / "full"))
    train_lib.train_and_evaluate(slow, str(tmp_path / "slow"))
    init = runs.init_state(
        runs.create_model(full, 3),
        create_optimizer(full, 3, 1),
        0,
        (28, 28, 1),
        sharding.make_mesh(),
    )
    start = _leaves(init.params)
    a = _leaves(restored_state(str(tmp_path / "full"), full).params)
    b = _leaves(restored_state(str(tmp_path / "slow"), slow).params)
    for path in start:
        expected = 1.0 if path.startswith("head/") else 0.1
        np.testing.assert_allclose(
            b[path] - start[path],
            expected * (a[path] - start[path]),
            rtol=1e-4,
            atol=1e-7,
            err_msg=path,
        )
