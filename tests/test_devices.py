"""One device and eight simulated CPU devices train to the same parameters."""

import os
import subprocess
import sys

import numpy as np

from tests.helpers import write_npz

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TRAIN = """
import sys
import jax
import numpy as np
from flaxcls import train as train_lib
from tests.helpers import tiny_config
from tests.test_train import _params

npz, workdir, out = sys.argv[1:]
config = tiny_config(npz, **{"model.name": "cifar_resnet20",
                             "num_train_steps": 6, "eval_batch_size": 16,
                             # SGD: Adam's normalised update would amplify rounding noise
                             # in near-zero gradients into visible parameter differences.
                             "optimizer.name": "sgd", "optimizer.learning_rate": 0.01})
metrics = train_lib.train_and_evaluate(config, workdir)
state = _params(workdir, config)
leaves = [np.asarray(x) for x in jax.tree.leaves((state.params, state.batch_stats))]
np.savez(out, *leaves, devices=jax.device_count(), accuracy=metrics["accuracy"],
         loss=metrics["loss"])
"""


def _train(tmp_path, npz, devices):
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
    }
    out = str(tmp_path / f"out{devices}.npz")
    result = subprocess.run(
        [sys.executable, "-c", TRAIN, npz, str(tmp_path / f"w{devices}"), out],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return np.load(out)


def test_one_device_equals_eight(tmp_path):
    npz = write_npz(str(tmp_path))
    one, eight = _train(tmp_path, npz, 1), _train(tmp_path, npz, 8)
    assert int(one["devices"]) == 1 and int(eight["devices"]) == 8
    leaves = [k for k in one.files if k.startswith("arr_")]
    assert len(leaves) > 10
    for key in leaves:
        np.testing.assert_allclose(one[key], eight[key], rtol=1e-4, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(one["loss"], eight["loss"], rtol=1e-4)
    assert float(one["accuracy"]) == float(eight["accuracy"])
