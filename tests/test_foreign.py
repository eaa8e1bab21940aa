"""PyTorch ResNet weights in the flaxcls ResNet: same logits as PyTorch on the same input."""

import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flaxcls import foreign, transfer
from flaxcls.errors import ConfigError
from flaxcls.models import get_model
from flaxcls.steps import create_train_state

torch = pytest.importorskip("torch")
nn = torch.nn


class TorchBasicBlock(nn.Module):
    """torchvision's BasicBlock, written out (torchvision itself is not needed)."""

    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class TorchResNet18(nn.Module):
    """torchvision.models.resnet18's layout and names."""

    def __init__(self, num_classes):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = 64
        for i, planes in enumerate((64, 128, 256, 512)):
            stride = 1 if i == 0 else 2
            blocks = [TorchBasicBlock(inplanes, planes, stride), TorchBasicBlock(planes, planes, 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            inplanes = planes
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@pytest.fixture(scope="module")
def torch_model():
    torch.manual_seed(0)
    model = TorchResNet18(num_classes=10)
    with torch.no_grad():  # non-trivial BatchNorm statistics and affine parameters
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return model.eval()


def _flax_logits(path, images, init_head=True):
    model = get_model("resnet18", num_classes=10)
    state = create_train_state(model, optax.sgd(0.1), jax.random.PRNGKey(0), images.shape[1:])
    state, summary = transfer.init_from_run(state, path, init_head=init_head)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    return np.asarray(model.apply(variables, jnp.asarray(images), train=False)), summary


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_imported_weights_give_pytorch_logits(tmp_path, torch_model, fmt):
    path = str(tmp_path / f"resnet18.{fmt}")
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(torch_model.state_dict(), path)
    else:
        torch.save(torch_model.state_dict(), path)
    images = np.random.default_rng(0).normal(size=(4, 64, 64, 3)).astype(np.float32)
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    got, summary = _flax_logits(path, images)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert summary["fresh"] == []


def test_a_head_of_another_size_stays_fresh(tmp_path, torch_model):
    path = str(tmp_path / "resnet18.pt")
    torch.save(torch_model.state_dict(), path)
    model = get_model("resnet18", num_classes=3)
    state = create_train_state(model, optax.sgd(0.1), jax.random.PRNGKey(0), (32, 32, 3))
    new, summary = transfer.init_from_run(state, path)  # init_head=False: fc is not read
    assert set(summary["fresh"]) == {"params/head/kernel", "params/head/bias"}
    np.testing.assert_array_equal(new.params["head"]["kernel"], state.params["head"]["kernel"])
    np.testing.assert_array_equal(
        new.params["stem_conv"]["kernel"],
        torch_model.conv1.weight.detach().numpy().transpose(2, 3, 1, 0),
    )


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/flaxcls_should_not_exist",))


def test_pickled_objects_are_never_executed(tmp_path):
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
    state = create_train_state(model, optax.sgd(0.1), jax.random.PRNGKey(0), (32, 32, 3))
    with pytest.raises(ConfigError, match="features.0.weight"):
        transfer.init_from_run(state, path)
