"""One device and eight simulated CPU devices train to the same parameters, whether the eight
hold the state replicated or sharded (FSDP). (BatchNorm over the global batch on 1 and 8
devices: tests/test_pmap.py.)"""

import subprocess
import sys

import jax
import numpy as np
import pytest

from flaxcls.core import sharding
from flaxcls.core.optim import create_optimizer
from flaxcls.data import build_input
from flaxcls.modes import build as runs
from flaxcls.modes import train as train_lib
from flaxcls.testing.launch import ROOT, env_for
from flaxcls.testing.toy import restored_state, tiny_config, write_npz

# A subprocess on 8 simulated devices.
pytestmark = pytest.mark.slow

FSDP_MIN_SIZE = 2048

# Both layouts in one process on 8 devices; the one-device run is this test process's own.
ON_EIGHT_DEVICES = """
import sys
import numpy as np
from tests.test_devices import train_and_describe

npz, tmp = sys.argv[1:]
for layout in ("replicated", "fsdp"):
    np.savez(f"{tmp}/out8{layout}.npz", **train_and_describe(npz, f"{tmp}/w8{layout}", layout))
"""


def train_and_describe(npz: str, workdir: str, layout: str) -> dict:
    """Trains 6 steps on this process's devices: the final parameters, test metrics, and how
    the run laid out its state (leaves split over the devices, one device's share in bytes)."""
    config = tiny_config(
        npz,
        **{
            "model.name": "seed_cnn",
            "num_train_steps": 6,
            "eval_batch_size": 16,
            "mesh.params": layout,
            "mesh.fsdp_min_size": FSDP_MIN_SIZE,
            # SGD: Adam's normalised update would amplify rounding noise in near-zero
            # gradients into visible parameter differences.
            "optimizer.name": "sgd",
            "optimizer.learning_rate": 0.01,
        },
    )
    metrics = train_lib.train_and_evaluate(config, workdir)
    state = restored_state(workdir, config)
    leaves = [np.asarray(x) for x in jax.tree.leaves((state.params, state.batch_stats))]
    inputs = build_input(config.data, global_batch_size=16, eval_batch_size=16, seed=0)
    model = runs.create_model(config, inputs.info.num_classes)
    tx = create_optimizer(config, inputs.steps_per_epoch(), 6)
    fresh = runs.init_state(
        model, tx, 0, inputs.info.image_shape, sharding.make_mesh(), layout, FSDP_MIN_SIZE
    )
    arrays = jax.tree.leaves(fresh)
    return {
        **{f"arr_{i}": leaf for i, leaf in enumerate(leaves)},
        "devices": jax.device_count(),
        "accuracy": metrics["accuracy"],
        "loss": metrics["loss"],
        "sharded": sum(x.addressable_shards[0].data.shape != x.shape for x in arrays),
        "per_device": sum(x.addressable_shards[0].data.nbytes for x in arrays),
    }


@pytest.fixture(scope="module")
def runs_by_layout(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("devices")
    npz = write_npz(str(tmp))
    eight = subprocess.Popen(
        [sys.executable, "-c", ON_EIGHT_DEVICES, npz, str(tmp)],
        cwd=ROOT,
        env=env_for(8),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        one = train_and_describe(npz, str(tmp / "w1"), "replicated")
        _, err = eight.communicate(timeout=400)
    finally:
        eight.kill()
    assert eight.returncode == 0, err[-3000:]
    return {
        "one": one,
        "replicated": dict(np.load(tmp / "out8replicated.npz")),
        "fsdp": dict(np.load(tmp / "out8fsdp.npz")),
    }


def _assert_same_training(a, b):
    leaves = [k for k in a if k.startswith("arr_")]
    assert len(leaves) == 10
    for key in leaves:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-4)
    assert float(a["accuracy"]) == float(b["accuracy"])


def test_one_device_equals_eight(runs_by_layout):
    one, eight = runs_by_layout["one"], runs_by_layout["replicated"]
    assert int(one["devices"]) == 1 and int(eight["devices"]) == 8
    assert int(eight["sharded"]) == 0
    _assert_same_training(one, eight)


def test_fsdp_shards_the_state_and_trains_the_same(runs_by_layout):
    one, replicated, fsdp = (runs_by_layout[k] for k in ("one", "replicated", "fsdp"))
    assert int(fsdp["sharded"]) >= 6  # the large kernels and their momentum
    assert int(fsdp["per_device"]) < 0.5 * int(replicated["per_device"])
    _assert_same_training(one, fsdp)
