import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flaxcls import classification_sums, create_train_state, cross_entropy, eval_step, train_step
from flaxcls.metrics import add_sums, summarize


class TinyNet(nn.Module):
    """A small BatchNorm + dropout model, so the step's mutable state is exercised."""

    num_classes: int = 4

    @nn.compact
    def __call__(self, x, *, train: bool):
        x = nn.Conv(8, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = nn.relu(x).mean(axis=(1, 2))
        x = nn.Dropout(0.1, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)


def _state(lr=1e-2):
    return create_train_state(TinyNet(), optax.adam(lr), jax.random.PRNGKey(0), (8, 8, 3))


def _batch(n=32, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    images = rng.normal(size=(n, 8, 8, 3))
    # A learnable signal: class k shifts channel k % 3, up for k < 3 and down for k = 3.
    images[np.arange(n), :, :, labels % 3] += np.where(labels < 3, 2.0, -2.0)[:, None, None]
    return {"image": jnp.asarray(images, jnp.float32), "label": jnp.asarray(labels, jnp.int32)}


def test_loss_falls_on_a_fixed_batch():
    state, batch = _state(), _batch()
    step = jax.jit(train_step)
    losses = []
    for _ in range(40):
        state, sums = step(state, batch)
        losses.append(float(sums["loss"] / sums["count"]))
    assert losses[-1] < 0.5 * losses[0]
    assert int(state.step) == 40
    # BatchNorm statistics moved away from their initial values.
    assert not np.allclose(state.batch_stats["BatchNorm_0"]["mean"], 0.0)


def test_train_step_dropout_rng_changes_with_step():
    state, batch = _state(lr=0.0), _batch()
    _, a = jax.jit(train_step)(state, batch)
    _, b = jax.jit(train_step)(state.replace(step=state.step + 1), batch)
    assert float(a["loss"]) != float(b["loss"])


def test_eval_sums_match_a_numpy_reference_with_padding():
    state = _state()
    n, batch_size = 53, 16  # the last batch is padded
    data = _batch(n, seed=1)
    logits = np.asarray(
        state.apply_fn(
            {"params": state.params, "batch_stats": state.batch_stats}, data["image"], train=False
        ),
        np.float64,
    )
    labels = np.asarray(data["label"])
    log_probs = logits - logits.max(1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(1, keepdims=True))
    ref_loss = -log_probs[np.arange(n), labels].mean()
    ref_acc = (logits.argmax(1) == labels).mean()
    ranks = (logits > logits[np.arange(n), labels][:, None]).sum(1)
    ref_top2 = (ranks < 2).mean()

    total = None
    step = jax.jit(eval_step)
    for start in range(0, n, batch_size):
        idx = np.arange(start, start + batch_size)
        mask = (idx < n).astype(np.float32)
        idx = np.where(idx < n, idx, 0)
        batch = {
            "image": data["image"][idx],
            "label": data["label"][idx],
            "mask": jnp.asarray(mask),
        }
        total = add_sums(total, jax.device_get(step(state, batch)))
    got = summarize(total)
    assert got["num_examples"] == n
    np.testing.assert_allclose(got["loss"], ref_loss, rtol=1e-5)
    np.testing.assert_allclose(got["accuracy"], ref_acc)
    # With 4 classes "top-5" covers every class; check the top-k rule itself with k=2 below.
    assert got["top5_accuracy"] == 1.0
    logits2 = jnp.asarray(logits, jnp.float32)
    sums = classification_sums(logits2[:, :4], data["label"], jnp.ones(n), jnp.zeros(n))
    assert float(sums["correct"]) == pytest.approx(ref_acc * n)
    del ref_top2


def test_topk_rule_against_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 200)
    sums = classification_sums(
        jnp.asarray(logits), jnp.asarray(labels), jnp.ones(200), jnp.zeros(200)
    )
    top5 = np.argsort(-logits, axis=1)[:, :5]
    expected = np.mean([labels[i] in top5[i] for i in range(200)])
    assert float(sums["correct_top5"]) / 200 == pytest.approx(expected)


def test_label_smoothing_cross_entropy():
    logits = jnp.array([[2.0, 0.0, -1.0]])
    labels = jnp.array([0])
    p = np.exp([2.0, 0.0, -1.0]) / np.exp([2.0, 0.0, -1.0]).sum()
    eps = 0.3
    target = np.array([1 - eps + eps / 3, eps / 3, eps / 3])
    expected = -(target * np.log(p)).sum()
    np.testing.assert_allclose(cross_entropy(logits, labels, eps)[0], expected, rtol=1e-6)


def test_class_weights_weigh_each_example_by_its_label():
    from flaxcls import get_model

    model = get_model("seed_cnn", num_classes=3)
    state = create_train_state(model, optax.sgd(1.0), jax.random.PRNGKey(0), (28, 28, 1))
    rng = np.random.default_rng(0)
    batch = {
        "image": jnp.asarray(rng.normal(size=(6, 28, 28, 1)), jnp.float32),
        "label": jnp.asarray([0, 0, 0, 0, 1, 2], jnp.int32),
    }
    weights = jnp.asarray([0.5, 2.0, 3.0])
    plain, _ = train_step(state, batch)
    ones, _ = train_step(state, batch, class_weights=jnp.ones(3))
    weighted, sums = train_step(state, batch, class_weights=weights)
    for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(ones.params), strict=True):
        np.testing.assert_array_equal(a, b)

    # reference: the gradient of the hand-weighted mean loss
    def loss(params):
        logits = model.apply({"params": params}, batch["image"], train=True)
        per = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
        return jnp.sum(per * weights[batch["label"]]) / 6

    grads = jax.grad(loss)(state.params)
    expected = jax.tree.map(lambda p, g: p - g, state.params, grads)
    for a, b in zip(jax.tree.leaves(weighted.params), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert float(sums["count"]) == 6
