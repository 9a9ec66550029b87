"""Segmentation losses on logits (B, H, W, K) and targets in 0..1."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def bce(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Binary cross-entropy per channel, (K,)."""
    return optax.sigmoid_binary_cross_entropy(logits, targets).mean(axis=(0, 1, 2))


def soft_dice(logits: jax.Array, targets: jax.Array, smooth: float = 1.0) -> jax.Array:
    """1 - soft Dice per channel over the whole batch, (K,)."""
    probs = jax.nn.sigmoid(logits)
    inter = (probs * targets).sum(axis=(0, 1, 2))
    total = probs.sum(axis=(0, 1, 2)) + targets.sum(axis=(0, 1, 2))
    return 1.0 - (2.0 * inter + smooth) / (total + smooth)


def segmentation_loss(logits: jax.Array, targets: jax.Array, weights: jax.Array, dice) -> jax.Array:
    """Weighted sum over channels of BCE + dice x soft Dice (dice: 1 for
    bce_dice, 0 for BCE alone; a number, traced or not, so one compiled
    step serves both losses)."""
    per_channel = bce(logits, targets) + dice * soft_dice(logits, targets)
    return jnp.sum(per_channel * weights[: logits.shape[-1]])
