"""PyTorch ResNet weights in the flaxcls ResNet: same logits as PyTorch on the same input."""

import functools
import os
import pickle
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from safetensors.numpy import load_file

from flaxcls.core.steps import create_train_state
from flaxcls.errors import ConfigError
from flaxcls.models import foreign, get_model, resnet
from flaxcls.modes import transfer

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
# A PyTorch ResNet in torchvision's resnet18 layout, narrowed, with its logits on two images:
# made by fixtures/make_resnet_fixture.py, so torch is not needed here.
RESNET_WEIGHTS = os.path.join(FIXTURES, "resnet_state_dict.safetensors")


@pytest.fixture(scope="module")
def resnet_reference():
    with np.load(os.path.join(FIXTURES, "resnet_logits.npz")) as f:
        return f["images"], f["logits"], int(f["width"])


def _random_state(model, image_shape):
    """A train state of `model` filled with random numbers: its shapes come from tracing
    `create_train_state`, which skips compiling the initialisers (minutes on a busy CPU)."""
    shapes = jax.eval_shape(
        lambda: create_train_state(model, optax.sgd(0.1), jax.random.PRNGKey(0), image_shape)
    )
    rng = np.random.default_rng(0)
    return jax.tree.map(
        lambda s: jnp.asarray(
            rng.normal(size=s.shape).astype(s.dtype)
            if jnp.issubdtype(s.dtype, jnp.floating)
            else np.zeros(s.shape, s.dtype)
        ),
        shapes,
    )


def _flax_logits(path, images, width, init_head=True):
    model = resnet.ResNet18(num_classes=10, num_filters=width)
    state = _random_state(model, images.shape[1:])
    state, summary = transfer.init_from_run(state, path, init_head=init_head)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    apply = jax.jit(functools.partial(model.apply, train=False))
    return np.asarray(apply(variables, jnp.asarray(images))), summary


def test_imported_weights_give_pytorch_logits(resnet_reference):
    images, expected, width = resnet_reference
    got, summary = _flax_logits(RESNET_WEIGHTS, images, width)
    # float32 through 17 layers, two convolution libraries: logits of magnitude ~10 agree to
    # ~1e-5; a misplaced weight or statistic moves them by far more.
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert summary["fresh"] == []


def test_a_torch_save_file_gives_the_same_logits(tmp_path, resnet_reference):
    torch = pytest.importorskip("torch")
    images, expected, width = resnet_reference
    path = str(tmp_path / "resnet18.pt")
    torch.save({k: torch.from_numpy(v) for k, v in load_file(RESNET_WEIGHTS).items()}, path)
    got, _ = _flax_logits(path, images, width)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_a_torch_save_file_without_torch_names_the_fix(tmp_path, monkeypatch):
    path = str(tmp_path / "resnet18.pt")
    with open(path, "wb") as f:
        f.write(b"not read")
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(ConfigError, match="pip install torch"):
        foreign.load_state_dict(path)


def test_a_head_of_another_size_stays_fresh(resnet_reference):
    width = resnet_reference[2]
    model = resnet.ResNet18(num_classes=3, num_filters=width)
    state = _random_state(model, (32, 32, 3))
    new, summary = transfer.init_from_run(state, RESNET_WEIGHTS)  # init_head=False: fc unread
    assert set(summary["fresh"]) == {"params/head/kernel", "params/head/bias"}
    np.testing.assert_array_equal(new.params["head"]["kernel"], state.params["head"]["kernel"])
    np.testing.assert_array_equal(
        new.params["stem_conv"]["kernel"],
        load_file(RESNET_WEIGHTS)["conv1.weight"].transpose(2, 3, 1, 0),  # OIHW -> HWIO
    )


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/flaxcls_should_not_exist",))


def test_pickled_objects_are_never_executed(tmp_path):
    pytest.importorskip("torch")  # torch's weights-only unpickler is what refuses them
    path = str(tmp_path / "evil.pt")
    with open(path, "wb") as f:
        pickle.dump({"conv1.weight": _Payload()}, f)
    with pytest.raises(ConfigError, match="weights_only=True refused"):
        foreign.load_state_dict(path)
    assert not os.path.exists("/tmp/flaxcls_should_not_exist")


def test_weights_of_another_architecture_are_named(tmp_path):
    from safetensors.numpy import save_file

    path = str(tmp_path / "other.safetensors")
    save_file({"features.0.weight": np.zeros((8, 3, 3, 3), np.float32)}, path)
    model = get_model("resnet18", num_classes=10)
    state = _random_state(model, (32, 32, 3))
    with pytest.raises(ConfigError, match="features.0.weight"):
        transfer.init_from_run(state, path)


def test_vit_weights_from_a_torch_save_file_with_older_torchvision_names(tmp_path):
    """The torchvision ViT fixture (fixtures/make_vit_fixture.py), saved with torch.save under
    the MLP names torchvision used before 0.13, gives the fixture's PyTorch logits."""
    torch = pytest.importorskip("torch")
    from flaxcls.models.vit import ViT

    state_dict = load_file(os.path.join(FIXTURES, "vit_torchvision.safetensors"))
    older = {
        k.replace(".mlp.0.", ".mlp.linear_1.").replace(".mlp.3.", ".mlp.linear_2."): v
        for k, v in state_dict.items()
    }
    assert any(".mlp.linear_1." in k for k in older)
    path = str(tmp_path / "vit.pth")
    torch.save({k: torch.from_numpy(v) for k, v in older.items()}, path)
    with np.load(os.path.join(FIXTURES, "vit_logits.npz")) as f:
        images, expected = f["images"], f["torchvision_logits"]
    model = ViT(num_classes=5, patch_size=8, width=32, depth=2, num_heads=2)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images, train=False))
    template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)  # no init compiled
    variables, fresh = foreign.variables_from_torch(foreign.load_state_dict(path), template)
    assert fresh == []
    logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)
    # float32 on both sides: rounding-level differences, far below a wrong layout's order 1
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=1e-4)
