"""bfloat16 compute (float32 parameters, `dtype=jnp.bfloat16`) trains as float32 does.

A narrow ResNet built from ResNet-50's parts (3x3 stem with max pool, one bottleneck block
with a projection shortcut, BatchNorm) trains from the same initial weights on the same
batches twice with the product's `create_train_state` / `train_step`: once in float32, once
in bfloat16. bfloat16 keeps 8 significand bits (a relative rounding of up to 2^-8 = 0.4% per
value), and the runs differ only by that rounding, which batch means and window means
average down: on this data the windowed losses agree to about 0.2% (2 CPU cores, jax 0.10).
The tolerances are a few bfloat16 roundings (1.2% on the first step's loss, 3.1% on each
window of 25 steps), over ten times that gap, so they hold where convolution algorithms and
summation orders differ.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxcls import create_train_state, make_optimizer, train_step
from flaxcls.models.resnet import Bottleneck, ResNet

STEPS, BATCH, WINDOW, SIZE, CLASSES = 200, 16, 25, 16, 4
BF16_ROUNDING = 2.0**-8  # bfloat16's unit roundoff: 8 significand bits
FIRST_STEP_RTOL = 3 * BF16_ROUNDING  # 1.2%: one forward pass, nothing accumulated yet
WINDOW_RTOL = 8 * BF16_ROUNDING  # 3.1%: 200 steps of SGD on rounded gradients


def tiny_resnet(dtype) -> ResNet:
    return ResNet(
        stage_sizes=(1,),
        block_cls=Bottleneck,
        num_classes=CLASSES,
        num_filters=8,
        stem_kernel=3,
        stem_strides=1,
        dtype=dtype,
    )


def learnable_batches() -> tuple[np.ndarray, np.ndarray]:
    """STEPS fresh batches: noise plus a faint class-specific stripe pattern, so the loss falls
    steadily over the whole run instead of collapsing in the first steps."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, CLASSES, (STEPS, BATCH)).astype(np.int32)
    images = rng.normal(size=(STEPS, BATCH, SIZE, SIZE, 3)).astype(np.float32)
    y, x = np.mgrid[:SIZE, :SIZE]
    waves = [(1, 0), (0, 1), (1, 1), (2, 0)]
    patterns = np.stack([np.sin(2 * np.pi * (f * x + g * y) / SIZE) for f, g in waves])
    images += 0.2 * patterns[labels][..., None].astype(np.float32)
    return images, labels


def train(dtype, images: np.ndarray, labels: np.ndarray):
    """Per-step mean losses and the final state of STEPS training steps in `dtype`."""
    tx = make_optimizer("sgd", 0.02, momentum=0.9, nesterov=True, weight_decay=5e-4)
    init = functools.partial(create_train_state, tiny_resnet(dtype), tx)
    # Jitted as runs.init_state does: one compilation rather than one per initialiser op.
    state = jax.jit(lambda rng: init(rng, (SIZE, SIZE, 3)))(jax.random.PRNGKey(0))
    step = jax.jit(functools.partial(train_step, label_smoothing=0.1), donate_argnums=0)
    initial = jax.device_get(state.params)
    losses = []
    for i in range(STEPS):
        state, sums = step(state, {"image": images[i], "label": labels[i]})
        losses.append(sums["loss"] / sums["count"])
    return initial, np.asarray(jax.device_get(losses)), state


@jax.jit
def predict(state, images):
    return state.apply_fn(state.weights(), images, train=False)


@pytest.mark.slow
def test_bfloat16_loss_curve_tracks_float32():
    images, labels = learnable_batches()
    init32, loss32, state32 = train(jnp.float32, images, labels)
    init16, loss16, state16 = train(jnp.bfloat16, images, labels)

    # The same initial weights (parameters are float32 in both), so only rounding differs...
    for a, b in zip(jax.tree.leaves(init32), jax.tree.leaves(init16), strict=True):
        np.testing.assert_array_equal(a, b)
    # ...and the second run did compute in bfloat16, with float32 parameters throughout.
    forward = jax.make_jaxpr(functools.partial(state16.apply_fn, train=False))
    jaxpr = str(forward(state16.weights(), images[0]))
    assert "conv_general_dilated" in jaxpr and "bf16" in jaxpr
    for tree in (state16.params, state16.batch_stats, state16.opt_state):
        assert all(x.dtype != jnp.bfloat16 for x in jax.tree.leaves(tree))

    # Step 0 differs only by one forward pass of rounding.
    np.testing.assert_allclose(loss16[0], loss32[0], rtol=FIRST_STEP_RTOL)
    windows32 = loss32.reshape(-1, WINDOW).mean(axis=1)
    windows16 = loss16.reshape(-1, WINDOW).mean(axis=1)
    # Both learn: the last window well below the first (chance is log(4) = 1.39).
    for windows in (windows32, windows16):
        assert windows[-1] < 0.85 * windows[0], windows
    np.testing.assert_allclose(windows16, windows32, rtol=WINDOW_RTOL)
    # The final loss, and the final weights' predictions, are those of float32.
    np.testing.assert_allclose(loss16[-WINDOW:].mean(), loss32[-WINDOW:].mean(), rtol=WINDOW_RTOL)
    recent = images[-4:].reshape(-1, SIZE, SIZE, 3)
    logits32, logits16 = (predict(state, recent) for state in (state32, state16))
    agree = np.mean(np.argmax(logits32, -1) == np.argmax(logits16, -1))
    assert agree >= 0.9, agree
