"""One device and eight simulated CPU devices train to the same parameters, whether the eight
hold the state replicated or sharded (FSDP). (BatchNorm over the global batch on 1 and 8
devices: tests/test_pmap.py.)"""

import functools
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import write_npz
from tests.launch import ROOT, env_for

# Subprocess runs on 1 and 8 simulated devices.
pytestmark = pytest.mark.slow

TRAIN = """
import sys
import jax
import numpy as np
from flaxcls import runs, sharding
from flaxcls import train as train_lib
from flaxcls.data import build_input
from flaxcls.optim import create_optimizer
from tests.helpers import restored_state, tiny_config

npz, workdir, out, layout = sys.argv[1:]
config = tiny_config(npz, **{"model.name": "seed_cnn",
                             "num_train_steps": 6, "eval_batch_size": 16,
                             "mesh.params": layout, "mesh.fsdp_min_size": 2048,
                             # SGD: Adam's normalised update would amplify rounding noise
                             # in near-zero gradients into visible parameter differences.
                             "optimizer.name": "sgd", "optimizer.learning_rate": 0.01})
metrics = train_lib.train_and_evaluate(config, workdir)
state = restored_state(workdir, config)
leaves = [np.asarray(x) for x in jax.tree.leaves((state.params, state.batch_stats))]

# How the run laid out its state: the leaves split over the devices, and one device's share.
inputs = build_input(config.data, global_batch_size=16, eval_batch_size=16, seed=0)
model = runs.create_model(config, inputs.info.num_classes)
tx = create_optimizer(config, inputs.steps_per_epoch(), 6)
mesh = sharding.make_mesh()
fresh = runs.init_state(model, tx, 0, inputs.info.image_shape, mesh, layout, 2048)
arrays = jax.tree.leaves(fresh)
sharded = sum(x.addressable_shards[0].data.shape != x.shape for x in arrays)
per_device = sum(x.addressable_shards[0].data.nbytes for x in arrays)
np.savez(out, *leaves, devices=jax.device_count(), accuracy=metrics["accuracy"],
         loss=metrics["loss"], sharded=sharded, per_device=per_device)
"""


@pytest.fixture(scope="module")
def train(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("devices")
    npz = write_npz(str(tmp))

    @functools.cache
    def run(devices: int, layout: str = "replicated"):
        out = str(tmp / f"out{devices}{layout}.npz")
        result = subprocess.run(
            [sys.executable, "-c", TRAIN, npz, str(tmp / f"w{devices}{layout}"), out, layout],
            cwd=ROOT,
            env=env_for(devices),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return np.load(out)

    return run


def _assert_same_training(a, b):
    leaves = [k for k in a.files if k.startswith("arr_")]
    assert len(leaves) == 10
    for key in leaves:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-4)
    assert float(a["accuracy"]) == float(b["accuracy"])


def test_one_device_equals_eight(train):
    one, eight = train(1), train(8)
    assert int(one["devices"]) == 1 and int(eight["devices"]) == 8
    assert int(eight["sharded"]) == 0
    _assert_same_training(one, eight)


def test_fsdp_shards_the_state_and_trains_the_same(train):
    one, replicated, fsdp = train(1), train(8), train(8, "fsdp")
    assert int(fsdp["sharded"]) >= 6  # the large kernels and their momentum
    assert int(fsdp["per_device"]) < 0.5 * int(replicated["per_device"])
    _assert_same_training(one, fsdp)
