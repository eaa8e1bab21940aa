"""Flax NNX modules through the same steps, checkpoints and export as Linen models: an NNX CNN
and its Linen twin, started from the same weights, train to the same parameters."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from flaxcls import create_train_state, eval_step, train_step
from flaxcls.core.steps import TrainState
from flaxcls.models import MODELS, from_nnx
from flaxcls.rundir.checkpoint import Checkpointer

SHAPE = (12, 12, 1)


class NNXCNN(nnx.Module):
    def __init__(self, num_classes, *, rngs, dropout_rate=0.0, dtype=jnp.float32, axis_name=None):
        self.conv1 = nnx.Conv(1, 8, (3, 3), dtype=dtype, rngs=rngs)
        self.bn1 = nnx.BatchNorm(8, axis_name=axis_name, dtype=dtype, rngs=rngs)
        self.conv2 = nnx.Conv(8, 16, (3, 3), strides=2, dtype=dtype, rngs=rngs)
        self.bn2 = nnx.BatchNorm(16, axis_name=axis_name, dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)
        self.head = nnx.Linear(16, num_classes, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.bn1(self.conv1(x)))
        x = nnx.relu(self.bn2(self.conv2(x)))
        return self.head(self.dropout(x.mean(axis=(1, 2))))


class LinenCNN(nn.Module):
    """NNXCNN written in Linen, with the same names and defaults."""

    num_classes: int

    @nn.compact
    def __call__(self, x, *, train):
        norm = functools.partial(nn.BatchNorm, use_running_average=not train)
        x = nn.relu(norm(name="bn1")(nn.Conv(8, (3, 3), name="conv1")(x)))
        x = nn.relu(norm(name="bn2")(nn.Conv(16, (3, 3), strides=2, name="conv2")(x)))
        x = nn.Dropout(0.0, deterministic=not train)(x.mean(axis=(1, 2)))
        return nn.Dense(self.num_classes, name="head")(x)


def _batches(n, seed=0):
    rng = np.random.default_rng(seed)
    return [
        {
            "image": rng.normal(1.0, 2.0, size=(16, *SHAPE)).astype(np.float32),
            "label": rng.integers(0, 3, 16).astype(np.int32),
        }
        for _ in range(n)
    ]


def _assert_close(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        # the same primitives on the same numbers; the tolerance only allows XLA to fuse and
        # order the float32 reductions of two separately compiled programs differently
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def nnx_state():
    """The NNX CNN's state, initialised once for the file (compiling an init costs seconds)."""
    model = from_nnx(NNXCNN, num_classes=3)
    return create_train_state(model, optax.adam(1e-2), jax.random.PRNGKey(0), SHAPE)


def test_nnx_and_its_linen_twin_train_to_the_same_parameters(nnx_state):
    ours = nnx_state
    assert jax.tree.map(jnp.shape, ours.batch_stats) == {
        "bn1": {"mean": (8,), "var": (8,)},
        "bn2": {"mean": (16,), "var": (16,)},
    }
    twin_model = LinenCNN(num_classes=3)
    images = jnp.zeros((1, *SHAPE))
    shapes = jax.eval_shape(lambda: twin_model.init(jax.random.PRNGKey(1), images, train=False))
    assert jax.tree.map(jnp.shape, shapes) == jax.tree.map(jnp.shape, ours.weights())
    # the twin starts from the NNX model's weights and statistics, with its own optimiser state
    twin = TrainState.create(
        apply_fn=twin_model.apply,
        params=ours.params,
        batch_stats=ours.batch_stats,
        tx=optax.adam(1e-2),
        rng=ours.rng,
    )
    step, evaluate = jax.jit(train_step), jax.jit(eval_step)
    batches = _batches(6)
    for batch in batches[:5]:
        ours, ours_sums = step(ours, batch)
        twin, twin_sums = step(twin, batch)
        _assert_close(ours_sums, twin_sums)
    assert not np.allclose(ours.batch_stats["bn1"]["var"], 1.0)  # statistics were updated
    _assert_close((ours.params, ours.batch_stats), (twin.params, twin.batch_stats))
    # evaluation uses the running statistics, which differ from the held-out batch's own
    _assert_close(evaluate(ours, batches[5]), evaluate(twin, batches[5]))


def test_dropout_draws_from_the_step_rng_and_evaluation_is_deterministic(nnx_state):
    model = from_nnx(NNXCNN, num_classes=3, dropout_rate=0.5)
    images = jnp.asarray(_batches(1)[0]["image"])
    rngs = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}
    shapes = jax.eval_shape(lambda: model.init(rngs, images, train=False))
    assert set(shapes) == {"params", "batch_stats"}  # no rng state or graph in the variables
    variables = nnx_state.weights()  # dropout has no weights: the same variables fit

    @jax.jit
    def train(seed):
        rngs = {"dropout": jax.random.PRNGKey(seed)}
        return model.apply(variables, images, train=True, rngs=rngs, mutable=["batch_stats"])

    (a, updates), (b, _), (c, _) = train(0), train(0), train(1)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert not np.allclose(updates["batch_stats"]["bn1"]["mean"], 0.0)
    evaluate = jax.jit(lambda x: model.apply(variables, x, train=False))
    np.testing.assert_array_equal(evaluate(images), evaluate(images))
    assert not np.allclose(evaluate(images), a)


