"""Trains a small CNN of its own on Fashion-MNIST through flaxcls's plain functions, no config.

    python examples/train_fashion_mnist.py [--steps 400] [--batch-size 128] [--data fashion_mnist]

`--data` also takes an image folder or an .npz file. Measured once at the defaults on the
real Fashion-MNIST, 2 CPU cores: 87.78% test accuracy (10,000 images); 3 min 15 s wall on cores
shared with other jobs (load average 6.5), 72 s user + 31 s system CPU time, so about a minute
of wall time on 2 idle cores. 34 lines of code, blank lines and this docstring aside.
"""

import argparse

import flax.linen as nn
import jax

import flaxcls
from flaxcls.core.metrics import add_sums, summarize
from flaxcls.core.optim import make_optimizer
from flaxcls.data import api


class SmallCNN(nn.Module):
    num_classes: int

    @nn.compact
    def __call__(self, x, train: bool):
        for width in (16, 32):
            x = nn.Conv(width, (3, 3), use_bias=False)(x)
            x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = nn.Dropout(0.2, deterministic=not train)(x.reshape(x.shape[0], -1))
        return nn.Dense(self.num_classes)(x)


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--data", default="fashion_mnist")
parser.add_argument("--steps", type=int, default=400)
parser.add_argument("--batch-size", type=int, default=128)
args = parser.parse_args()
info = api.dataset_info(args.data)
tx = make_optimizer("adam", 3e-3, schedule="cosine", total_steps=args.steps)
model = SmallCNN(info.num_classes)
state = flaxcls.create_train_state(model, tx, jax.random.PRNGKey(0), info.image_shape)
train_step, eval_step = jax.jit(flaxcls.train_step, donate_argnums=0), jax.jit(flaxcls.eval_step)
for batch in api.batches(args.data, batch_size=args.batch_size, steps=args.steps):
    state, _ = train_step(state, batch)
sums = None  # masked sums over the padded test batches, divided once
for batch in api.eval_batches(args.data, "test", batch_size=1000):
    sums = add_sums(sums, eval_step(state, batch))
result = summarize(sums)
print(f"test accuracy {result['accuracy']:.2%} on {result['num_examples']} images")
