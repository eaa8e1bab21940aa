"""One step on 1 device, under jit on 8, under jax.pmap and under shard_map: the same update.

The model is tests.helpers.TinyNet without dropout (a convolution, BatchNorm, a dense
head): what the layouts must agree on is BatchNorm's statistics over the global batch, the
gradient sums and the masked metrics, which a ResNet-20 repeats at twenty times the compile
time."""

import os
import subprocess
import sys

import pytest

from flaxcls.testing.launch import xla_flags

# A subprocess on 8 simulated devices compiling four layouts.
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = """
import functools
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from flaxcls import create_train_state, eval_step, train_step
from flaxcls.core.sharding import make_mesh
from tests.helpers import TinyNet

assert jax.device_count() == 8
rng = np.random.default_rng(0)
batches = []
for _ in range(4):
    labels = rng.integers(0, 4, 32)
    images = rng.normal(size=(32, 8, 8, 3)).astype(np.float32)
    images[np.arange(32), :, :, labels % 3] += 1.0
    mask = np.ones(32, np.float32)
    mask[-5:] = 0.0  # masked examples must not count, whatever the layout
    batches.append({"image": images, "label": labels.astype(np.int32), "mask": mask})

def init(axis_name=None):
    # No dropout: its masks depend on how the batch is split.
    model = TinyNet(axis_name=axis_name, dropout_rate=0.0)
    tx = optax.sgd(0.01, momentum=0.9)
    return create_train_state(model, tx, jax.random.PRNGKey(0), (8, 8, 3))

# 1) jit over a mesh: batch sharded on `data`, state replicated.
mesh = make_mesh()
state = init()
step = jax.jit(train_step, in_shardings=(NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))))
jit_first = None
for b in batches:
    state, jit_sums = step(state, b)
    jit_first = jit_first or (state, jit_sums)
jit_eval = jax.jit(eval_step)(state, batches[0])

# 1b) one device, one step (float differences between layouts grow over many steps):
#     BatchNorm statistics are over the global batch wherever it lives.
one, one_sums = jax.jit(train_step)(init(), batches[0])

# 2) pmap with a named axis, the batch split into 8 rows of 4.
pstate = jax.tree.map(lambda x: jnp.stack([x] * 8), init("batch"))
pstep = jax.pmap(functools.partial(train_step, axis_name="batch"), axis_name="batch")
split = lambda b: jax.tree.map(lambda x: x.reshape(8, -1, *x.shape[1:]), b)
for b in batches:
    pstate, pmap_sums = pstep(pstate, split(b))
pmap_eval = jax.pmap(functools.partial(eval_step, axis_name="batch"), axis_name="batch")(
    pstate, split(batches[0]))

# 3) shard_map over the same mesh, with and without its replication checks (autodiff sums
#    the gradients of replicated parameters itself only when the checks are on).
smap = {}
for check_vma in (True, False):
    sstate = init("data")
    sstep = jax.jit(jax.shard_map(functools.partial(train_step, axis_name="data"), mesh=mesh,
                                  in_specs=(P(), P("data")), out_specs=(P(), P()),
                                  check_vma=check_vma))
    for b in batches:
        sstate, smap_sums = sstep(sstate, b)
    smap[check_vma] = (sstate, smap_sums)

def close(a, b, what):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5, err_msg=what)

replica0 = lambda t: jax.tree.map(lambda x: x[0], t)
close(one.params, jit_first[0].params, "8 devices params")
close(one.batch_stats, jit_first[0].batch_stats, "8 devices batch_stats")
close(one_sums, jit_first[1], "8 devices metrics")
close(state.params, replica0(pstate.params), "pmap params")
close(state.batch_stats, replica0(pstate.batch_stats), "pmap batch_stats")
close(jit_sums, replica0(pmap_sums), "pmap metrics")
close(jit_eval, replica0(pmap_eval), "pmap eval")
for check_vma, (sstate, smap_sums) in smap.items():
    close(state.params, sstate.params, f"shard_map(check_vma={check_vma}) params")
    close(state.batch_stats, sstate.batch_stats, f"shard_map(check_vma={check_vma}) batch_stats")
    close(jit_sums, smap_sums, f"shard_map(check_vma={check_vma}) metrics")
assert float(jit_sums["count"]) == 27.0
print("OK")
"""


def test_jit_pmap_and_shard_map_agree():
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": xla_flags(8),
    }
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "OK" in result.stdout
