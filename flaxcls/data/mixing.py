"""Batch augmentations that run inside the training step, on normalised float images:
mixup, cutmix and random erasing (timm's defaults), all pure functions of an rng key.

Mixing returns the partner labels and the weight of each example's own label instead of soft
targets, so the loss needs no class count: cross-entropy is linear in the targets.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flaxcls.data.contract import Batch


def _box_mask(rng: jax.Array, shape: tuple[int, int], area_fraction: jax.Array) -> jax.Array:
    """An (H, W) mask, 1 inside one box of about `area_fraction` of the image, centre uniform and
    clipped at the borders (as in the CutMix paper)."""
    h, w = shape
    cy_rng, cx_rng = jax.random.split(rng)
    cut = jnp.sqrt(area_fraction)
    cy = jax.random.uniform(cy_rng) * h
    cx = jax.random.uniform(cx_rng) * w
    top, bottom = jnp.clip(cy - cut * h / 2, 0, h), jnp.clip(cy + cut * h / 2, 0, h)
    left, right = jnp.clip(cx - cut * w / 2, 0, w), jnp.clip(cx + cut * w / 2, 0, w)
    rows = jnp.arange(h)[:, None] + 0.5
    cols = jnp.arange(w)[None, :] + 0.5
    return ((rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)).astype(jnp.float32)


def mix_batch(
    rng: jax.Array,
    batch: Batch,
    *,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
    prob: float = 1.0,
    switch_prob: float = 0.5,
) -> Batch:
    """Mixes each example with the batch reversed, timm's `Mixup(mode='batch')`.

    With both alphas set, cutmix is chosen with `switch_prob`. With probability `1 - prob` the
    batch passes unmixed. Adds `mix_label` (the partner's label) and `mix_weight` (the weight
    of the example's own label, per example) to the batch.
    """
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return batch
    apply_rng, switch_rng, lam_rng, box_rng = jax.random.split(rng, 4)
    images = batch["image"]
    partner = images[::-1]
    use_cutmix = jnp.asarray(cutmix_alpha > 0 and mixup_alpha <= 0)
    if mixup_alpha > 0 and cutmix_alpha > 0:
        use_cutmix = jax.random.bernoulli(switch_rng, switch_prob)
    alpha = jnp.where(use_cutmix, max(cutmix_alpha, 1e-3), max(mixup_alpha, 1e-3))
    lam = jax.random.beta(lam_rng, alpha, alpha)
    apply = jax.random.bernoulli(apply_rng, prob)
    box = _box_mask(box_rng, images.shape[1:3], 1.0 - lam) * apply
    # cutmix weighs the labels by the area actually pasted (the box may be clipped)
    lam = jnp.where(use_cutmix, 1.0 - box.mean(), jnp.where(apply, lam, 1.0))
    pixel_weight = jnp.where(use_cutmix, 1.0 - box[None, :, :, None], lam)
    mixed = pixel_weight * images + (1.0 - pixel_weight) * partner
    weight = jnp.full(batch["label"].shape, lam, jnp.float32)
    return batch | {
        "image": mixed.astype(images.dtype),
        "mix_label": batch["label"][::-1],
        "mix_weight": weight,
    }


def random_erasing(
    rng: jax.Array,
    images: jax.Array,
    *,
    prob: float,
    min_area: float = 0.02,
    max_area: float = 1 / 3,
    min_aspect: float = 0.3,
) -> jax.Array:
    """Replaces one random box per image, with probability `prob`, by standard normal noise
    (timm's `RandomErasing(mode='pixel')` on normalised images)."""
    if prob <= 0:
        return images
    n, h, w, c = images.shape
    apply_rng, area_rng, aspect_rng, top_rng, left_rng, noise_rng = jax.random.split(rng, 6)
    area = jax.random.uniform(area_rng, (n,), minval=min_area, maxval=max_area) * h * w
    log_aspect = jax.random.uniform(
        aspect_rng, (n,), minval=jnp.log(min_aspect), maxval=-jnp.log(min_aspect)
    )
    aspect = jnp.exp(log_aspect)
    box_h = jnp.clip(jnp.round(jnp.sqrt(area * aspect)), 1, h)
    box_w = jnp.clip(jnp.round(jnp.sqrt(area / aspect)), 1, w)
    top = jnp.floor(jax.random.uniform(top_rng, (n,)) * (h - box_h + 1))
    left = jnp.floor(jax.random.uniform(left_rng, (n,)) * (w - box_w + 1))
    rows = jnp.arange(h)[None, :, None]
    cols = jnp.arange(w)[None, None, :]
    inside = (
        (rows >= top[:, None, None])
        & (rows < (top + box_h)[:, None, None])
        & (cols >= left[:, None, None])
        & (cols < (left + box_w)[:, None, None])
    )
    erase = inside & jax.random.bernoulli(apply_rng, prob, (n,))[:, None, None]
    noise = jax.random.normal(noise_rng, images.shape, images.dtype)
    return jnp.where(erase[..., None], noise, images)
