"""check_config: every number of the config against its range, in one line, before anything is
loaded or compiled; and models against images too small for them."""

import glob
import importlib.util
import math
import os

import pytest

from configs import default
from flaxcls.config import (
    RULES,
    Each,
    Number,
    OneOf,
    check_config,
    check_model_input,
    model_fits,
)
from flaxcls.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(
    p for p in glob.glob(os.path.join(ROOT, "configs", "*.py")) if not p.endswith("__init__.py")
)


def _load(path: str):
    spec = importlib.util.spec_from_file_location("config_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def _numeric_keys(tree: dict, prefix: str = ""):
    """Dotted keys of the numbers (and lists of numbers) in a nested dict."""
    for name, value in tree.items():
        if isinstance(value, dict):
            yield from _numeric_keys(value, f"{prefix}{name}.")
        elif isinstance(value, (int, float, tuple, list)) and not isinstance(value, bool):
            yield f"{prefix}{name}"


def _config(**overrides):
    config = default.get_config()
    config.update_from_flattened_dict(overrides)
    return config


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_number_of_a_shipped_config_has_a_rule(path):
    missing = sorted(set(_numeric_keys(_load(path).to_dict())) - set(RULES))
    assert not missing, f"add rules to flaxcls/config.RULES for {missing}"


def test_every_rule_names_a_key_of_the_default_config():
    flat = default.get_config().to_dict()
    stale = [key for key in RULES if not _has_key(flat, key)]
    assert not stale


def _has_key(tree: dict, key: str) -> bool:
    head, _, rest = key.partition(".")
    return head in tree and (not rest or _has_key(tree[head], rest))


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_shipped_configs_pass(path):
    check_config(_load(path))


BAD = [
    ("num_epochs", -1.0, "> 0"),
    ("num_epochs", math.nan, "a finite number > 0"),
    ("num_epochs", math.inf, "a finite number > 0"),
    ("num_train_steps", 0, "-1 (train for num_epochs) or a whole number >= 1"),
    ("num_train_steps", -2, "-1 (train for num_epochs) or a whole number >= 1"),
    ("batch_size", 0, "a whole number >= 1"),
    ("eval_batch_size", -8, "a whole number >= 1"),
    ("steps_per_dispatch", -1, "a whole number >= 0"),
    ("optimizer.learning_rate", 0.0, "> 0"),
    ("optimizer.learning_rate", -0.1, "> 0"),
    ("optimizer.momentum", 1.0, "in [0, 1)"),
    ("optimizer.b1", -0.1, "in [0, 1)"),
    ("optimizer.b2", 1.0, "in [0, 1)"),
    ("optimizer.eps", 0.0, "> 0"),
    ("optimizer.weight_decay", -1e-4, ">= 0"),
    ("optimizer.grad_clip_norm", -1.0, ">= 0"),
    ("optimizer.backbone_lr_factor", -0.5, ">= 0"),
    ("model.dropout_rate", 1.0, "in [0, 1)"),
    ("data.crop_padding", -1, "a whole number >= 0"),
    ("data.erasing_prob", 1.5, "in [0, 1]"),
    ("data.mix_prob", -0.1, "in [0, 1]"),
    ("data.mixup_alpha", -1.0, ">= 0"),
    ("data.cutmix_alpha", math.nan, "a finite number >= 0"),
    ("data.validation_fraction", 1.0, "in [0, 1)"),
    ("data.test_fraction", -0.1, "in [0, 1)"),
    ("data.image_size", 0, "a whole number >= 1"),
    ("data.eval_resize", 0, "a whole number >= 1"),
    ("data.shuffle_buffer", 0, "a whole number >= 1"),
    ("data.num_classes", -1, "a whole number >= 0"),
    ("data.channels", 2, "one of 0, 1, 3"),
    ("data.split_seed", -1, "a whole number in [0, 2**63)"),
    ("data.randaugment_ops", -1, "a whole number >= 0"),
    ("data.randaugment_magnitude", 11.0, "in [0, 10]"),
    ("mesh.fsdp_min_size", -1, "a whole number >= 0"),
    ("seed", -1, "a whole number in [0, 2**63)"),
    ("schedule.warmup_epochs", -1.0, ">= 0"),
    ("schedule.decay_epochs", (30.0, -1.0), "a list, each item >= 0"),
    ("schedule.decay_factor", 0.0, "> 0"),
    ("schedule.end_factor", 1.5, "in [0, 1]"),
    ("label_smoothing", 1.0, "in [0, 1)"),
    ("ema_decay", 1.0, "in [0, 1)"),
    ("eval_every_epochs", 0.0, "> 0"),
    ("checkpoint_every_steps", -1, "a whole number >= 0"),
    ("keep_checkpoints", 0, "a whole number >= 1"),
    ("log_every_steps", -1, "a whole number >= 0"),
    ("early_stopping_patience", -1, "a whole number >= 0"),
    ("max_consecutive_skips", -1, "a whole number >= 0"),
    ("divergence_factor", 0.5, "0 (no divergence rail) or > 1"),
    ("profile_steps", -1, "a whole number >= 0"),
    ("on_save_error", "retry", "one of stop, continue"),
    ("nonfinite", "ignore", "one of stop, skip"),
    ("best_metric", "val_f1", "one of val_accuracy, val_top5_accuracy, val_loss"),
]


@pytest.mark.parametrize("key, value, allowed", BAD, ids=[f"{k}={v!r}" for k, v, _ in BAD])
def test_a_value_out_of_range_names_key_value_and_range(key, value, allowed):
    with pytest.raises(ConfigError) as raised:
        check_config(_config(**{key: value}))
    message = str(raised.value)
    assert message.startswith(f"{key}={value!r} must be {allowed}"), message
    assert "\n" not in message


GOOD = [
    ("num_train_steps", -1),
    ("num_train_steps", 1),
    ("log_every_steps", 0),
    ("checkpoint_every_steps", 0),
    ("divergence_factor", 0.0),
    ("ema_decay", 0.0),
    ("data.validation_fraction", 0.0),
    ("data.channels", 1),
    ("optimizer.momentum", 0.0),
    ("schedule.decay_epochs", (30.0, 60.0)),
    ("num_epochs", 0.5),
]


@pytest.mark.parametrize("key, value", GOOD, ids=[f"{k}={v!r}" for k, v in GOOD])
def test_edge_values_that_mean_something_pass(key, value):
    check_config(_config(**{key: value}))


def test_every_bad_value_is_named_in_one_line():
    with pytest.raises(ConfigError) as raised:
        check_config(_config(num_epochs=-1.0, batch_size=0, **{"optimizer.b2": 1.5}))
    message = str(raised.value)
    for part in ("num_epochs=-1.0", "batch_size=0", "optimizer.b2=1.5"):
        assert part in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "rule, value",
    [
        (Number(1, whole=True), 2.5),
        (Number(1, whole=True), True),
        (Number(0.0), "1"),
        (Number(0.0), None),
        (OneOf(("stop", "skip")), True),
        (Each(Number(0.0)), 3.0),
    ],
)
def test_values_of_the_wrong_type_are_refused(rule, value):
    assert rule.requirement(value) is not None


