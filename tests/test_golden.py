"""A short real run's numbers, pinned: a silent change of numerics (initialisation, data order,
normalisation, augmentation, the optimiser, the loss) fails here even where every comparison
of two code paths still agrees.

The golden values were made by this test's own run (seed_cnn, the tiny config on
`write_npz`'s generated data, 20 Adam steps, float32, CPU) with jax 0.10.2 / flax 0.12.8.
Regenerate them (print `losses` and `test`) only for a change that is meant to alter training
numerics, and say so in the commit.

Tolerance: the same run on 2 devices instead of 1 (another reduction order) moved the logged
losses by at most 1e-7 relative; other CPUs (vector widths) and XLA versions may round
differently, so the bound is 1e-3 relative, while a change of seed, learning rate or
normalisation moves the first logged loss by percents.
"""

import json
import os

import numpy as np

from flaxcls.modes import train as train_lib
from flaxcls.testing.toy import tiny_config, write_npz

GOLDEN_TRAIN_LOSSES = [0.763753280, 0.226851210, 0.0261421556, 0.00195347975, 0.000268024654]
GOLDEN_TEST_LOSS = 0.000129535971
RTOL = 1e-3


def test_a_short_run_keeps_its_loss_curve(tmp_path):
    settings = {"num_train_steps": 20, "log_every_steps": 4, "eval_every_epochs": 100.0}
    config = tiny_config(write_npz(str(tmp_path)), **settings)
    workdir = str(tmp_path / "run")
    test = train_lib.train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        losses = [json.loads(line)["train_loss"] for line in f if "train_loss" in line]
    np.testing.assert_allclose(losses, GOLDEN_TRAIN_LOSSES, rtol=RTOL)
    np.testing.assert_allclose(test["loss"], GOLDEN_TEST_LOSS, rtol=RTOL)
    assert test["accuracy"] == 1.0 and test["step"] == 20