class TakesTrain(nnx.Module):
    def __init__(self, num_classes, *, rngs):
        self.head = nnx.Linear(4, num_classes, rngs=rngs)

    def __call__(self, x, train):
        return self.head(x.mean(axis=(1, 2))) + (100.0 if train else 0.0)


def test_a_call_that_takes_train_gets_it():
    model = from_nnx(TakesTrain, num_classes=2)
    images = jnp.ones((3, 4, 4, 4))
    variables = {"params": {"head": {"kernel": jnp.ones((4, 2)), "bias": jnp.zeros(2)}}}
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images, train=False))
    assert jax.tree.map(jnp.shape, shapes) == jax.tree.map(jnp.shape, variables)
    apply = jax.jit(model.apply, static_argnames="train")
    difference = apply(variables, images, train=True) - apply(variables, images, train=False)
    np.testing.assert_allclose(difference, 100.0)


def test_the_config_checks_trace_a_registered_nnx_model(monkeypatch):
    from flaxcls.config import model_fits

    monkeypatch.setitem(MODELS, "nnx_cnn_fits", functools.partial(from_nnx, NNXCNN))
    assert model_fits("nnx_cnn_fits", SHAPE)  # its Dropout draws a key when built


def test_an_instance_is_refused():
    with pytest.raises(TypeError, match="class"):
        from_nnx(NNXCNN(3, rngs=nnx.Rngs(0)))


def test_checkpoint_restores_the_nnx_state(tmp_path, nnx_state):
    state, _ = jax.jit(train_step)(nnx_state, _batches(1)[0])
    checkpointer = Checkpointer(str(tmp_path))
    checkpointer.save(state)
    checkpointer.close()
    target = jax.tree.map(jnp.zeros_like, state)  # the same structure, other values
    restored = Checkpointer(str(tmp_path)).restore(target).state
    assert int(restored.step) == 1
    for x, y in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    batch = _batches(2)[1]
    evaluate = jax.jit(eval_step)
    np.testing.assert_array_equal(evaluate(restored, batch)["loss"], evaluate(state, batch)["loss"])


@pytest.mark.slow
def test_a_registered_nnx_model_trains_resumes_and_exports(tmp_path, monkeypatch):
    """run.py's path: registered by name, trained, restored from its checkpoint, exported to
    ONNX with parity against JAX."""
    from flaxcls.modes import export as export_lib
    from flaxcls.modes import train as train_lib
    from flaxcls.testing.toy import tiny_config, write_npz

    monkeypatch.setitem(MODELS, "nnx_cnn", functools.partial(from_nnx, NNXCNN))
    npz = write_npz(str(tmp_path), n_test=20)
    config = tiny_config(npz, **{"model.name": "nnx_cnn", "num_train_steps": 6})
    workdir = str(tmp_path / "run")
    train_lib.train_and_evaluate(config, workdir)
    result = export_lib.export_run(
        workdir, formats=("onnx",), checkpoint="latest", num_parity_images=20
    )
    figures = result["parity"]["onnx"]
    assert result["step"] == 6 and figures["images"] == 20
    assert figures["top1_agreement"] == 1.0 and figures["max_abs_prob_diff"] < 1e-5, figures


def test_an_nnx_instance_given_to_create_train_state_points_to_from_nnx():
    from flaxcls.errors import ContractError

    model = NNXCNN(10, rngs=nnx.Rngs(0))
    with pytest.raises(ContractError, match=r"NNXCNN is a Flax NNX module.*from_nnx\(NNXCNN"):
        create_train_state(model, optax.adam(1e-3), jax.random.PRNGKey(0), SHAPE)
    with pytest.raises(ContractError, match="not a Flax Linen module"):
        create_train_state(object(), optax.adam(1e-3), jax.random.PRNGKey(0), SHAPE)


def test_to_nnx_gives_an_nnx_module_that_predicts_as_flaxcls_does(nnx_state):
    from flaxcls.core.steps import predict
    from flaxcls.models import to_nnx

    batches = _batches(3)
    state = nnx_state
    step = jax.jit(train_step)  # no donation: the fixture's state stays usable
    for batch in batches[:2]:
        state, _ = step(state, batch)
    assert not np.allclose(state.batch_stats["bn1"]["mean"], 0.0)  # trained statistics
    images = jnp.asarray(batches[2]["image"])
    expected = predict(state, images)
    fresh = NNXCNN(num_classes=3, rngs=nnx.Rngs(7))
    fresh.eval()
    assert not np.allclose(fresh(images), expected)  # its own initial weights differ
    module = to_nnx(state, NNXCNN(num_classes=3, rngs=nnx.Rngs(7)))
    module.eval()
    np.testing.assert_allclose(module(images), expected, rtol=1e-5, atol=1e-5)
    module.train()  # and it goes on in NNX: a training call updates its statistics
    module(images)
    assert not np.allclose(module.bn1.mean[...], state.batch_stats["bn1"]["mean"])


def test_to_nnx_names_the_weights_that_do_not_fit(nnx_state):
    from flaxcls.models import to_nnx

    with pytest.raises(ValueError, match=r"head/kernel has shape \(16, 3\), the module \(16, 4\)"):
        to_nnx(nnx_state, NNXCNN(num_classes=4, rngs=nnx.Rngs(0)))
    variables = nnx_state.weights()
    del variables["params"]["conv1"]
    with pytest.raises(ValueError, match="missing conv1/bias"):
        to_nnx(variables, NNXCNN(num_classes=3, rngs=nnx.Rngs(0)))