def test_held_out_fractions_must_leave_training_images():
    with pytest.raises(ConfigError, match="hold out 110% of the images"):
        check_config(_config(**{"data.validation_fraction": 0.6, "data.test_fraction": 0.5}))


def test_streaming_eval_resize_must_cover_the_crop():
    streaming = {"data.dataset": "imagenet2012", "model.name": "resnet18"}
    with pytest.raises(ConfigError, match="data.eval_resize=256 must be at least"):
        check_config(_config(**streaming, **{"data.image_size": 300}))
    # A folder dataset resizes to image_size and never reads eval_resize.
    check_config(_config(**{"data.dataset": "folder", "data.image_size": 300}))


@pytest.mark.parametrize(
    "overrides, needs",
    [
        # seed_cnn: a ZeroDivisionError in its Dense initializer
        (
            {"data.dataset": "folder", "data.image_size": 4},
            "'seed_cnn' needs images of at least 18x18",
        ),
        # fast_cnn: a max over an empty feature map
        (
            {"data.dataset": "imagenet2012", "data.image_size": 8, "model.name": "fast_cnn"},
            "'fast_cnn' needs images of at least 9x9",
        ),
    ],
)
def test_an_image_too_small_for_the_model_names_the_minimum(overrides, needs):
    with pytest.raises(ConfigError) as raised:
        check_config(_config(**overrides))
    message = str(raised.value)
    side = overrides["data.image_size"]
    assert needs in message and f"not {side}x{side} (data.image_size={side})" in message


def test_small_images_pass_where_the_model_takes_them():
    check_config(_config(**{"data.dataset": "folder", "data.image_size": 4, "model.name": "mlp"}))
    check_config(
        _config(**{"data.dataset": "folder", "data.image_size": 4, "model.name": "cifar_resnet18"})
    )


def test_an_empty_feature_map_counts_as_too_small():
    """inception_v3's valid convolutions leave nothing of a 28x28 image: NaN logits, no error."""
    assert not model_fits("inception_v3", (28, 28, 1))
    assert model_fits("inception_v3", (75, 75, 1))


def test_loaded_arrays_are_checked_by_their_shape():
    with pytest.raises(ConfigError, match=r"at least 18x18 pixels, not 8x12 \(toy.npz\)"):
        check_model_input("seed_cnn", (8, 12, 1), "toy.npz")
    check_model_input("seed_cnn", (28, 28, 1), "toy.npz")


def test_arrays_too_small_for_the_model_stop_before_anything_is_built(tmp_path):
    from flaxcls.core import sharding
    from flaxcls.modes import build as runs
    from flaxcls.testing.toy import tiny_config, write_npz

    npz = write_npz(str(tmp_path), shape=(16, 16, 1), num_classes=2)
    config = tiny_config(npz)  # seed_cnn needs 18x18
    with pytest.raises(ConfigError, match=r"needs images of at least 18x18 pixels, not 16x16"):
        runs.build_run(config, sharding.make_mesh())
