import jax
import jax.numpy as jnp
import numpy as np
import optax

from flaxcls import classification_sums, create_train_state, cross_entropy, eval_step, train_step
from flaxcls.core.metrics import add_sums, summarize
from tests.helpers import TinyNet, tiny_batch


def _state(lr=1e-2):
    return create_train_state(TinyNet(), optax.adam(lr), jax.random.PRNGKey(0), (8, 8, 3))


def test_loss_falls_on_a_fixed_batch():
    state, batch = _state(), tiny_batch()
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
    state, batch = _state(lr=0.0), tiny_batch()
    _, a = jax.jit(train_step)(state, batch)
    _, b = jax.jit(train_step)(state.replace(step=state.step + 1), batch)
    assert float(a["loss"]) != float(b["loss"])


def test_eval_sums_match_a_numpy_reference_with_padding():
    state = _state()
    n, batch_size = 53, 16  # the last batch is padded
    data = tiny_batch(n, seed=1)
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
    # With 4 classes "top-5" covers every class (k = min(5, classes)); the rule itself is
    # checked on 10 classes in the next test.
    assert got["top5_accuracy"] == 1.0


def test_top5_hits_are_labels_scoring_at_least_the_fifth_highest_logit():
    """On 10 classes, against numpy: a label is a top-5 hit when its logit is at least the
    row's fifth highest (so a tie at fifth place counts), top-1 when it is the largest; masked
    rows count for nothing."""
    rng = np.random.default_rng(0)
    n = 200
    logits = rng.normal(size=(n, 10)).astype(np.float32)
    labels = rng.integers(0, 10, n)
    # Ties, where argsort would pick a side: in rows 0-19 the label equals the fifth highest
    # logit of the other classes (4 score higher: a hit), in rows 20-39 their sixth (a miss).
    for i in range(40):
        others = np.sort(np.delete(logits[i], labels[i]))[::-1]
        logits[i, labels[i]] = others[4] if i < 20 else others[5]
    mask = (rng.random(n) < 0.8).astype(np.float32)
    sums = classification_sums(
        jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(mask), jnp.zeros(n)
    )
    label_logit = logits[np.arange(n), labels]
    top5 = label_logit >= np.sort(logits, axis=1)[:, -5]
    top1 = label_logit == logits.max(axis=1)
    assert top5[:20].all() and not top5[20:40].any() and top5.mean() > 0.4
    assert float(sums["correct_top5"]) == np.sum(top5 * mask)
    assert float(sums["correct"]) == np.sum(top1 * mask)
    assert float(sums["count"]) == mask.sum()


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
