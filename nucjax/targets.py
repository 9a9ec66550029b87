"""Training targets built from instance label images, on the device.

The body channel is the report's binary mask. The border channel marks
where touching nuclei meet (the pixels within reach of two different
nuclei), so a model that predicts it can split them, as the DSB2018
winners did. Built inside the jitted train step from each augmented
crop's labels (nucjax.batches), so they are exact for the crop as seen.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

#: Nuclei closer than this (px, a square window's side) share a border.
BORDER_WINDOW = 5
#: Above every label id: background lifted here never wins a minimum.
_ABOVE_IDS = jnp.iinfo(jnp.int32).max


def body_target(labels: jax.Array) -> jax.Array:
    """(..., H, W) labels -> float32 (..., H, W): 1 on any nucleus."""
    return (jnp.asarray(labels) > 0).astype(jnp.float32)


def _window_reduce(array: jax.Array, window: int, init, op) -> jax.Array:
    """A window x window max or min over the last two axes; pixels past the
    edge are left out (OpenCV's dilate and erode do the same)."""
    dims = (1,) * (array.ndim - 2) + (window, window)
    return jax.lax.reduce_window(array, init, op, dims, (1,) * array.ndim, "SAME")


def border_target(labels: jax.Array, window: int = BORDER_WINDOW) -> jax.Array:
    """(..., H, W) labels -> float32 (..., H, W): 1 where a window x window
    neighbourhood holds two different nuclei; this covers the contact and
    the gap between them."""
    labels = jnp.asarray(labels).astype(jnp.int32)
    highest = _window_reduce(labels, window, jnp.int32(jnp.iinfo(jnp.int32).min), jax.lax.max)
    lowest = _window_reduce(jnp.where(labels > 0, labels, _ABOVE_IDS), window, _ABOVE_IDS, jax.lax.min)
    return ((lowest < _ABOVE_IDS) & (highest != lowest)).astype(jnp.float32)


def targets(labels: jax.Array, border: bool) -> jax.Array:
    """(..., H, W) labels -> (..., H, W, 1) body, or (..., H, W, 2) body and border."""
    channels = [body_target(labels)] + ([border_target(labels)] if border else [])
    return jnp.stack(channels, axis=-1)
