"""Training targets built from an instance label image.

The body channel is the report's binary mask. The border channel marks
where touching nuclei meet (the pixels within reach of two different
nuclei), so a model that predicts it can split them, as the DSB2018
winners did.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Nuclei closer than this (px, a square window's side) share a border.
BORDER_WINDOW = 5


def body_target(labels: np.ndarray) -> np.ndarray:
    """(H, W) float32: 1 on any nucleus."""
    return (labels > 0).astype(np.float32)


def border_target(labels: np.ndarray, window: int = BORDER_WINDOW) -> np.ndarray:
    """(H, W) float32: 1 where a window x window neighbourhood holds two
    different nuclei; this covers the contact and the gap between them."""
    labels = labels.astype(np.float32)  # exact for ids below 2**24
    kernel = np.ones((window, window), np.uint8)
    highest = cv2.dilate(labels, kernel)
    # Background must not win the minimum: lift it above every id.
    lowest = cv2.erode(np.where(labels > 0, labels, np.float32(2**24)), kernel)
    return ((lowest < 2**24) & (highest != lowest)).astype(np.float32)


def targets(labels: np.ndarray, border: bool) -> np.ndarray:
    """(H, W, 1) body, or (H, W, 2) body and border."""
    channels = [body_target(labels)] + ([border_target(labels)] if border else [])
    return np.stack(channels, axis=-1)
