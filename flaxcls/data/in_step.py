"""The augmentations that run inside the compiled training step, built from the data config:
RandAugment, random erasing, then mixup / cutmix. They take an rng key and a batch of
normalised float images, so the host and on-device input paths share them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from flaxcls.data.contract import Batch, Normalizer
from flaxcls.data.mixing import mix_batch, random_erasing
from flaxcls.data.randaugment import rand_augment

StepAugment = Callable[[jax.Array, Batch], Batch]


def build_step_augment(data_config: Any, normalizer: Normalizer) -> StepAugment | None:
    """The in-step augmentation `config.data` asks for, or None when it asks for none."""
    cfg = data_config
    if not (
        cfg.randaugment_ops > 0
        or cfg.erasing_prob > 0
        or cfg.mixup_alpha > 0
        or cfg.cutmix_alpha > 0
    ):
        return None
    scale, shift = jnp.asarray(normalizer.scale), jnp.asarray(normalizer.shift)

    def augment(rng: jax.Array, batch: Batch) -> Batch:
        ra_rng, erase_rng, mix_rng = jax.random.split(rng, 3)
        images = batch["image"]
        if cfg.randaugment_ops > 0:
            # Back to the uint8 levels, rounded, so posterize and solarize thresholds do not
            # hinge on the last bit of the normalisation (host numpy vs device XLA).
            pixels = jnp.round((images - shift) / scale) / 255.0
            pixels = rand_augment(ra_rng, pixels, cfg.randaugment_ops, cfg.randaugment_magnitude)
            images = pixels * (scale * 255.0) + shift
        images = random_erasing(erase_rng, images, prob=cfg.erasing_prob)
        batch = batch | {"image": images}
        return mix_batch(
            mix_rng,
            batch,
            mixup_alpha=cfg.mixup_alpha,
            cutmix_alpha=cfg.cutmix_alpha,
            prob=cfg.mix_prob,
        )

    return augment
